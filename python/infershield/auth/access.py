"""Who is calling, and may they: the transport-free core of access control.

One call goes through three steps, in this order:

1. **Perimeter** (:class:`Perimeter`): the caller's address must be in
   ``server.allow_cidrs`` (when set). The address is the peer's, or, when the peer is one
   of ``server.trusted_proxies``, the right-most ``x-forwarded-for`` entry that is not itself a
   trusted proxy. A ``x-forwarded-for`` from any other peer is ignored: anyone can send one.
2. **Authentication** (:meth:`AccessControl.authenticate`): an API key (``authorization:
   Bearer …`` or ``x-api-key``) or a client certificate subject named in the keys file makes
   an :class:`Identity`; no keys file makes an anonymous one. A key that is missing, unknown
   or revoked is UNAUTHENTICATED.
3. **Authorization** (:func:`authorize`, called by the firewall core with the model the
   request names): the method's role and the model must be the identity's, else
   PERMISSION_DENIED.

Health and reflection are open unless ``auth.public`` leaves them out; the perimeter applies
to them all the same.
"""

from __future__ import annotations

import contextvars
import ipaddress
import logging
import threading
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from infershield.auth.keys import ALL_MODELS, KeyRecord, KeyStore, load_secret
from infershield.config import Config
from infershield.errors import AccessDenied, ConfigError, Unauthenticated
from infershield.reload import file_fingerprint

log = logging.getLogger(__name__)

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

ANONYMOUS = "anonymous"

#: Triton RPCs that change server state: they need the ``admin`` role.
ADMIN_METHODS: frozenset[str] = frozenset(
    {
        "RepositoryModelLoad",
        "RepositoryModelUnload",
        "SystemSharedMemoryRegister",
        "SystemSharedMemoryUnregister",
        "CudaSharedMemoryRegister",
        "CudaSharedMemoryUnregister",
        "TraceSetting",
        "LogSettings",
    }
)
#: Methods that do inference: the ``infer`` role.
INFER_METHODS: frozenset[str] = frozenset({"ModelInfer", "ModelStreamInfer", "Infer"})
#: Methods that only screen text: the ``scan`` role.
SCAN_METHODS: frozenset[str] = frozenset({"Scan"})
#: Health checks that are open when ``health`` is in ``auth.public``.
HEALTH_METHODS: frozenset[str] = frozenset(
    {
        "/inference.GRPCInferenceService/ServerLive",
        "/inference.GRPCInferenceService/ServerReady",
    }
)
HEALTH_SERVICE = "/grpc.health.v1.Health/"
REFLECTION_SERVICES = (
    "/grpc.reflection.v1alpha.ServerReflection/",
    "/grpc.reflection.v1.ServerReflection/",
)


#: Where each Triton RPC that concerns one model names it (shared-memory RPCs name a region).
_MODEL_FIELDS: dict[str, str] = {
    "ModelInfer": "model_name",
    "ModelReady": "name",
    "ModelMetadata": "name",
    "ModelConfig": "name",
    "ModelStatistics": "name",
    "RepositoryModelLoad": "model_name",
    "RepositoryModelUnload": "model_name",
    "TraceSetting": "model_name",
}


def request_model(method: str, request: Any) -> str:
    """The model a Triton request (short method name) is about, or "" when none."""
    attr = _MODEL_FIELDS.get(method)
    return str(getattr(request, attr, "") or "") if attr else ""


def required_role(method: str) -> str:
    """The role a short method name (``ModelInfer``) needs; "" for read-only metadata."""
    if method in ADMIN_METHODS:
        return "admin"
    if method in INFER_METHODS:
        return "infer"
    if method in SCAN_METHODS:
        return "scan"
    return ""


@dataclass(frozen=True, slots=True)
class Identity:
    """An authenticated (or, with no keys file, anonymous) caller."""

    tenant: str
    roles: frozenset[str]
    #: Model names this caller may use; None means every model.
    models: frozenset[str] | None
    #: ``key``, ``cert`` or ``anonymous``.
    source: str = ANONYMOUS
    #: The key or certificate entry's id ("" for anonymous callers).
    key_id: str = ""
    #: The caller's address (``ipv4:10.0.0.7``), after ``x-forwarded-for`` from a trusted proxy.
    address: str = ""

    @property
    def caller(self) -> str:
        """The name rate limits, quarantine and audit records use: the tenant, or the
        address of an anonymous caller."""
        if self.source == ANONYMOUS:
            return self.address or ANONYMOUS
        return self.tenant

    def may_use(self, model: str) -> bool:
        return self.models is None or model in self.models

    @classmethod
    def of(cls, rec: KeyRecord, source: str, address: str) -> Identity:
        models = None if ALL_MODELS in rec.models else frozenset(rec.models)
        return cls(rec.tenant, frozenset(rec.roles), models, source, rec.id, address)


