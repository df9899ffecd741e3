"""Access control end to end: API keys, roles, models, TLS/mTLS, the perimeter, disclosure.

Unmodified tritonclient against InferShield in front of the session's real Triton, which
counts the inferences it runs: refused calls must never reach it.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import pytest
import tritonclient.grpc as tg
from tritonclient.utils import InferenceServerException

from e2e.helpers import text_request
from firewall_support import INJECTION, TritonHandle, config_data, free_port, write_config
from infershield.auth.keys import create_key, revoke_key
from infershield.config import AuthConfig
from infershield.server.app import ServerThread
from tls_support import TestCA

pytestmark = pytest.mark.e2e


@dataclass
class Keys:
    auth: AuthConfig
    user: str  # tenant acme: infer on echo
    other_model: str  # tenant beta: infer on "other" only
    admin: str  # tenant ops: infer + admin on every model
    revoked: str  # revoked before the server started


@dataclass
class Shield:
    url: str
    server: ServerThread

    def reload_access(self) -> None:
        fut = asyncio.run_coroutine_threadsafe(self.server.app.reload_access(), self.server.loop)
        fut.result(10)


@pytest.fixture(scope="module")
def keys(tmp_path_factory: pytest.TempPathFactory) -> Keys:
    d = tmp_path_factory.mktemp("keys")
    auth = AuthConfig(keys_file=str(d / "keys.json"), secret_file=str(d / "secret"))

    def mk(tenant: str, roles: list[str], models: list[str]) -> tuple[Any, str]:
        return create_key(auth, tenant=tenant, roles=roles, models=models)

    revoked, revoked_key = mk("gone", ["infer"], ["*"])
    revoke_key(auth, revoked.id)
    create_key(auth, tenant="certco", roles=["infer"], models=["echo"], subject="CN=certco")
    return Keys(
        auth,
        user=mk("acme", ["infer"], ["echo"])[1],
        other_model=mk("beta", ["infer"], ["other"])[1],
        admin=mk("ops", ["infer", "admin"], ["*"])[1],
        revoked=revoked_key,
    )


@pytest.fixture(scope="module")
def start(
    triton: TritonHandle, keys: Keys, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Callable[..., Shield]]:
    """``start(**sections)``: an InferShield in front of Triton, with the module's keys file
    unless ``auth`` is given; stopped at the end of the module."""
    started: list[ServerThread] = []
    d = tmp_path_factory.mktemp("access")

    def run(upstream: str = "", **sections: Any) -> Shield:
        sections.setdefault(
            "auth", {"keys_file": keys.auth.keys_file, "secret_file": keys.auth.secret_file}
        )
        data = config_data(
            f"127.0.0.1:{free_port()}", upstream=upstream or f"triton://{triton.url}", **sections
        )
        st = ServerThread(write_config(d / f"c{len(started)}.yaml", data))
        port = st.start()
        started.append(st)
        return Shield(f"127.0.0.1:{port}", st)

    yield run
    for st in reversed(started):
        st.stop(grace=0.5)


@pytest.fixture(scope="module")
def audit_log(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("audit") / "audit.jsonl"


@pytest.fixture(scope="module")
def keyed(start: Callable[..., Shield], audit_log: Path) -> Shield:
    return start(audit={"path": str(audit_log)})


def settled(triton: TritonHandle, at_least: int = 0) -> int:
    """Triton's ``echo`` inference count once it stops moving (see ``settled_count``)."""
    return triton.settled_count("echo", at_least)


def _texts(rows: list[str]) -> tg.InferInput:
    inp = tg.InferInput("TEXT", [len(rows), 1], "BYTES")
    inp.set_data_from_numpy(np.array([[r.encode()] for r in rows], dtype=object))
    return inp


def bearer(key: str) -> dict[str, str]:
    return {"authorization": f"Bearer {key}"}


def status_of(call: Callable[[], Any]) -> str:
    try:
        call()
    except InferenceServerException as exc:
        return str(exc.status()).removeprefix("StatusCode.")
    return "OK"


