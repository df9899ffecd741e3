"""One typed configuration: defaults < YAML file < environment < CLI flags.

Every section is a frozen, keyword-only dataclass. :func:`build` validates a plain mapping
against a dataclass and raises :class:`~infershield.errors.ConfigError` naming the exact
field (``policy.input[2].options.threshold``) on an unknown key or a wrong type.
"""

from __future__ import annotations

import dataclasses
import os
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any, Literal, TypeVar

import yaml

from infershield.errors import ConfigError

T = TypeVar("T")
ENV_PREFIX = "INFERSHIELD_"


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
    #: Repository load/unload, shared-memory registration, trace/log settings.
    allow_admin_rpcs: bool = False


@dataclass(frozen=True, kw_only=True)
class ServerConfig:
    listen: str = "127.0.0.1:8001"
    #: gRPC transport limit; tritonclient may send up to 2 GiB, so the default is high and the
    #: firewall's own, lower, per-request limit is ``limits.max_request_bytes``.
    max_message_bytes: int = 2**31 - 1
    grace_period_s: float = 10.0
    metrics_listen: str = ""
    reflection: bool = True


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
    #: Per-caller (peer address) token bucket for screened calls; 0 turns it off.
    rate_per_s: float = 0.0
    #: Bucket size (burst); 0 means ``max(1, rate_per_s)``.
    rate_burst: int = 0
    #: Automated incident response: a caller (peer address) whose requests are blocked this
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


@dataclass(frozen=True, kw_only=True)
class Config:
    server: ServerConfig = field(default_factory=ServerConfig)
    backend: BackendConfig = field(default_factory=BackendConfig)
    policy: PolicyConfig = field(default_factory=PolicyConfig)
    limits: LimitsConfig = field(default_factory=LimitsConfig)
    telemetry: TelemetryConfig = field(default_factory=TelemetryConfig)
    audit: AuditConfig = field(default_factory=AuditConfig)
    #: Where compiled rule databases and built models are cached.
    cache_dir: str = ""

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
        raise ConfigError(f"{p}: invalid YAML: {exc}") from None
    if data is None:
        raise ConfigError(f"{p}: the file is empty")
    if not isinstance(data, dict):
        raise ConfigError(f"{p}: top level must be a mapping")
    return data


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

    With no ``path`` the shipped default policy (the one ``make serve`` uses) is the file.
    ``overrides`` takes dotted keys: ``{"server.listen": "127.0.0.1:9000"}``.
    """
    data = read_yaml(path if path is not None else default_policy_path())
    data = deep_merge(data, env_overrides(os.environ if env is None else env))
    if overrides:
        nested: dict[str, Any] = {}
        for dotted, value in overrides.items():
            if value is not None:
                _set_dotted(nested, dotted.split("."), value)
        data = deep_merge(data, nested)
    cfg = build(Config, data)
    validate(cfg)
    return cfg


def validate(cfg: Config) -> None:
    """Cross-field checks that the types alone cannot express."""
    from infershield.checks.base import known_types

    for stage in ("input", "output"):
        for i, spec in enumerate(getattr(cfg.policy, stage)):
            if spec.type not in known_types():
                raise ConfigError(
                    f"policy.{stage}[{i}].type: unknown check type {spec.type!r} "
                    f"(known: {', '.join(known_types())})"
                )
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
    be = cfg.backend
    if be.workers < 1:
        raise ConfigError("backend.workers: must be at least 1")
    if be.worker_memory_mb < 0 or be.worker_cpu_seconds < 0:
        raise ConfigError("backend.worker_memory_mb/worker_cpu_seconds: 0 (off) or positive")
    if not 0 < be.timeout_s < float("inf"):
        raise ConfigError("backend.timeout_s: must be a positive, finite number of seconds")
    _check_hostport(cfg.server.listen, "server.listen")
    if cfg.server.metrics_listen:
        _check_hostport(cfg.server.metrics_listen, "server.metrics_listen")


def _check_hostport(value: str, where: str) -> None:
    host, sep, port = value.rpartition(":")
    if not sep or not host or not (port.isascii() and port.isdigit()) or not 0 <= int(port) < 65536:
        raise ConfigError(f"{where}: expected HOST:PORT, got {value!r}")
