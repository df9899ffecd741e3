"""One typed configuration: defaults < YAML file < environment < CLI flags.

Every section is a frozen, keyword-only dataclass. :func:`build` validates a plain mapping
against a dataclass and raises :class:`~infershield.errors.ConfigError` naming the exact
field (``policy.input[2].options.threshold``) on an unknown key or a wrong type.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import logging
import os
import types
import typing
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any, Literal, TypeVar

import yaml

from infershield.errors import ConfigError

log = logging.getLogger(__name__)

T = TypeVar("T")
ENV_PREFIX = "INFERSHIELD_"
#: Most processes ``server.processes: auto`` starts (and the most any setting may ask for
#: is :data:`MAX_PROCESSES`): beyond this, the upstream, not the firewall, is the limit.
MAX_AUTO_PROCESSES = 8
MAX_PROCESSES = 256
#: Room for a request's protobuf framing (tensor names, shapes, parameters, length prefixes)
#: on top of ``limits.max_request_bytes`` of tensor data.
FRAMING_BYTES = 64 * 1024


@dataclass(frozen=True, kw_only=True)
class CheckSpec:
    """One check in a policy. ``options`` is validated against the check's ``Options``."""

    type: str
    name: str = ""
    on_error: Literal["block", "allow"] = "block"
    enabled: bool = True
    options: dict[str, Any] = field(default_factory=dict)

    @property
    def display_name(self) -> str:
        return self.name or self.type


@dataclass(frozen=True, kw_only=True)
class PolicyConfig:
    """What is screened and how."""

    input: tuple[CheckSpec, ...] = ()
    output: tuple[CheckSpec, ...] = ()
    fail_fast: bool = True
    #: Names of Triton input/output tensors that hold text; empty means every BYTES tensor.
    text_tensors: tuple[str, ...] = ()
    #: Requests that use shared-memory regions carry data the firewall cannot see.
    allow_shared_memory: bool = False
    #: Checks for untrusted content: ``tool`` and ``document`` messages of ``Infer``. Unset
    #: means the input checks plus the indirect-injection rules; it may not be empty.
    untrusted: tuple[CheckSpec, ...] | None = None
    #: Characters of a streamed output held back until what follows shows they are safe;
    #: 0 derives it from the output checks (the longest text one of them matches).
    stream_holdback_chars: int = 0
    #: Plant a random per-request canary in the system prompt sent upstream (the ``Infer``
    #: system message, or ``system_prompt_tensor``); an output carrying it is blocked.
    canary: bool = False
    #: Model name -> the system prompt its server adds itself, for ``prompt_leak``.
    system_prompts: dict[str, str] = field(default_factory=dict)
    #: Triton input tensor that carries the system prompt: ``prompt_leak`` compares outputs
    #: with its text, and ``canary`` plants the canary there.
    system_prompt_tensor: str = ""
    #: A pipeline (input or output) with no enabled check is a start-up error unless this is
    #: true: an omitted or emptied section must never switch screening off by accident.
    allow_empty: bool = False
    #: Tell a blocked caller which check blocked and why (rule ids). Off by default: the
    #: caller learns only the stage and the category, so it cannot iterate against the rules;
    #: the full detail goes to the audit log and the trace either way.
    explain_blocks: bool = False


@dataclass(frozen=True, kw_only=True)
class ServerTlsConfig:
    """TLS on the listener; ``client_ca`` also requires client certificates (mTLS)."""

    #: PEM certificate chain and private key; both or neither.
    cert: str = ""
    key: str = ""
    #: PEM CA bundle that client certificates must chain to; set, it turns on mTLS.
    client_ca: str = ""


@dataclass(frozen=True, kw_only=True)
class ServerConfig:
    listen: str = "127.0.0.1:8001"
    tls: ServerTlsConfig = field(default_factory=ServerTlsConfig)
    #: Allow a non-loopback ``listen`` without authentication (no keys file, no mTLS).
    insecure: bool = False
    #: Caller addresses (CIDRs) allowed to call at all; empty allows every address.
    allow_cidrs: tuple[str, ...] = ()
    #: Proxies (CIDRs) whose ``x-forwarded-for`` names the real caller.
    trusted_proxies: tuple[str, ...] = ()
    #: Largest message the firewall sends to a client or accepts from its upstream (responses
    #: can be large). What it *receives* from clients is capped by gRPC itself at
    #: ``limits.max_request_bytes`` plus :data:`FRAMING_BYTES` (see
    #: :meth:`Config.receive_limit_bytes`), so an oversized request is refused by the
    #: transport before it is buffered.
    max_message_bytes: int = 2**31 - 1
    grace_period_s: float = 10.0
    #: Prometheus metrics endpoint. ``auto`` (the default): 127.0.0.1:9464, and a warning
    #: instead of an error when that port is taken; ``HOST:PORT``: exactly there (a busy
    #: port is a start-up error); empty: off.
    metrics_listen: str = "auto"
    reflection: bool = True
    #: Serving processes on the one port (``SO_REUSEPORT``), under a supervisor that
    #: forwards SIGHUP and SIGTERM and restarts a child that dies. ``auto``: one per core,
    #: at most :data:`MAX_AUTO_PROCESSES`. 1 (the default) is the single process of old:
    #: in-memory rate limits and quarantine are per process, so N processes would admit N
    #: times the configured rate unless ``ratelimit.backend: redis`` shares them.
    processes: int | Literal["auto"] = 1