def test_keys_decide_who_may_infer_and_refused_calls_never_reach_triton(
    triton: TritonHandle, keys: Keys, keyed: Shield
) -> None:
    before = settled(triton)
    refused = {
        "no key": ({}, "UNAUTHENTICATED"),
        "wrong key": (bearer(keys.user[:-2] + "xx"), "UNAUTHENTICATED"),
        "unknown key": ({"x-api-key": "isk_0123456789abcdef_nope"}, "UNAUTHENTICATED"),
        "revoked key": (bearer(keys.revoked), "UNAUTHENTICATED"),
        "model not allowed": (bearer(keys.other_model), "PERMISSION_DENIED"),
    }
    with tg.InferenceServerClient(keyed.url) as c:
        for name, (headers, code) in refused.items():
            for _ in range(3):
                got = status_of(lambda h=headers: c.infer("echo", [_texts(["hi"])], headers=h))
                assert got == code, name
        assert settled(triton) == before  # 0 of 15 refused calls reached it
        for headers in (bearer(keys.user), {"x-api-key": keys.user}):
            out = c.infer("echo", [_texts(["hi"])], headers=headers).as_numpy("OUTPUT")
            assert out.tolist() == [[b"echo: hi"]]
        assert settled(triton, before + 2) == before + 2
        # Metadata of a model outside the key's list is refused too.
        assert status_of(lambda: c.get_model_metadata("echo", headers=bearer(keys.other_model)))\
            == "PERMISSION_DENIED"
        # Health stays open without a key.
        assert c.is_server_live() and c.is_server_ready()


def test_health_is_open_unless_restricted(
    keys: Keys, keyed: Shield, start: Callable[..., Shield]
) -> None:
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    closed = start(
        auth={"keys_file": keys.auth.keys_file, "secret_file": keys.auth.secret_file, "public": []}
    )
    req = health_pb2.HealthCheckRequest()
    for shield, code in ((keyed, None), (closed, grpc.StatusCode.UNAUTHENTICATED)):
        with grpc.insecure_channel(shield.url) as ch:
            health = health_pb2_grpc.HealthStub(ch)
            # Check is unary; Watch streams with context.write(): both pass the access layer.
            watch = health.Watch
            calls = (health.Check, lambda r, timeout, w=watch: next(w(r, timeout=timeout)))
            for call in calls:
                if code is None:
                    assert call(req, timeout=5).status == health_pb2.HealthCheckResponse.SERVING
                else:
                    with pytest.raises(grpc.RpcError) as err:
                        call(req, timeout=5)
                    assert err.value.code() is code  # type: ignore[attr-defined]
    with tg.InferenceServerClient(closed.url) as c:
        assert status_of(lambda: c.is_server_live()) == "UNAUTHENTICATED"
        assert c.is_server_live(headers=bearer(keys.user))


def test_repository_index_lists_only_the_keys_models(
    triton: TritonHandle, keys: Keys, keyed: Shield
) -> None:
    with tg.InferenceServerClient(triton.url) as direct:
        everything = direct.get_model_repository_index(as_json=True)["models"]
        all_stats = direct.get_inference_statistics(as_json=True)["model_stats"]
    with tg.InferenceServerClient(keyed.url) as c:
        admin = c.get_model_repository_index(headers=bearer(keys.admin), as_json=True)
        mine = c.get_model_repository_index(headers=bearer(keys.user), as_json=True)
        theirs = c.get_model_repository_index(headers=bearer(keys.other_model), as_json=True)
        my_stats = c.get_inference_statistics(headers=bearer(keys.user), as_json=True)
        assert status_of(lambda: c.get_model_repository_index()) == "UNAUTHENTICATED"
    # pytriton's index names its own proxy model, not echo: a name the key may not see.
    assert everything and {m["name"] for m in everything} - {"echo"}
    assert {m["name"] for m in all_stats} >= {"echo"}
    assert admin["models"] == everything
    assert {m["name"] for m in mine.get("models", [])} <= {"echo"}
    assert theirs.get("models", []) == []
    assert [m["name"] for m in my_stats["model_stats"]] == ["echo"]


def test_admin_rpcs_need_the_admin_role(triton: TritonHandle, keys: Keys, keyed: Shield) -> None:
    with tg.InferenceServerClient(keyed.url) as c:
        for call in (
            lambda h: c.unload_model("echo", headers=h),
            lambda h: c.load_model("echo", headers=h),
            lambda h: c.register_system_shared_memory("r", "/infershield-x", 64, headers=h),
            lambda h: c.update_log_settings({"log_verbose_level": 0}, headers=h),
        ):
            assert status_of(lambda call=call: call(bearer(keys.user))) == "PERMISSION_DENIED"
            assert status_of(lambda call=call: call({})) == "UNAUTHENTICATED"
        # The admin role passes the firewall (Triton answers a settings read itself).
        assert c.get_log_settings(headers=bearer(keys.admin), as_json=True)["settings"]
    with tg.InferenceServerClient(triton.url) as direct:
        assert direct.is_model_ready("echo")


