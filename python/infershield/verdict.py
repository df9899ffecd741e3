"""The result of one check: a decision kept apart from the check's own status."""

from __future__ import annotations

import enum
from dataclasses import dataclass, field


class Decision(str, enum.Enum):
    """What a check wants done with the text."""

    ALLOW = "allow"
    BLOCK = "block"
    REDACT = "redact"


class Status(str, enum.Enum):
    """Whether the check itself ran: a crashed check is never mistaken for an allowing one."""

    OK = "ok"
    ERROR = "error"
    SKIPPED = "skipped"


@dataclass(frozen=True, slots=True)
class Verdict:
    """One check's verdict on one text.

    ``score`` is always in [0, 1]; there are no sentinel values. ``categories`` names the
    attack/content families that fired (``injection``, ``pii`` …). ``rewritten`` holds the
    redacted text when ``decision`` is REDACT.
    """

    check: str
    decision: Decision
    status: Status = Status.OK
    score: float = 0.0
    reason: str = ""
    categories: tuple[str, ...] = ()
    rewritten: str | None = None
    elapsed_ms: float = 0.0
    details: tuple[tuple[str, str], ...] = field(default=())

    def __post_init__(self) -> None:
        if not 0.0 <= self.score <= 1.0:
            raise ValueError(f"score must be in [0, 1], got {self.score!r}")
        if self.decision is Decision.REDACT and self.rewritten is None:
            raise ValueError("a REDACT verdict needs the rewritten text")

    @property
    def blocked(self) -> bool:
        return self.decision is Decision.BLOCK

    def to_dict(self) -> dict[str, object]:
        """JSON-ready form used by ``infershield scan`` and the ``Scan`` RPC."""
        out: dict[str, object] = {
            "name": self.check,
            "decision": self.decision.value,
            "status": self.status.value,
            "score": round(self.score, 6),
            "reason": self.reason,
            "categories": list(self.categories),
            "elapsed_ms": round(self.elapsed_ms, 4),
        }
        if self.rewritten is not None:
            out["rewritten"] = self.rewritten
        if self.details:
            out["details"] = dict(self.details)
        return out
