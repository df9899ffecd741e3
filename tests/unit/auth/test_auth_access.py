"""Access control without a transport: perimeter, authentication, authorization."""

from __future__ import annotations

from pathlib import Path

import pytest

from infershield.auth.access import (
    AccessControl,
    Identity,
    Perimeter,
    authorize,
    bearer_key,
    peer_ip,
    required_role,
)
from infershield.auth.keys import create_key, revoke_key
from infershield.config import AuthConfig, Config, ServerConfig
from infershield.errors import AccessDenied, Unauthenticated

PEER = "ipv4:127.0.0.1:50000"


@pytest.fixture
def keyed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[Config, dict[str, str]]:
    monkeypatch.delenv("INFERSHIELD_KEYS_SECRET", raising=False)
    auth = AuthConfig(keys_file=str(tmp_path / "keys.json"))
    keys = {
        "user": create_key(auth, tenant="acme", roles=["infer"], models=["echo"])[1],
        "admin": create_key(auth, tenant="ops", roles=["infer", "admin"], models=["*"])[1],
    }
    create_key(auth, tenant="certco", roles=["scan"], models=["*"], subject="CN=certco")
    return Config(auth=auth), keys


@pytest.mark.parametrize(
    ("peer", "want"),
    [
        ("ipv4:10.1.2.3:5", "10.1.2.3"),
        ("ipv6:[::1]:443", "::1"),
        ("ipv6:[fe80::1%eth0]:443", "fe80::1"),
        ("unix:/tmp/sock", None),
        ("garbage", None),
    ],
)
def test_peer_ip(peer: str, want: str | None) -> None:
    got = peer_ip(peer)
    assert (str(got) if got is not None else None) == want


def test_perimeter_allow_list() -> None:
    p = Perimeter(["10.0.0.0/8", "::1"])
    assert p.check("ipv4:10.9.9.9:1") == "ipv4:10.9.9.9"
    assert p.check("ipv6:[::1]:1") == "ipv6:::1"
    for peer in ("ipv4:127.0.0.1:1", "unix:/x"):
        with pytest.raises(AccessDenied) as err:
            p.check(peer)
        assert err.value.what == "address"
    assert Perimeter().check("unix:/x") == "unix:/x"  # no list: everyone


def test_forwarded_for_counts_only_from_a_trusted_proxy() -> None:
    p = Perimeter(["10.0.0.0/8"], trusted_proxies=["127.0.0.1/32"])
    # Trusted proxy: the client is the right-most hop that is not a trusted proxy.
    assert p.check(PEER, ["192.168.0.1, 10.1.1.1"]) == "ipv4:10.1.1.1"
    assert p.check(PEER, ["10.1.1.1, 127.0.0.1"]) == "ipv4:10.1.1.1"
    with pytest.raises(AccessDenied):
        p.check(PEER, ["10.1.1.1, 192.168.0.1"])  # the real client is outside the list
    with pytest.raises(AccessDenied):
        p.check(PEER, ["not-an-address"])
    with pytest.raises(AccessDenied):
        p.check(PEER)  # the proxy itself is not in allow_cidrs
    # An untrusted peer's header is ignored: spoofing an allowed address does not help.
    untrusted = Perimeter(["10.0.0.0/8"], trusted_proxies=["192.168.0.0/16"])
    with pytest.raises(AccessDenied):
        untrusted.check(PEER, ["10.1.1.1"])


@pytest.mark.parametrize(
    ("metadata", "want"),
    [
        ((("authorization", "Bearer abc"),), "abc"),
        ((("authorization", "bearer   abc "),), "abc"),
        ((("x-api-key", "k1"),), "k1"),
        ((("authorization", "Basic abc"),), None),
        ((("authorization", "Bearer "),), None),
        ((), None),
    ],
)
def test_bearer_key(metadata: tuple[tuple[str, str], ...], want: str | None) -> None:
    assert bearer_key(metadata) == want


def test_the_model_a_request_names() -> None:
    from tritonclient.grpc import service_pb2 as pb

    from infershield.auth.access import request_model

    assert request_model("ModelInfer", pb.ModelInferRequest(model_name="m")) == "m"
    assert request_model("ModelMetadata", pb.ModelMetadataRequest(name="m")) == "m"
    assert request_model("RepositoryModelLoad", pb.RepositoryModelLoadRequest(model_name="m")) \
        == "m"
    # A shared-memory region's name is not a model.
    req = pb.SystemSharedMemoryRegisterRequest(name="region")
    assert request_model("SystemSharedMemoryRegister", req) == ""
    assert request_model("RepositoryIndex", pb.RepositoryIndexRequest()) == ""


def test_roles_of_methods() -> None:
    assert required_role("RepositoryModelLoad") == "admin"
    assert required_role("SystemSharedMemoryRegister") == "admin"
    assert required_role("LogSettings") == "admin"
    assert required_role("ModelInfer") == required_role("Infer") == "infer"
    assert required_role("Scan") == "scan"
    assert required_role("ModelMetadata") == required_role("RepositoryIndex") == ""