def test_a_revoked_key_stops_working_on_reload(keys: Keys, start: Callable[..., Shield]) -> None:
    d = Path(keys.auth.keys_file).parent
    auth = AuthConfig(keys_file=str(d / "own.json"), secret_file=keys.auth.secret_file)
    rec, key = create_key(auth, tenant="temp", roles=["infer"], models=["echo"])
    shield = start(auth={"keys_file": auth.keys_file, "secret_file": auth.secret_file})
    with tg.InferenceServerClient(shield.url) as c:
        assert status_of(lambda: c.infer("echo", [_texts(["a"])], headers=bearer(key))) == "OK"
        revoke_key(auth, rec.id)
        shield.reload_access()
        got = status_of(lambda: c.infer("echo", [_texts(["a"])], headers=bearer(key)))
        assert got == "UNAUTHENTICATED"
    # The keys file never holds a plain key, revoked or not.
    text = Path(auth.keys_file).read_text() + Path(keys.auth.keys_file).read_text()
    for plain in (key, keys.user, keys.admin, keys.revoked, keys.other_model):
        # isk_<id>_<secret>: the secret itself may contain "_" (URL-safe base64).
        assert plain not in text and plain.split("_", 2)[2] not in text


def test_a_blocked_caller_learns_stage_and_category_only(
    triton: TritonHandle, keys: Keys, keyed: Shield, audit_log: Path
) -> None:
    before = settled(triton)
    with grpc.insecure_channel(keyed.url) as ch:
        from tritonclient.grpc import service_pb2_grpc as pb_grpc

        stub = pb_grpc.GRPCInferenceServiceStub(ch)  # type: ignore[no-untyped-call]
        with pytest.raises(grpc.RpcError) as err:
            stub.ModelInfer(
                text_request(["ok", INJECTION]), metadata=tuple(bearer(keys.user).items()),
                timeout=10,
            )
    e: Any = err.value
    assert e.code() is grpc.StatusCode.PERMISSION_DENIED
    assert e.details() == "blocked on input (category: injection)"
    trailers = dict(e.trailing_metadata())
    assert trailers["infershield-stage"] == "input"
    assert trailers["infershield-category"] == "injection"
    assert "infershield-reason" not in trailers and "infershield-blocked-by" not in trailers
    assert settled(triton) == before
    # The audit log has what the caller was not told, under the tenant's name.
    (rec,) = [json.loads(line) for line in audit_log.read_text().splitlines()]
    assert rec["caller"] == "acme" and rec["key_id"] == keys.user.split("_")[1]
    (check,) = rec["checks"]
    assert check["name"] == "keywords" and check["reason"] == "matched blocked phrase #0"


# --------------------------------------------------------------------------- perimeter


def test_an_address_outside_allow_cidrs_is_refused_and_spoofing_does_not_help(
    triton: TritonHandle, start: Callable[..., Shield]
) -> None:
    walled = start(auth={}, server={"allow_cidrs": ["10.0.0.0/8"]})
    before = settled(triton)
    spoof = {"x-forwarded-for": "10.1.2.3"}
    with tg.InferenceServerClient(walled.url) as c:
        for headers in ({}, spoof):
            got = status_of(lambda h=headers: c.infer("echo", [_texts(["hi"])], headers=h))
            assert got == "PERMISSION_DENIED"
        # The perimeter comes before everything: health too.
        assert status_of(lambda: c.is_server_live()) == "PERMISSION_DENIED"
    with grpc.insecure_channel(walled.url) as ch:
        from grpc_health.v1 import health_pb2, health_pb2_grpc

        with pytest.raises(grpc.RpcError) as err:
            health_pb2_grpc.HealthStub(ch).Check(health_pb2.HealthCheckRequest(), timeout=5)
        assert err.value.code() is grpc.StatusCode.PERMISSION_DENIED  # type: ignore[attr-defined]
    assert settled(triton) == before

    # Behind a trusted proxy (here: loopback), x-forwarded-for names the caller.
    proxied = start(
        auth={}, server={"allow_cidrs": ["10.0.0.0/8"], "trusted_proxies": ["127.0.0.1/32"]}
    )
    with tg.InferenceServerClient(proxied.url) as c:
        assert status_of(lambda: c.infer("echo", [_texts(["hi"])], headers=spoof)) == "OK"
        outside = {"x-forwarded-for": "192.168.1.1"}
        got = status_of(lambda: c.infer("echo", [_texts(["hi"])], headers=outside))
        assert got == "PERMISSION_DENIED"


