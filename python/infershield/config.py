"""One typed configuration: defaults < YAML file < environment < CLI flags.

Every section is a frozen, keyword-only dataclass. :func:`build` validates a plain mapping
against a dataclass and raises :class:`~infershield.errors.ConfigError` naming the exact
field (``policy.input[2].options.threshold``) on an unknown key or a wrong type.
"""

from __future__ import annotations

import dataclasses
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
    #: Repository load/unload, shared-memory registration, trace/log settings.
    allow_admin_rpcs: bool = False
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


@dataclass(frozen=True, kw_only=True)
class ServerConfig:
    listen: str = "127.0.0.1:8001"
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
    def receive_limit_bytes(self) -> int:
        """gRPC's receive limit for client messages: the request budget plus framing.

        Anything larger is refused by the transport with RESOURCE_EXHAUSTED before the
        message is buffered, so one oversized request cannot balloon the server's memory.
        """
        return min(self.limits.max_request_bytes + FRAMING_BYTES, self.server.max_message_bytes)

    @property
    def cache_path(self) -> Path:
        if self.cache_dir:
            return Path(self.cache_dir).expanduser()
        base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
        return Path(base) / "infershield"


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
    if cfg.server.metrics_listen not in ("", "auto"):
        _check_hostport(cfg.server.metrics_listen, "server.metrics_listen")
    _check_not_empty(cfg.policy)


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