@pytest.mark.parametrize(
    ("method", "model", "allowed"),
    [
        ("ModelInfer", "echo", True),
        ("ModelInfer", "other", False),
        ("ModelMetadata", "other", False),
        ("RepositoryIndex", "", True),
        ("RepositoryModelUnload", "echo", False),
        ("Scan", "", False),
    ],
)
def test_authorize(method: str, model: str, allowed: bool) -> None:
    who = Identity("acme", frozenset({"infer"}), frozenset({"echo"}), "key", "k1")
    if allowed:
        authorize(who, method, model)
    else:
        with pytest.raises(AccessDenied):
            authorize(who, method, model)
    authorize(None, method, model)  # in-process use: unrestricted


def test_keys_authenticate_and_bad_keys_do_not(keyed: tuple[Config, dict[str, str]]) -> None:
    cfg, keys = keyed
    ac = AccessControl(cfg)
    m = "/inference.GRPCInferenceService/ModelInfer"
    who = ac.authenticate(m, PEER, [("authorization", f"Bearer {keys['user']}")])
    assert (who.tenant, who.source, who.caller, who.address) == ("acme", "key", "acme",
                                                                  "ipv4:127.0.0.1")
    assert who.models == frozenset({"echo"})
    assert ac.authenticate(m, PEER, [("x-api-key", keys["admin"])]).models is None
    for md in ([], [("x-api-key", keys["user"] + "x")], [("authorization", "Bearer nope")]):
        with pytest.raises(Unauthenticated):
            ac.authenticate(m, PEER, md)
    # A certificate entry names the tenant; an unknown certificate is not enough.
    assert ac.authenticate(m, PEER, [], cert_subject="CN=certco").tenant == "certco"
    with pytest.raises(Unauthenticated):
        ac.authenticate(m, PEER, [], cert_subject="CN=stranger")


def test_health_and_reflection_are_open_unless_restricted(
    keyed: tuple[Config, dict[str, str]],
) -> None:
    cfg, _ = keyed
    open_ = AccessControl(cfg)
    for m in (
        "/grpc.health.v1.Health/Check",
        "/inference.GRPCInferenceService/ServerLive",
        "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo",
    ):
        assert open_.authenticate(m, PEER, []).roles == frozenset()
    closed = AccessControl(Config(auth=AuthConfig(keys_file=cfg.auth.keys_file, public=())))
    with pytest.raises(Unauthenticated):
        closed.authenticate("/grpc.health.v1.Health/Check", PEER, [])
    # The perimeter applies to open services too.
    walled = AccessControl(
        Config(auth=cfg.auth, server=ServerConfig(allow_cidrs=("10.0.0.0/8",)))
    )
    with pytest.raises(AccessDenied):
        walled.authenticate("/grpc.health.v1.Health/Check", PEER, [])


def test_reload_drops_a_revoked_key_and_keeps_keys_on_a_bad_file(
    keyed: tuple[Config, dict[str, str]],
) -> None:
    cfg, keys = keyed
    ac = AccessControl(cfg)
    m = "/infershield.v1.Firewall/Infer"
    md = [("x-api-key", keys["user"])]
    assert ac.authenticate(m, PEER, md).tenant == "acme"
    assert not ac.changed()
    kid = keys["user"].split("_")[1]
    revoke_key(cfg.auth, kid)
    assert ac.changed()
    assert ac.authenticate(m, PEER, md).tenant == "acme"  # until reloaded
    assert ac.reload()
    with pytest.raises(Unauthenticated):
        ac.authenticate(m, PEER, md)
    Path(cfg.auth.keys_file).write_text("{not json")
    assert ac.changed()
    assert not ac.reload()  # rejected: the previous keys stay
    assert not ac.changed()  # and the same bad file is not retried on every poll
    assert ac.authenticate(m, PEER, [("x-api-key", keys["admin"])]).tenant == "ops"


def test_without_keys_callers_are_anonymous_with_the_configured_roles() -> None:
    ac = AccessControl(Config())
    who = ac.authenticate("/infershield.v1.Firewall/Infer", PEER, [])
    assert (who.tenant, who.caller, who.models) == ("anonymous", "ipv4:127.0.0.1", None)
    assert who.roles == frozenset({"infer", "scan"})
    with pytest.raises(AccessDenied):
        authorize(who, "RepositoryModelLoad", "echo")
    # With mTLS and no keys file, the certificate's CN names the caller.
    assert ac.authenticate("/x/y", PEER, [], cert_subject="CN=svc,O=Org").caller == "svc"


def test_api_keys_are_not_forwarded_upstream() -> None:
    from infershield.server.context import forwardable

    md = (("authorization", "Bearer isk_x"), ("x-api-key", "isk_y"), ("traceparent", "00-a"))
    assert forwardable(md, credentials=True) == (("traceparent", "00-a"),)
    # Without a keys file the firewall does not consume them: they reach Triton as before.
    assert len(forwardable(md)) == 3