# --------------------------------------------------------------------------- TLS


@pytest.fixture(scope="module")
def ca(tmp_path_factory: pytest.TempPathFactory) -> TestCA:
    return TestCA(tmp_path_factory.mktemp("ca"))


def test_tls_with_api_keys(keys: Keys, ca: TestCA, start: Callable[..., Shield]) -> None:
    srv = ca.server("tls-only")
    shield = start(server={"tls": {"cert": str(srv.cert), "key": str(srv.key)}})
    with tg.InferenceServerClient(shield.url, ssl=True, root_certificates=str(ca.path)) as c:
        out = c.infer("echo", [_texts(["secure"])], headers=bearer(keys.user))
        assert out.as_numpy("OUTPUT").tolist() == [[b"echo: secure"]]
        assert status_of(lambda: c.infer("echo", [_texts(["x"])])) == "UNAUTHENTICATED"
    with tg.InferenceServerClient(shield.url) as plain:  # plaintext to a TLS port fails
        got = status_of(lambda: plain.infer("echo", [_texts(["x"])], client_timeout=5))
        assert got == "UNAVAILABLE"


def test_mtls_names_the_tenant_by_certificate_and_certificates_reload(
    triton: TritonHandle,
    keys: Keys,
    ca: TestCA,
    start: Callable[..., Shield],
    tmp_path: Path,
) -> None:
    srv = ca.server()
    shield = start(
        server={"tls": {"cert": str(srv.cert), "key": str(srv.key), "client_ca": str(ca.path)}}
    )
    certco, stranger = ca.client("certco"), ca.client("stranger")

    def client(pair: Any = None, root: Path = ca.path) -> tg.InferenceServerClient:
        return tg.InferenceServerClient(
            shield.url,
            # A channel of its own: no connection made before the reload may be reused.
            channel_args=[("grpc.use_local_subchannel_pool", 1)],
            ssl=True,
            root_certificates=str(root),
            private_key=str(pair.key) if pair else None,
            certificate_chain=str(pair.cert) if pair else None,
        )

    before = settled(triton)
    with client(certco) as c:  # the certificate's subject is a tenant in the keys file
        assert c.infer("echo", [_texts(["tls"])]).as_numpy("OUTPUT").tolist() == [[b"echo: tls"]]
        # A key still wins over the certificate, and a bad key is refused.
        assert status_of(lambda: c.infer("echo", [_texts(["x"])], headers=bearer("nope")))\
            == "UNAUTHENTICATED"
    with client(stranger) as c:  # a valid certificate for no tenant: a key is needed
        assert status_of(lambda: c.infer("echo", [_texts(["x"])])) == "UNAUTHENTICATED"
        assert status_of(lambda: c.infer("echo", [_texts(["x"])], headers=bearer(keys.user)))\
            == "OK"
    with client() as c:  # no client certificate: the handshake fails
        assert status_of(lambda: c.infer("echo", [_texts(["x"])], client_timeout=5)) \
            == "UNAVAILABLE"
    assert settled(triton, before + 2) == before + 2

    # The upstream over TLS: a second firewall whose backend is this one, over mTLS. It
    # trusts the CA in a file of its own, so that file can change under it.
    front_ca = tmp_path / "front-ca.pem"
    front_ca.write_bytes(ca.path.read_bytes())
    front = start(
        auth={},
        upstream=f"triton://{shield.url}",
        backend={"tls": {"ca": str(front_ca), "cert": str(certco.cert), "key": str(certco.key)}},
    )
    with tg.InferenceServerClient(front.url) as c:
        out = c.infer("echo", [_texts(["two hops"])]).as_numpy("OUTPUT")
    assert out.tolist() == [[b"echo: two hops"]]
    # SIGHUP re-reads the upstream's certificates too: trusting a CA that did not sign the
    # upstream, new calls fail; with the right one back, they pass again.
    wrong = TestCA(tmp_path / "wrong", name="Wrong CA")
    front_ca.write_bytes(wrong.path.read_bytes())
    front.reload_access()
    with tg.InferenceServerClient(front.url) as c:
        assert status_of(lambda: c.infer("echo", [_texts(["x"])], client_timeout=5)) \
            == "UNAVAILABLE"
    front_ca.write_bytes(ca.path.read_bytes())
    front.reload_access()
    with tg.InferenceServerClient(front.url) as c:
        out = c.infer("echo", [_texts(["back"])]).as_numpy("OUTPUT")
    assert out.tolist() == [[b"echo: back"]]

    # Reload: a certificate from a new CA replaces the old one for new connections.
    ca2 = TestCA(tmp_path / "ca2", name="Second CA")
    fresh = ca2.server()
    srv.cert.write_bytes(fresh.cert.read_bytes())
    srv.key.write_bytes(fresh.key.read_bytes())
    shield.reload_access()
    with client(certco, root=ca2.path) as c:
        assert c.infer("echo", [_texts(["new"])]).as_numpy("OUTPUT").tolist() == [[b"echo: new"]]
    with client(certco) as c:  # trusting only the old CA now fails
        assert status_of(lambda: c.infer("echo", [_texts(["x"])], client_timeout=5)) \
            == "UNAVAILABLE"


