"""``template_tokens``: chat-template control tokens inside user text.

``<|im_start|>system``, ``[INST]``, ``<|eot_id|>`` … let a user forge turns of the
conversation (a fake system message) once the prompt is templated. The native analyzer finds
them in the normalised text, so zero-width splits and fullwidth look-alikes are caught too.
Text that merely *discusses* these tokens is blocked as well: an upstream tokenizer may turn
them into real control tokens whatever the intent; list such tokens in ``allowed`` if needed.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from infershield.checks.analysis import AnalysisCheck
from infershield.config import OptionError
from infershield.native import TEMPLATE_TOKENS, Analysis
from infershield.verdict import Verdict


@dataclass(frozen=True, kw_only=True)
class TemplateTokenOptions:
    """Options of the ``template_tokens`` check."""

    #: Tokens (canonical spelling, as in ``infershield.native.TEMPLATE_TOKENS``) to tolerate.
    allowed: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        unknown = sorted(set(self.allowed) - set(TEMPLATE_TOKENS))
        if unknown:
            raise OptionError("allowed", f"unknown template tokens {unknown}")


class TemplateTokenCheck(AnalysisCheck):
    """Blocks text that contains chat-template special tokens."""

    Options = TemplateTokenOptions
    CATEGORY: ClassVar[str] = "template_injection"
    REASON: ClassVar[str] = "chat-template control tokens in text"

    options: TemplateTokenOptions

    def _verdict(self, a: Analysis) -> Verdict:
        found = [t for t in a.template_tokens if t not in self.options.allowed]
        if not found:
            return self.allow()
        return self.block(
            self.REASON,
            1.0,
            categories=(self.CATEGORY,),
            details=(("tokens", ",".join(found)),),
        )