@dataclass(frozen=True, kw_only=True)
class BackendTlsConfig:
    """TLS to the upstream Triton: on when ``enabled``, or when ``ca`` or ``cert`` is set."""

    enabled: bool = False
    #: PEM CA bundle that the upstream's certificate must chain to (empty: system roots).
    ca: str = ""
    #: Client certificate and key, when the upstream wants mTLS.
    cert: str = ""
    key: str = ""
    #: Name to verify the upstream's certificate against, when it differs from the host.
    server_name: str = ""


@dataclass(frozen=True, kw_only=True)
class BackendConfig:
    kind: Literal["local", "triton"] = "local"
    #: ``HOST:PORT`` of an upstream Triton (``triton://`` prefix allowed).
    upstream: str = ""
    #: Triton-layout model repository for the ``local`` backend; empty means the built-in one.
    model_repository: str = ""
    timeout_s: float = 30.0
    workers: int = 1
    worker_memory_mb: int = 2048
    worker_cpu_seconds: int = 3600
    tls: BackendTlsConfig = field(default_factory=BackendTlsConfig)


@dataclass(frozen=True, kw_only=True)
class LimitsConfig:
    """Safe defaults that are on without any config; each error names its limit."""

    max_request_bytes: int = 8 * 1024 * 1024
    max_text_bytes: int = 1024 * 1024
    max_batch_elements: int = 256
    max_input_tokens: int = 8192
    max_output_tokens: int = 4096
    max_concurrency: int = 64
    max_queue: int = 256
    deadline_s: float = 30.0
    #: Longest one check may take on one batch before the request fails (stage check:<name>).
    check_budget_s: float = 5.0
    #: Per-caller token bucket for screened calls (the tenant; an anonymous caller's
    #: address); 0 turns it off.
    rate_per_s: float = 0.0
    #: Bucket size (burst); 0 means ``max(1, rate_per_s)``.
    rate_burst: int = 0
    #: Automated incident response: a caller (tenant, or address) whose requests are blocked this
    #: many times within ``quarantine_window_s`` is refused for ``quarantine_s``. 0 turns it
    #: off (the default: behind a proxy every caller shares one address).
    quarantine_after_blocks: int = 0
    quarantine_window_s: float = 60.0
    quarantine_s: float = 300.0


@dataclass(frozen=True, kw_only=True)
class TelemetryConfig:
    service_name: str = "infershield"
    #: Share of requests without an incoming trace context that start a trace, in [0, 1].
    #: Parent-based: a caller's sampled ``traceparent`` is always continued. 1% keeps the
    #: cost of tracing well under 5% of throughput (bench/bench_tracing.py); raise it to debug.
    sample_ratio: float = 0.01
    log_format: Literal["json", "text"] = "json"
    log_level: str = "INFO"
    log_prompts: bool = False
    #: ``auto`` exports over OTLP when an OTLP endpoint is set (here or in
    #: ``OTEL_EXPORTER_OTLP_ENDPOINT``) and traces nothing otherwise. ``OTEL_TRACES_EXPORTER``
    #: overrides this field, as env overrides the file.
    traces_exporter: Literal["auto", "otlp", "console", "none"] = "auto"
    #: OTLP/gRPC collector, e.g. ``http://127.0.0.1:4317``; ``OTEL_EXPORTER_OTLP_ENDPOINT`` wins.
    otlp_endpoint: str = ""


@dataclass(frozen=True, kw_only=True)
class AuditConfig:
    """Tamper-evident audit log of screening decisions (see :mod:`infershield.audit`)."""

    #: JSONL file to append to; empty turns the audit log off.
    path: str = ""
    #: Environment variable holding the HMAC key; unset means a plain SHA-256 chain.
    key_env: str = "INFERSHIELD_AUDIT_KEY"
    #: Also record allowed texts (by default only blocks, redactions and check errors).
    record_allowed: bool = False
    #: ``always``: each record is on disk (fsync) before the call that wrote it returns, so
    #: a request's record is durable before its reply is sent; ``interval``: fsync at most
    #: every ``fsync_interval_s``; ``never``: leave it to the OS (a crash may lose records).
    fsync: Literal["always", "interval", "never"] = "interval"
    fsync_interval_s: float = 1.0
    #: Start a new file once the current one reaches this size (0: no size rotation).
    rotate_bytes: int = 0
    #: Start a new file once the current one is this old (0: no time rotation). Rotated files
    #: are ``<path>.1``, ``<path>.2`` … (oldest first); the hash chain runs across them.
    rotate_s: float = 0.0