def test_streams_and_the_own_api_are_authorized_too(
    triton: TritonHandle, keys: Keys, keyed: Shield
) -> None:
    import queue

    from infershield.v1 import firewall_pb2 as fpb
    from infershield.v1 import firewall_pb2_grpc as fpb_grpc

    before = settled(triton)
    # A stream without a key ends at once; with a key for another model, every request in it
    # is refused in-stream and none reaches Triton.
    results: queue.Queue[tuple[Any, Any]] = queue.Queue()
    for headers, want in (({}, "UNAUTHENTICATED"), (bearer(keys.other_model), "PERMISSION_DENIED")):
        with tg.InferenceServerClient(keyed.url) as c:
            c.start_stream(
                callback=lambda result, error: results.put((result, error)), headers=headers
            )
            # A refused stream may already be closed when the request is queued.
            with contextlib.suppress(InferenceServerException):
                c.async_stream_infer("echo", [_texts(["streamed"])], request_id="s1")
            _, err = results.get(timeout=10)
            c.stop_stream()
        assert err is not None and want in str(err)
    assert settled(triton) == before

    md = tuple(bearer(keys.user).items())
    with grpc.insecure_channel(keyed.url) as ch:
        api = fpb_grpc.FirewallStub(ch)
        resp = api.Infer(fpb.InferRequest(model="echo", prompt="hello"), metadata=md, timeout=10)
        assert list(resp.outputs[0].text) == ["echo: hello"]
        refusals = {
            "no key": (lambda: api.Infer(fpb.InferRequest(model="echo", prompt="hi"), timeout=10),
                       grpc.StatusCode.UNAUTHENTICATED),
            "other model": (lambda: api.Infer(fpb.InferRequest(model="echo", prompt="hi"),
                                              metadata=tuple(bearer(keys.other_model).items()),
                                              timeout=10), grpc.StatusCode.PERMISSION_DENIED),
            "no scan role": (lambda: api.Scan(fpb.ScanRequest(texts=["hi"]), metadata=md,
                                              timeout=10), grpc.StatusCode.PERMISSION_DENIED),
        }
        for name, (call, code) in refusals.items():
            with pytest.raises(grpc.RpcError) as err:
                call()
            assert err.value.code() is code, name  # type: ignore[attr-defined]
    assert settled(triton, before + 1) == before + 1


def test_the_rate_limit_counts_per_tenant_not_per_address(
    keys: Keys, start: Callable[..., Shield]
) -> None:
    limited = start(limits={"rate_per_s": 0.001, "rate_burst": 1})
    with tg.InferenceServerClient(limited.url) as c:
        def infer(key: str) -> str:
            return status_of(lambda: c.infer("echo", [_texts(["r"])], headers=bearer(key)))

        # Both tenants call from 127.0.0.1; each has its own bucket of one.
        assert infer(keys.user) == "OK"
        assert infer(keys.user) == "RESOURCE_EXHAUSTED"
        assert infer(keys.admin) == "OK"
