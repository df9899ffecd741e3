"""``secrets``: API keys, tokens, private keys and JWTs, found and redacted (or blocked).

Built on the ``secrets`` span pack: provider token families (prefix, length, alphabet and
checksum where the format has one), keyword-anchored generic credentials, credentials in
URLs, JWTs and private keys. A private-key block is redacted from its BEGIN line to its END
line, or to the end of the text when the END line is missing (fail closed).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar, Literal

from infershield.checks.output.pii import Mode, SpanRuleCheck

Severity = Literal["low", "medium", "high", "critical"]


@dataclass(frozen=True, kw_only=True)
class SecretsOptions:
    """Options of the ``secrets`` check."""

    action: Literal["block", "redact"] = "redact"
    #: Kinds to detect (``aws_access_key``, ``github_token``, ``private_key``, ``jwt`` …);
    #: empty means every kind in ``packs``.
    detectors: tuple[str, ...] = ()
    packs: tuple[str, ...] = ("secrets",)
    min_severity: Severity = "low"
    mode: Mode = "placeholder"
    #: Environment variable holding the key for ``mode: hash`` (required in that mode).
    hash_key_env: str = "INFERSHIELD_REDACTION_KEY"


class SecretsCheck(SpanRuleCheck):
    """Finds and redacts (or blocks) credentials."""

    runs_inline: ClassVar[bool] = True  # native scan, GIL released

    Options: ClassVar[type[Any]] = SecretsOptions
    LABEL: ClassVar[str] = "secret"