# --------------------------------------------------------------------------- abuse control


@dataclass(frozen=True, kw_only=True)
class RateSpec:
    """Token buckets of one caller: requests/s and model tokens/s, each with a burst.

    0 turns an axis off; a burst of 0 means ``max(1, rate)``.
    """

    requests_per_s: float = 0.0
    requests_burst: float = 0.0
    tokens_per_s: float = 0.0
    tokens_burst: float = 0.0


@dataclass(frozen=True, kw_only=True)
class RateLimitConfig:
    """Per-caller token buckets (see :mod:`infershield.abuse`)."""

    #: ``memory``: buckets in this process; ``redis``: shared by every replica.
    backend: Literal["memory", "redis"] = "memory"
    redis_url: str = "redis://127.0.0.1:6379/0"
    key_prefix: str = "infershield"
    #: Socket timeout of one Redis call.
    redis_timeout_s: float = 0.05
    #: Redis unreachable: ``fallback`` refuses calls for ``error_grace_s``, then limits each
    #: replica locally at 1/``replicas`` of the rate; ``block`` refuses until it is back;
    #: ``allow`` admits without limits (only on purpose).
    on_error: Literal["fallback", "block", "allow"] = "fallback"
    error_grace_s: float = 2.0
    #: How many replicas share the Redis buckets (the local fallback's divisor N).
    replicas: int = 1
    #: How often a replica retries an unreachable Redis.
    retry_interval_s: float = 0.5
    #: Every caller, unless ``models`` or ``loopback`` says otherwise.
    default: RateSpec = field(default_factory=RateSpec)
    #: Anonymous callers on loopback (127.0.0.0/8, ::1, unix sockets); unset: ``default``.
    loopback: RateSpec | None = None
    #: Per-model buckets (per caller and model), replacing ``default`` for that model.
    models: dict[str, RateSpec] = field(default_factory=dict)


@dataclass(frozen=True, kw_only=True)
class WebhookConfig:
    url: str = ""
    #: Environment variable holding the HMAC-SHA256 key that signs each alert.
    secret_env: str = "INFERSHIELD_WEBHOOK_SECRET"
    timeout_s: float = 2.0
    retries: int = 3
    backoff_s: float = 0.5
    #: Alerts waiting to be sent; past this, new alerts are dropped (and counted).
    queue_size: int = 1000


@dataclass(frozen=True, kw_only=True)
class AnomalyConfig:
    """Per-caller streaming statistics and the automated response to departures."""

    enabled: bool = False
    #: Weight of a new sample in the EWMA mean and variance.
    alpha: float = 0.05
    #: Samples of a feature before it can raise anomalies.
    warmup: int = 20
    #: A sample this many standard deviations above the caller's mean is an anomaly.
    z: float = 6.0
    #: Floor of the standard deviation, relative to the mean (stops constant traffic from
    #: turning a tiny change into a huge z).
    min_rel_std: float = 0.1
    #: Window (seconds) over which request rate, block rate and error rate are measured.
    window_s: float = 10.0
    #: At most one event per caller and feature within this many seconds.
    cooldown_s: float = 60.0
    #: Callers tracked (least recently seen are forgotten).
    max_callers: int = 10_000
    #: Response per feature (request_rate, input_size, block_rate, score, error_rate):
    #: a list of ``log``, ``webhook``, ``quarantine``. Features not named get ``default``.
    responses: dict[str, tuple[str, ...]] = field(default_factory=dict)
    default_response: tuple[str, ...] = ("log",)
    quarantine_s: float = 300.0
    webhook: WebhookConfig = field(default_factory=WebhookConfig)


#: Roles a key can hold: ``infer`` (inference), ``scan`` (the Scan RPC), ``admin`` (model
#: load/unload, shared-memory registration, trace/log settings).
ROLES = ("infer", "scan", "admin")
#: Services that can be left open to callers without a key (see ``auth.public``).
PUBLIC_SERVICES = ("health", "reflection")


@dataclass(frozen=True, kw_only=True)
class AuthConfig:
    """API keys and tenants (see :mod:`infershield.auth`)."""

    #: Keys file written by ``infershield keys``; set, every call needs a key (or a client
    #: certificate the file names). Empty, callers are anonymous (loopback or mTLS only).
    keys_file: str = ""
    #: Environment variable holding the server secret that keys are hashed with; unset, the
    #: secret is read from ``secret_file``.
    secret_env: str = "INFERSHIELD_KEYS_SECRET"
    #: File holding the server secret; empty means the keys file's path plus ``.secret``.
    secret_file: str = ""
    #: Roles of anonymous callers (no keys file).
    anonymous_roles: tuple[str, ...] = ("infer", "scan")
    #: Services open without a key: ``health`` (gRPC health, ServerLive, ServerReady) and
    #: ``reflection``.
    public: tuple[str, ...] = PUBLIC_SERVICES


