"""Structured logs: one JSON object per line, stamped with the current trace and span ids.

Fields: ``ts`` (RFC 3339, UTC, milliseconds), ``level``, ``logger``, ``msg``, ``trace_id``
and ``span_id`` (hex, present inside a sampled or propagated span), ``exc`` for
exceptions, and any ``extra={...}`` keys. Raw prompt or completion text never reaches the
output unless ``telemetry.log_prompts`` is on: extras named in :data:`PROMPT_FIELDS` are
replaced by their length.
"""

from __future__ import annotations

import json
import logging
import sys
import time
from typing import Any, TextIO

from opentelemetry import trace

from infershield.config import TelemetryConfig
from infershield.errors import ConfigError

#: ``extra`` keys that may hold user text; redacted unless ``log_prompts`` is set.
PROMPT_FIELDS = frozenset({"prompt", "text", "texts", "completion", "output_text", "input_text"})

# Attributes every LogRecord has; anything else on a record came from ``extra``.
_RESERVED = frozenset(
    vars(logging.LogRecord("", 0, "", 0, "", None, None)).keys()
    | {"message", "asctime", "taskName"}
)


def _trace_ids() -> tuple[str, str] | None:
    ctx = trace.get_current_span().get_span_context()
    if not ctx.is_valid:
        return None
    return format(ctx.trace_id, "032x"), format(ctx.span_id, "016x")


def _redact(value: Any) -> str:
    n = len(value) if isinstance(value, (str, bytes, list, tuple)) else 0
    return f"<redacted len={n}>"


class JsonFormatter(logging.Formatter):
    """Formats a record as one JSON line (see the module docstring for the fields)."""

    def __init__(self, *, log_prompts: bool = False) -> None:
        super().__init__()
        self.log_prompts = log_prompts

    def format(self, record: logging.LogRecord) -> str:
        ts = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
        out: dict[str, Any] = {
            "ts": f"{ts}.{int(record.msecs):03d}Z",
            "level": record.levelname,
            "logger": record.name,
            "msg": record.getMessage(),
        }
        ids = _trace_ids()
        if ids is not None:
            out["trace_id"], out["span_id"] = ids
        for key, value in vars(record).items():
            if key in _RESERVED or key in out or key.startswith("_"):
                continue
            out[key] = value if self.log_prompts or key not in PROMPT_FIELDS else _redact(value)
        if record.exc_info:
            out["exc"] = self.formatException(record.exc_info)
        if record.stack_info:
            out["stack"] = self.formatStack(record.stack_info)
        return json.dumps(out, default=str, ensure_ascii=False)


class TextFormatter(logging.Formatter):
    """Human-readable lines for a terminal, with the trace id when there is one."""

    def __init__(self, *, log_prompts: bool = False) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s: %(message)s")
        self.log_prompts = log_prompts

    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record)
        extras = {
            k: (v if self.log_prompts or k not in PROMPT_FIELDS else _redact(v))
            for k, v in vars(record).items()
            if k not in _RESERVED and not k.startswith("_")
        }
        if extras:
            line += " " + " ".join(f"{k}={v}" for k, v in extras.items())
        ids = _trace_ids()
        if ids is not None:
            line += f" trace_id={ids[0]}"
        return line


class _InfershieldHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """Marks the handler :func:`setup_logging` installed, so a second call replaces it."""


def setup_logging(
    config: TelemetryConfig, *, stream: TextIO | None = None, exclusive: bool = False
) -> logging.Handler:
    """Send every log record (root logger) to ``stream`` (stderr) as JSON or text lines.

    Idempotent: a second call replaces the handler the first one installed. ``exclusive``
    also removes plain ``StreamHandler``s (``logging.basicConfig``'s), so a server's stderr
    holds only structured lines; other handlers (files, test capture) are left alone.
    Returns the installed handler.
    """
    level = logging.getLevelName(config.log_level.upper())
    if not isinstance(level, int):
        raise ConfigError(f"telemetry.log_level: unknown level {config.log_level!r}")
    root = logging.getLogger()
    for h in list(root.handlers):
        if isinstance(h, _InfershieldHandler) or (exclusive and type(h) is logging.StreamHandler):
            root.removeHandler(h)
    handler = _InfershieldHandler(stream if stream is not None else sys.stderr)
    fmt_cls = JsonFormatter if config.log_format == "json" else TextFormatter
    handler.setFormatter(fmt_cls(log_prompts=config.log_prompts))
    root.addHandler(handler)
    root.setLevel(level)
    return handler