def authorize(identity: Identity | None, method: str, model: str = "") -> None:
    """Raise AccessDenied unless ``identity`` may call ``method`` (short name) on ``model``.

    ``None`` (no transport, e.g. the library used in-process) is not restricted.
    """
    if identity is None:
        return
    role = required_role(method)
    if role and role not in identity.roles:
        raise AccessDenied(
            f"{method} needs the {role!r} role, which this caller does not have", what="role"
        )
    if model and not identity.may_use(model):
        raise AccessDenied(f"this caller may not use model {model!r}", what="model")


# --------------------------------------------------------------------------- perimeter


def _networks(cidrs: Sequence[str]) -> tuple[IPNetwork, ...]:
    return tuple(ipaddress.ip_network(c, strict=False) for c in cidrs)


def peer_ip(peer: str) -> IPAddress | None:
    """``ipv4:1.2.3.4:5678`` / ``ipv6:[::1]:5678`` -> the address; None for other kinds."""
    kind, _, rest = peer.partition(":")
    if kind not in ("ipv4", "ipv6"):
        return None
    host = rest.rpartition(":")[0].strip("[]")
    try:
        return ipaddress.ip_address(host.split("%", 1)[0])
    except ValueError:
        return None


def _label(ip: IPAddress) -> str:
    return f"ipv{ip.version}:{ip}"


class Perimeter:
    """``server.allow_cidrs`` and ``server.trusted_proxies``; see the module docstring."""

    #: Peers remembered by :meth:`check` (a peer string is one connection: ip and port).
    CACHE_SIZE = 4096

    def __init__(self, allow_cidrs: Sequence[str] = (), trusted_proxies: Sequence[str] = ()):
        self.allow = _networks(allow_cidrs)
        self.trusted = _networks(trusted_proxies)
        # peer -> its address label, or None when refused; only for calls without
        # x-forwarded-for, whose outcome depends on the peer alone.
        self._seen: dict[str, str | None] = {}

    @staticmethod
    def _within(ip: IPAddress, nets: Sequence[IPNetwork]) -> bool:
        return any(ip in n for n in nets)

    def address(self, peer: str, forwarded_for: Sequence[str] = ()) -> IPAddress | None:
        """The caller's address: the peer, or the client behind a trusted proxy."""
        ip = peer_ip(peer)
        if ip is None or not forwarded_for or not self._within(ip, self.trusted):
            return ip
        hops: list[str] = [h.strip() for v in forwarded_for for h in v.split(",")]
        for hop in reversed(hops):
            try:
                hop_ip = ipaddress.ip_address(hop.strip("[]"))
            except ValueError:
                # Garbage from a trusted proxy: no client we can name; deny below if limited.
                return None
            if not self._within(hop_ip, self.trusted):
                return hop_ip
            ip = hop_ip
        return ip

    def check(self, peer: str, forwarded_for: Sequence[str] = ()) -> str:
        """Raise AccessDenied when the caller is outside ``allow_cidrs``; return its address."""
        if not forwarded_for and peer in self._seen:
            label = self._seen[peer]
        else:
            ip = self.address(peer, forwarded_for)
            if self.allow and (ip is None or not self._within(ip, self.allow)):
                label = None
            else:
                label = _label(ip) if ip is not None else peer
            if not forwarded_for:
                if len(self._seen) >= self.CACHE_SIZE:
                    self._seen.clear()
                self._seen[peer] = label
        if label is None:
            raise AccessDenied("calls from this address are not allowed", what="address")
        return label


# --------------------------------------------------------------------------- identities

#: The identity of the call running in this context (set by the server's access layer).
_IDENTITY: contextvars.ContextVar[Identity | None] = contextvars.ContextVar(
    "infershield_identity", default=None
)


def current_identity() -> Identity | None:
    """The identity the access layer set for the current call, if any."""
    return _IDENTITY.get()


def set_identity(identity: Identity | None) -> contextvars.Token[Identity | None]:
    return _IDENTITY.set(identity)


def reset_identity(token: contextvars.Token[Identity | None]) -> None:
    try:
        _IDENTITY.reset(token)
    except ValueError:  # an async generator finalised in another context
        _IDENTITY.set(None)