@dataclass(frozen=True, kw_only=True)
class Config:
    server: ServerConfig = field(default_factory=ServerConfig)
    backend: BackendConfig = field(default_factory=BackendConfig)
    policy: PolicyConfig = field(default_factory=PolicyConfig)
    limits: LimitsConfig = field(default_factory=LimitsConfig)
    telemetry: TelemetryConfig = field(default_factory=TelemetryConfig)
    audit: AuditConfig = field(default_factory=AuditConfig)
    auth: AuthConfig = field(default_factory=AuthConfig)
    ratelimit: RateLimitConfig = field(default_factory=RateLimitConfig)
    anomaly: AnomalyConfig = field(default_factory=AnomalyConfig)
    #: Where compiled rule databases and built models are cached.
    cache_dir: str = ""

    @property
    def receive_limit_bytes(self) -> int:
        """gRPC's receive limit for client messages: the request budget plus framing.

        Anything larger is refused by the transport with RESOURCE_EXHAUSTED before the
        message is buffered, so one oversized request cannot balloon the server's memory.
        """
        return min(self.limits.max_request_bytes + FRAMING_BYTES, self.server.max_message_bytes)

    @property
    def process_count(self) -> int:
        """``server.processes`` resolved: ``auto`` is one per usable core, capped."""
        procs = self.server.processes
        if procs != "auto":
            return procs
        try:
            cores = len(os.sched_getaffinity(0))
        except (AttributeError, OSError):  # not Linux
            cores = os.cpu_count() or 1
        return max(1, min(cores, MAX_AUTO_PROCESSES))

    @property
    def cache_path(self) -> Path:
        if self.cache_dir:
            return Path(self.cache_dir).expanduser()
        base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
        return Path(base) / "infershield"


# --------------------------------------------------------------------------- option bounds


class OptionError(ValueError):
    """One option of a check is out of range. ``build`` reports it as a ConfigError at the
    option's own path (``policy.input[3].options.min_blob_len: must be >= 4``); built in
    Python, the Options dataclass raises it as a ``ValueError``."""

    def __init__(self, field_name: str, message: str) -> None:
        super().__init__(f"{field_name}: {message}")
        self.field = field_name
        self.message = message


def bounded(
    default: Any,
    *,
    ge: float | None = None,
    gt: float | None = None,
    le: float | None = None,
    lt: float | None = None,
) -> Any:
    """A dataclass field with numeric bounds, checked by :func:`check_bounds` (``None``
    values are not checked: they mean "use the default")."""
    bounds = {k: v for k, v in (("ge", ge), ("gt", gt), ("le", le), ("lt", lt)) if v is not None}
    return field(default=default, metadata={"bounds": bounds})


def _bound_error(value: Any, bounds: Mapping[str, float]) -> str | None:
    lo_ok = ("ge" not in bounds or value >= bounds["ge"]) and (
        "gt" not in bounds or value > bounds["gt"]
    )
    hi_ok = ("le" not in bounds or value <= bounds["le"]) and (
        "lt" not in bounds or value < bounds["lt"]
    )
    if lo_ok and hi_ok:
        return None
    parts = [
        f"{op} {bounds[k]:g}"
        for k, op in (("ge", ">="), ("gt", ">"), ("le", "<="), ("lt", "<"))
        if k in bounds
    ]
    return "must be " + " and ".join(parts) + f", got {value!r}"


def check_bounds(obj: Any) -> None:
    """Raise :class:`OptionError` for the first field of dataclass ``obj`` outside the
    bounds declared with :func:`bounded`. Options dataclasses call it in ``__post_init__``."""
    for f in dataclasses.fields(obj):
        bounds = f.metadata.get("bounds")
        value = getattr(obj, f.name)
        if not bounds or value is None or isinstance(value, bool):
            continue
        msg = _bound_error(value, bounds)
        if msg is not None:
            raise OptionError(f.name, msg)


def field_bounds(cls: type[Any]) -> dict[str, dict[str, float]]:
    """The declared bounds of dataclass ``cls``, by field name (for docs and tests)."""
    return {
        f.name: dict(f.metadata["bounds"])
        for f in dataclasses.fields(cls)
        if f.metadata.get("bounds")
    }


# --------------------------------------------------------------------------- building

#: Fields that existed once, with what replaces them: a config naming one gets this message.
REMOVED_FIELDS: dict[str, str] = {
    "policy.allow_admin_rpcs": "removed; admin RPCs now need a caller with the 'admin' role: "
    "an API key created with `infershield keys create --role admin` (auth.keys_file), or, "
    "without keys, auth.anonymous_roles: [infer, scan, admin]",
}


