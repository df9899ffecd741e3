"""The ``Check`` interface, the per-text context, and the one registry of check types."""

from __future__ import annotations

import abc
import importlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal, TypeVar

from infershield.verdict import Decision, Status, Verdict

Stage = Literal["input", "output"]
T = TypeVar("T")


@dataclass(slots=True)
class CheckContext:
    """One text under inspection, plus a per-text memo so checks share derived data.

    ``memo`` lets e.g. the native analysis (normalised text, decoded blobs) be computed
    once per text however many checks use it.
    """

    text: str
    stage: Stage = "input"
    model: str = ""
    metadata: Mapping[str, str] = field(default_factory=dict)
    memo: dict[str, Any] = field(default_factory=dict)

    def cached(self, key: str, compute: Callable[[], T]) -> T:
        if key not in self.memo:
            self.memo[key] = compute()
        value: T = self.memo[key]
        return value


@dataclass(frozen=True, kw_only=True)
class NoOptions:
    """Options of a check that takes none."""


class Check(abc.ABC):
    """One inspection of one text. Built once at start-up; ``check`` must be thread-safe.

    Heavy resources (Hyperscan databases, ONNX sessions) load in the constructor, never on
    the hot path. Subclasses set ``Options`` to a keyword-only dataclass; the config layer
    validates a policy's ``options:`` mapping against it, so a typo is a start-up error.
    """

    Options: ClassVar[type[Any]] = NoOptions
    #: Stages this check may be placed in.
    stages: ClassVar[tuple[Stage, ...]] = ("input", "output")
    #: Cheap enough (microseconds on small texts) to run on the server's event loop instead of
    #: a worker thread. Off unless a check opts in: a slow check must never stall the loop.
    runs_inline: ClassVar[bool] = False

    def __init__(self, name: str, options: Any = None) -> None:
        self.name = name
        self.options = options if options is not None else self.Options()

    @abc.abstractmethod
    def check(self, ctx: CheckContext) -> Verdict:
        """Inspect ``ctx.text`` and return a verdict. May raise: the pipeline handles it."""

    def check_batch(self, ctxs: Sequence[CheckContext]) -> list[Verdict]:
        """Inspect many texts; override where a batched path is faster (native, ONNX)."""
        return [self.check(ctx) for ctx in ctxs]

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release resources (sessions, worker threads)."""

    # Helpers so subclasses build verdicts uniformly.
    def allow(self, reason: str = "", score: float = 0.0, **kw: Any) -> Verdict:
        return Verdict(self.name, Decision.ALLOW, Status.OK, score, reason, **kw)

    def block(self, reason: str, score: float = 1.0, **kw: Any) -> Verdict:
        return Verdict(self.name, Decision.BLOCK, Status.OK, score, reason, **kw)

    def redact(self, reason: str, rewritten: str, score: float = 1.0, **kw: Any) -> Verdict:
        return Verdict(
            self.name, Decision.REDACT, Status.OK, score, reason, rewritten=rewritten, **kw
        )


# type name (as written in a policy) -> "module:Class". Resolved lazily so a policy that
# does not use the ONNX detector never imports onnxruntime.
_BUILTIN: dict[str, str] = {
    "signatures": "infershield.checks.input.signatures:SignatureCheck",
    "invisible_text": "infershield.checks.input.invisible_text:InvisibleTextCheck",
    "mixed_script": "infershield.checks.input.mixed_script:MixedScriptCheck",
    "encoded_payload": "infershield.checks.input.encoded_payload:EncodedPayloadCheck",
    "repetition": "infershield.checks.input.repetition:RepetitionCheck",
    "template_tokens": "infershield.checks.input.template_tokens:TemplateTokenCheck",
    "invalid_utf8": "infershield.checks.input.invalid_utf8:InvalidUtf8Check",
    "length": "infershield.checks.input.length:LengthCheck",
    "classifier": "infershield.checks.input.classifier:ClassifierCheck",
    "pii": "infershield.checks.output.pii:PiiCheck",
    "secrets": "infershield.checks.output.secrets:SecretsCheck",
    "ban_substrings": "infershield.checks.output.ban_substrings:BanSubstringsCheck",
}
_REGISTERED: dict[str, type[Check]] = {}


def register(type_name: str) -> Callable[[type[Check]], type[Check]]:
    """Register a third-party check class under ``type_name``."""

    def deco(cls: type[Check]) -> type[Check]:
        _REGISTERED[type_name] = cls
        return cls

    return deco


def known_types() -> list[str]:
    return sorted(set(_BUILTIN) | set(_REGISTERED))


def resolve(type_name: str) -> type[Check]:
    """Return the check class for a policy ``type``; raises ``KeyError`` if unknown."""
    if type_name in _REGISTERED:
        return _REGISTERED[type_name]
    target = _BUILTIN[type_name]
    module_name, _, attr = target.partition(":")
    cls: type[Check] = getattr(importlib.import_module(module_name), attr)
    return cls
