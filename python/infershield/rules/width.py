"""How many characters a rule can match: the hold-back a streamed output needs for it."""

from __future__ import annotations

import re
import warnings
from collections.abc import Iterable

from infershield.rules.packs import Rule

#: Characters counted past the shortest match of a rule with no upper bound (``\S+``). Such
#: a match is usually found by its first characters and then held back as it grows (see
#: :mod:`infershield.stream`), so its shortest form is what must fit in the hold-back.
UNBOUNDED_SLACK = 64
_HS_HEX = re.compile(r"\\x\{([0-9a-fA-F]{1,6})\}")


def pattern_width(pattern: str) -> tuple[int, int | None]:
    """(shortest, longest) match of a Hyperscan pattern, in characters; longest is None when
    unbounded or when the pattern uses syntax Python's parser does not know."""
    import re._parser as sre_parse  # the stdlib's own parser: widths without matching

    py = _HS_HEX.sub(lambda m: f"\\U{int(m.group(1), 16):08x}", pattern)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            lo, hi = sre_parse.parse(py).getwidth()
    except (re.error, RecursionError, OverflowError, ValueError):
        return 0, None
    return int(lo), (int(hi) if hi < sre_parse.MAXREPEAT else None)


def max_match_chars(rules: Iterable[Rule]) -> int | None:
    """The longest text any of ``rules`` needs before it is recognised (see
    :data:`UNBOUNDED_SLACK`); None when a pattern cannot be measured."""
    longest = 0
    for rule in rules:
        lo, hi = pattern_width(rule.pattern)
        if hi is None and lo == 0:
            return None
        longest = max(longest, hi if hi is not None else lo + UNBOUNDED_SLACK)
    return longest