def build(cls: type[T], data: Any, path: str = "") -> T:
    """Validate ``data`` (a mapping) against dataclass ``cls``; raise ConfigError on a misfit."""
    if not isinstance(data, Mapping):
        raise ConfigError(f"{path or 'config'}: expected a mapping, got {_tname(data)}")
    fields = {f.name: f for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    hints = typing.get_type_hints(cls)
    kwargs: dict[str, Any] = {}
    for key, value in data.items():
        where = f"{path}.{key}" if path else str(key)
        if key not in fields:
            if where in REMOVED_FIELDS:
                raise ConfigError(f"{where}: {REMOVED_FIELDS[where]}")
            known = ", ".join(sorted(fields))
            raise ConfigError(f"{where}: unknown field (known: {known})")
        kwargs[key] = _coerce(hints[key], value, where)
    try:
        return cls(**kwargs)
    except TypeError as exc:  # a missing required field
        raise ConfigError(f"{path or 'config'}: {exc}") from None
    except OptionError as exc:  # a value out of range, named by the dataclass
        where = f"{path}.{exc.field}" if path else exc.field
        raise ConfigError(f"{where}: {exc.message}") from None
    except ValueError as exc:  # any other check in a dataclass's __post_init__
        raise ConfigError(f"{path or 'config'}: {exc}") from None


def _coerce(tp: Any, value: Any, where: str) -> Any:
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if tp is Any:
        return value
    if origin is typing.Union or origin is types.UnionType:
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _coerce(arg, value, where)
            except ConfigError as exc:
                errors.append(exc.message)
        raise ConfigError(errors[0] if errors else f"{where}: invalid value")
    if origin is Literal:
        if value not in args:
            raise ConfigError(f"{where}: must be one of {list(args)}, got {value!r}")
        return value
    if dataclasses.is_dataclass(tp) and isinstance(tp, type):
        return build(tp, value, where)
    if origin in (tuple, list):
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{where}: expected a list, got {_tname(value)}")
        item_t = args[0] if args else Any
        items = [_coerce(item_t, v, f"{where}[{i}]") for i, v in enumerate(value)]
        return tuple(items) if origin is tuple else items
    if origin is dict:
        if not isinstance(value, Mapping):
            raise ConfigError(f"{where}: expected a mapping, got {_tname(value)}")
        val_t = args[1] if len(args) == 2 else Any
        return {str(k): _coerce(val_t, v, f"{where}.{k}") for k, v in value.items()}
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{where}: expected true/false, got {value!r}")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{where}: expected an integer, got {value!r}")
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{where}: expected a number, got {value!r}")
        try:
            return float(value)
        except OverflowError:  # an integer literal past the float range
            raise ConfigError(f"{where}: number out of range") from None
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(f"{where}: expected a string, got {value!r}")
        return value
    if isinstance(tp, type) and not isinstance(value, tp):
        raise ConfigError(f"{where}: expected {tp.__name__}, got {_tname(value)}")
    return value


def _tname(v: Any) -> str:
    return "null" if v is None else type(v).__name__


# --------------------------------------------------------------------------- loading


def default_policy_path(name: str = "default") -> Path:
    """Path of a policy shipped in the package (``default``, ``rules_only`` …)."""
    return Path(str(resources.files("infershield") / "policies" / f"{name}.yaml"))


def read_yaml(path: str | Path) -> dict[str, Any]:
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"cannot read config {p}: {exc.strerror}") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError(yaml_error(p, exc)) from None
    if data is None:
        raise ConfigError(f"{p}: the file is empty")
    if not isinstance(data, dict):
        raise ConfigError(f"{p}: top level must be a mapping")
    return data


def yaml_error(path: str | Path, exc: yaml.YAMLError) -> str:
    """``FILE:LINE:COLUMN: invalid YAML: problem``: names the file, not PyYAML's stream."""
    mark = getattr(exc, "problem_mark", None)
    where = f"{path}:{mark.line + 1}:{mark.column + 1}" if mark is not None else str(path)
    problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
    context = getattr(exc, "context", None)
    return f"{where}: invalid YAML: {problem}" + (f" ({context})" if context else "")


def env_sources(env: Mapping[str, str]) -> dict[str, str]:
    """The dotted config field each ``INFERSHIELD_…`` variable sets -> the variable's name."""
    return {".".join(p.lower() for p in key[len(ENV_PREFIX) :].split("__")): key
            for key in env if key.startswith(ENV_PREFIX) and "__" in key}


def name_env_source(exc: ConfigError, env: Mapping[str, str],
                    shadowed: Collection[str] = ()) -> ConfigError:
    """``exc`` prefixed with the environment variable that set the field it names, if any:
    ``INFERSHIELD_LIMITS__MAX_BATCH: limits.max_batch: unknown field``. Fields in
    ``shadowed`` (set again by a command-line flag) are not the variable's doing."""
    for field_path, var in sorted(env_sources(env).items(), key=lambda kv: -len(kv[0])):
        if field_path in shadowed:
            continue
        rest = exc.message[len(field_path):]
        if exc.message.startswith(field_path) and rest[:1] in (":", ".", "["):
            return ConfigError(f"{var}: {exc.message}")
    return exc


