"""Base for checks that judge the shared native token analysis of a text."""

from __future__ import annotations

import abc
from collections.abc import Sequence
from typing import ClassVar

from infershield.checks.base import Check, CheckContext
from infershield.native import Analysis, analyses_for, analysis_for
from infershield.verdict import Verdict


class AnalysisCheck(Check):
    """A check whose verdict is a pure function of the text's :class:`Analysis`.

    The analysis is computed once per text (memo key ``"analysis"``) and shared by every such
    check and the signatures check; batches go through one native ``analyze_batch`` call.
    """

    runs_inline: ClassVar[bool] = True  # native analysis, GIL released

    def check(self, ctx: CheckContext) -> Verdict:
        return self._verdict(analysis_for(ctx))

    def check_batch(self, ctxs: Sequence[CheckContext]) -> list[Verdict]:
        return [self._verdict(a) for a in analyses_for(ctxs)]

    @abc.abstractmethod
    def _verdict(self, a: Analysis) -> Verdict:
        """Judge one analysis."""