def bearer_key(metadata: Iterable[tuple[str, Any]]) -> str | None:
    """The API key in ``authorization: Bearer …`` or ``x-api-key``, or None."""
    for key, value in metadata:
        k = key.lower()
        if k == "x-api-key":
            return value if isinstance(value, str) else None
        if k == "authorization" and isinstance(value, str):
            scheme, _, token = value.strip().partition(" ")
            if scheme.lower() == "bearer" and token.strip():
                return token.strip()
    return None


class AccessControl:
    """The live keys file and the rules around it; :meth:`reload` swaps the keys atomically.

    ``enabled`` is true with a keys file: every call then needs a key or a known client
    certificate. Without one, callers are anonymous with ``auth.anonymous_roles`` (and,
    with mTLS, named by their certificate's subject).
    """

    def __init__(self, config: Config) -> None:
        self.config = config
        auth = config.auth
        self.perimeter = Perimeter(config.server.allow_cidrs, config.server.trusted_proxies)
        self.enabled = bool(auth.keys_file)
        self.public_health = "health" in auth.public
        self.public_reflection = "reflection" in auth.public
        self.anonymous_roles = frozenset(auth.anonymous_roles)
        self._lock = threading.Lock()
        self._store: KeyStore | None = None
        self._fingerprint: tuple[int, int, str] | None = None
        if self.enabled:
            self._store, self._fingerprint = self._load()

    @property
    def keys_path(self) -> Path | None:
        return Path(self.config.auth.keys_file).expanduser() if self.enabled else None

    def _load(self) -> tuple[KeyStore, tuple[int, int, str] | None]:
        path = self.keys_path
        assert path is not None
        fp = file_fingerprint(path)
        secret = load_secret(self.config.auth)
        return KeyStore.load(path, secret), fp

    def reload(self) -> bool:
        """Re-read the keys file (and secret); on any error keep the old keys and log why."""
        if not self.enabled:
            return False
        path = self.keys_path
        assert path is not None
        try:
            store, fp = self._load()
        except ConfigError as exc:
            # Remember what was tried, so polling retries only once the file changes again.
            self._fingerprint = file_fingerprint(path)
            log.error("keys reload rejected, keeping the previous keys: %s", exc.message)
            return False
        with self._lock:
            self._store, self._fingerprint = store, fp
        active = sum(r.active for r in store.records)
        log.info("keys reloaded: %d active of %d", active, len(store.records))
        return True

    def changed(self) -> bool:
        """Whether the keys file's content differs from the one last loaded or tried."""
        path = self.keys_path
        if path is None:
            return False
        fp = file_fingerprint(path)
        return fp is not None and (self._fingerprint is None or fp[2] != self._fingerprint[2])

    def is_public(self, method: str) -> bool:
        if method.startswith(HEALTH_SERVICE) or method in HEALTH_METHODS:
            return self.public_health
        if method.startswith(REFLECTION_SERVICES):
            return self.public_reflection
        return False

    def authenticate(
        self,
        method: str,
        peer: str,
        metadata: Sequence[tuple[str, Any]],
        cert_subject: str = "",
    ) -> Identity:
        """Perimeter, then credentials; returns the caller's identity or raises."""
        forwarded = [
            v for k, v in metadata if k.lower() == "x-forwarded-for" and isinstance(v, str)
        ]
        address = self.perimeter.check(peer, forwarded)
        key = bearer_key(metadata)
        store = self._store
        if key is not None and store is not None:
            rec = store.verify(key)
            if rec is None:
                raise Unauthenticated("the API key is not valid (unknown or revoked)")
            return Identity.of(rec, "key", address)
        if cert_subject and store is not None:
            rec = store.by_subject(cert_subject)
            if rec is not None:
                return Identity.of(rec, "cert", address)
        if self.enabled:
            if self.is_public(method):
                return Identity(ANONYMOUS, frozenset(), frozenset(), ANONYMOUS, "", address)
            raise Unauthenticated(
                "this server needs an API key (metadata 'authorization: Bearer <key>' or "
                "'x-api-key')"
            )
        tenant = _cn(cert_subject) or ANONYMOUS
        source = "cert" if cert_subject else ANONYMOUS
        return Identity(tenant, self.anonymous_roles, None, source, "", address)


def _cn(subject: str) -> str:
    for part in subject.split(","):
        k, _, v = part.strip().partition("=")
        if k.upper() == "CN":
            return v
    return subject