def env_overrides(env: Mapping[str, str]) -> dict[str, Any]:
    """``INFERSHIELD_SERVER__LISTEN=0.0.0.0:9000`` -> ``{"server": {"listen": ...}}``.

    Values are parsed as YAML scalars, so ``true``, ``8`` and ``0.5`` get their types.
    """
    out: dict[str, Any] = {}
    for key, raw in env.items():
        if not key.startswith(ENV_PREFIX) or "__" not in key:
            continue
        parts = [p.lower() for p in key[len(ENV_PREFIX) :].split("__")]
        try:
            value = yaml.safe_load(raw) if raw != "" else ""
        except yaml.YAMLError:
            value = raw
        _set_dotted(out, parts, value)
    return out


def _set_dotted(target: dict[str, Any], parts: list[str], value: Any) -> None:
    for p in parts[:-1]:
        nxt = target.setdefault(p, {})
        if not isinstance(nxt, dict):
            nxt = target[p] = {}
        target = nxt
    target[parts[-1]] = value


def deep_merge(base: dict[str, Any], over: Mapping[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for k, v in over.items():
        if isinstance(v, Mapping) and isinstance(out.get(k), dict):
            out[k] = deep_merge(out[k], v)
        else:
            out[k] = v
    return out


def load_config(
    path: str | Path | None = None,
    *,
    env: Mapping[str, str] | None = None,
    overrides: Mapping[str, Any] | None = None,
) -> Config:
    """Load the config with precedence defaults < file < env < ``overrides`` (CLI flags).

    The defaults are the shipped default policy (the one ``make serve`` uses). A user's file
    layers over them field by field: a file that only sets ``server.listen`` keeps every
    default check. A list (``policy.input``) given in the file replaces the default list.
    ``overrides`` takes dotted keys: ``{"server.listen": "127.0.0.1:9000"}``.
    """
    data = read_yaml(default_policy_path())
    if path is not None:
        data = deep_merge(data, read_yaml(path))
    data = deep_merge(data, env_overrides(os.environ if env is None else env))
    if overrides:
        nested: dict[str, Any] = {}
        for dotted, value in overrides.items():
            if value is not None:
                _set_dotted(nested, dotted.split("."), value)
        data = deep_merge(data, nested)
    try:
        cfg = build(Config, data)
        validate(cfg)
    except ConfigError as exc:
        shadowed = {k for k, v in (overrides or {}).items() if v is not None}
        raise name_env_source(exc, os.environ if env is None else env, shadowed) from None
    return cfg


def validate(cfg: Config) -> None:
    """Cross-field checks that the types alone cannot express."""
    from infershield.checks.base import known_types

    for stage in ("input", "output", "untrusted"):
        for i, spec in enumerate(getattr(cfg.policy, stage) or ()):
            if spec.type not in known_types():
                raise ConfigError(
                    f"policy.{stage}[{i}].type: unknown check type {spec.type!r} "
                    f"(known: {', '.join(known_types())})"
                )
    _validate_output_policy(cfg.policy)
    if cfg.backend.kind == "triton" and not cfg.backend.upstream:
        raise ConfigError("backend.upstream: required when backend.kind is 'triton'")
    if not 0.0 <= cfg.telemetry.sample_ratio <= 1.0:
        raise ConfigError("telemetry.sample_ratio: must be within [0, 1]")
    lim = cfg.limits
    for name in (
        "max_request_bytes",
        "max_text_bytes",
        "max_batch_elements",
        "max_input_tokens",
        "max_output_tokens",
        "max_concurrency",
    ):
        if getattr(lim, name) <= 0:
            raise ConfigError(f"limits.{name}: must be positive")
    # ``not 0 < x < inf`` also rejects NaN, which every comparison lets through.
    if not 0 < lim.deadline_s < float("inf"):
        raise ConfigError("limits.deadline_s: must be a positive, finite number of seconds")
    if lim.max_queue < 0:
        raise ConfigError("limits.max_queue: must not be negative")
    if not 0 < lim.check_budget_s < float("inf"):
        raise ConfigError("limits.check_budget_s: must be a positive, finite number of seconds")
    if lim.quarantine_after_blocks < 0:
        raise ConfigError("limits.quarantine_after_blocks: 0 (off) or a positive count")
    for name in ("quarantine_window_s", "quarantine_s"):
        if not 0 < getattr(lim, name) < float("inf"):
            raise ConfigError(f"limits.{name}: must be a positive, finite number of seconds")
    if not 0 <= lim.rate_per_s < float("inf") or lim.rate_burst < 0:
        raise ConfigError("limits.rate_per_s/rate_burst: 0 (off) or a positive, finite number")
    _validate_abuse(cfg)
    be = cfg.backend
    if cfg.server.max_message_bytes <= 0:
        raise ConfigError("server.max_message_bytes: must be positive")
    if be.workers < 1:
        raise ConfigError("backend.workers: must be at least 1")
    if be.worker_memory_mb < 0 or be.worker_cpu_seconds < 0:
        raise ConfigError("backend.worker_memory_mb/worker_cpu_seconds: 0 (off) or positive")
    if not 0 < be.timeout_s < float("inf"):
        raise ConfigError("backend.timeout_s: must be a positive, finite number of seconds")
    _check_hostport(cfg.server.listen, "server.listen")
    procs = cfg.server.processes
    if procs != "auto" and not 1 <= procs <= MAX_PROCESSES:
        raise ConfigError(
            f"server.processes: 'auto' or 1 to {MAX_PROCESSES}, got {procs!r}"
        )
    if cfg.server.metrics_listen not in ("", "auto"):
        _check_hostport(cfg.server.metrics_listen, "server.metrics_listen")
    _check_not_empty(cfg.policy)
    _validate_access(cfg)


def _validate_access(cfg: Config) -> None:
    srv, auth = cfg.server, cfg.auth
    for name in ("allow_cidrs", "trusted_proxies"):
        for i, cidr in enumerate(getattr(srv, name)):
            try:
                ipaddress.ip_network(cidr, strict=False)
            except ValueError:
                raise ConfigError(
                    f"server.{name}[{i}]: expected an address or CIDR, got {cidr!r}"
                ) from None
    if bool(srv.tls.cert) != bool(srv.tls.key):
        raise ConfigError("server.tls.cert/key: set both (PEM certificate chain and key) or none")
    if srv.tls.client_ca and not srv.tls.cert:
        raise ConfigError("server.tls.client_ca: mTLS needs server.tls.cert and key as well")
    btls = cfg.backend.tls
    if bool(btls.cert) != bool(btls.key):
        raise ConfigError("backend.tls.cert/key: set both (client certificate and key) or none")
    for i, role in enumerate(auth.anonymous_roles):
        if role not in ROLES:
            raise ConfigError(f"auth.anonymous_roles[{i}]: unknown role {role!r} (known: "
                              f"{', '.join(ROLES)})")
    for i, svc in enumerate(auth.public):
        if svc not in PUBLIC_SERVICES:
            raise ConfigError(f"auth.public[{i}]: unknown service {svc!r} (known: "
                              f"{', '.join(PUBLIC_SERVICES)})")
    authenticated = bool(auth.keys_file or srv.tls.client_ca)
    if not authenticated and not is_loopback(srv.listen.rpartition(":")[0]) and not srv.insecure:
        raise ConfigError(
            f"server.listen: {srv.listen} is reachable from other hosts and nobody is "
            "authenticated; set auth.keys_file (API keys) or server.tls.client_ca (mTLS), "
            "or server.insecure: true to serve it open anyway"
        )


def is_loopback(host: str) -> bool:
    """Whether a listen host only accepts local connections (``localhost``, 127/8, ::1)."""
    host = host.strip("[]")
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False  # another host name: it may resolve to anything


def _check_not_empty(policy: PolicyConfig) -> None:
    """A stage with no enabled check screens nothing: an error unless asked for explicitly."""
    for stage in ("input", "output"):
        if any(spec.enabled for spec in getattr(policy, stage)):
            continue
        if not policy.allow_empty:
            raise ConfigError(
                f"policy.{stage}: no enabled check; an empty pipeline screens nothing. "
                "Set policy.allow_empty: true to run without screening on purpose"
            )
        log.warning(
            "policy.%s has no enabled check and policy.allow_empty is true: "
            "%s traffic is NOT screened",
            stage,
            stage,
        )


ANOMALY_FEATURES = ("request_rate", "input_size", "block_rate", "score", "error_rate")
ANOMALY_ACTIONS = ("log", "webhook", "quarantine")


def _positive(value: float, where: str, *, zero_ok: bool = False) -> None:
    ok = (value >= 0 if zero_ok else value > 0) and value < float("inf")
    if not ok:  # also rejects NaN
        what = "0 or a positive" if zero_ok else "a positive"
        raise ConfigError(f"{where}: must be {what}, finite number")


def _validate_abuse(cfg: Config) -> None:
    """``ratelimit``, ``anomaly`` and the audit trail's durability fields."""
    rl = cfg.ratelimit
    specs = {f"ratelimit.models.{m}": s for m, s in rl.models.items()}
    specs["ratelimit.default"] = rl.default
    if rl.loopback is not None:
        specs["ratelimit.loopback"] = rl.loopback
    for where, spec in specs.items():
        for f in dataclasses.fields(spec):
            _positive(getattr(spec, f.name), f"{where}.{f.name}", zero_ok=True)
    lim = cfg.limits
    if lim.rate_per_s > 0 and rl.default.requests_per_s > 0:
        raise ConfigError(
            "limits.rate_per_s: replaced by ratelimit.default.requests_per_s (and "
            "limits.rate_burst by ratelimit.default.requests_burst); set only the new field"
        )
    if rl.backend == "redis" and not rl.redis_url.startswith(("redis://", "rediss://", "unix://")):
        raise ConfigError(
            f"ratelimit.redis_url: expected redis://HOST:PORT/DB, got {rl.redis_url!r}"
        )
    for name in ("redis_timeout_s", "retry_interval_s"):
        _positive(getattr(rl, name), f"ratelimit.{name}")
    _positive(rl.error_grace_s, "ratelimit.error_grace_s", zero_ok=True)
    if rl.replicas < 1:
        raise ConfigError("ratelimit.replicas: must be at least 1")
    an = cfg.anomaly
    if not 0 < an.alpha < 1:
        raise ConfigError("anomaly.alpha: must be within (0, 1)")
    if an.warmup < 1 or an.max_callers < 1:
        raise ConfigError("anomaly.warmup/max_callers: must be at least 1")
    for name in ("z", "window_s", "quarantine_s"):
        _positive(getattr(an, name), f"anomaly.{name}")
    for name in ("min_rel_std", "cooldown_s"):
        _positive(getattr(an, name), f"anomaly.{name}", zero_ok=True)
    actions = {f"anomaly.responses.{k}": v for k, v in an.responses.items()}
    actions["anomaly.default_response"] = an.default_response
    for feature in an.responses:
        if feature not in ANOMALY_FEATURES:
            known = ", ".join(ANOMALY_FEATURES)
            raise ConfigError(f"anomaly.responses.{feature}: unknown feature (known: {known})")
    for where, acts in actions.items():
        for i, act in enumerate(acts):
            if act not in ANOMALY_ACTIONS:
                raise ConfigError(
                    f"{where}[{i}]: unknown action {act!r} (known: {', '.join(ANOMALY_ACTIONS)})"
                )
            url_ok = an.webhook.url.startswith(("http://", "https://"))
            if act == "webhook" and an.enabled and not url_ok:
                raise ConfigError(
                    f"anomaly.webhook.url: {where}[{i}] sends alerts, so an http(s) URL is required"
                )
    wh = an.webhook
    for name in ("timeout_s", "backoff_s"):
        _positive(getattr(wh, name), f"anomaly.webhook.{name}")
    if wh.retries < 0 or wh.queue_size < 1:
        raise ConfigError("anomaly.webhook.retries/queue_size: retries >= 0, queue_size >= 1")
    au = cfg.audit
    _positive(au.fsync_interval_s, "audit.fsync_interval_s")
    _positive(au.rotate_s, "audit.rotate_s", zero_ok=True)
    if au.rotate_bytes < 0:
        raise ConfigError("audit.rotate_bytes: 0 (off) or a positive size in bytes")


#: Largest ``policy.stream_holdback_chars``: past it a stream would barely stream.
MAX_STREAM_HOLDBACK_CHARS = 65536


def _validate_output_policy(p: PolicyConfig) -> None:
    if p.untrusted is not None and not any(s.enabled for s in p.untrusted):
        raise ConfigError(
            "policy.untrusted: must hold at least one enabled check; leave it out for the "
            "default (the input checks plus the indirect-injection rules)"
        )
    if not 0 <= p.stream_holdback_chars <= MAX_STREAM_HOLDBACK_CHARS:
        raise ConfigError(
            f"policy.stream_holdback_chars: 0 (derived from the output checks) up to "
            f"{MAX_STREAM_HOLDBACK_CHARS}, got {p.stream_holdback_chars}"
        )
    for model, prompt in p.system_prompts.items():
        if not model:
            raise ConfigError("policy.system_prompts: a model name must not be empty")
        if not prompt.strip():
            raise ConfigError(f"policy.system_prompts.{model}: must not be empty")
    if p.system_prompt_tensor and p.text_tensors and p.system_prompt_tensor not in p.text_tensors:
        raise ConfigError(
            f"policy.system_prompt_tensor: {p.system_prompt_tensor!r} is not one of "
            "policy.text_tensors, so it would not be screened"
        )
    leak = [s for s in p.output if s.type == "prompt_leak"]
    if p.canary and leak and not any(s.enabled for s in leak):
        raise ConfigError("policy.canary: needs the prompt_leak output check, which is disabled")


def _check_hostport(value: str, where: str) -> None:
    host, sep, port = value.rpartition(":")
    if not sep or not host or not (port.isascii() and port.isdigit()) or not 0 <= int(port) < 65536:
        raise ConfigError(f"{where}: expected HOST:PORT, got {value!r}")
