"""What a text says, apart from the form it is written in: the content of a JSON document and
the sentence units that localised scoring judges one by one.

Pure functions of the text (no model, no native code), shared by the ``classifier`` check and
its benchmarks.
"""

from __future__ import annotations

import json
import re
from typing import Any

# Sentence ends (Latin and CJK punctuation, a colon or semicolon) followed by space, or a line
# break: where one unit ends and the next begins.
_UNIT_BREAK = re.compile(r"(?<=[.!?;:\u3002\uff01\uff1f])\s+|\n+")
#: A unit has at least this many words: shorter pieces join the next one, so a unit is a
#: clause that can say something ("Status: draft" alone cannot).
UNIT_MIN_WORDS = 4
_JSON_MAX_CHARS = 1 << 20
# The words of an identifier-style key: ``snake_case``, ``kebab-case``, ``dotted.name``,
# ``camelCase``.
_KEY_WORD_BREAK = re.compile(r"[\s_\-.]+|(?<=[a-z])(?=[A-Z])")


class _Pairs(list[tuple[str, Any]]):
    """A JSON object as all its (key, value) pairs: a repeated key keeps every value (the
    raw text, which the model behind the firewall reads, has them all)."""


def _key_prose(key: str) -> str:
    """``key`` as prose when it is some: several words as written, or an identifier of at
    least :data:`UNIT_MIN_WORDS` words (``ignore_all_previous_rules``); else empty."""
    if len(key.split()) > 1:  # a key of several words is prose, not an identifier
        return key.strip()
    words = [w for w in _KEY_WORD_BREAK.split(key) if w]
    return " ".join(words) if len(words) >= UNIT_MIN_WORDS else ""


def _json_strings(value: Any, out: list[str]) -> None:
    if isinstance(value, str):
        if value.strip():
            out.append(value.strip())
    elif isinstance(value, _Pairs):
        for k, v in value:
            prose = _key_prose(k)
            if prose:
                out.append(prose)
            _json_strings(v, out)
    elif isinstance(value, list):
        for v in value:
            _json_strings(v, out)


def content_view(text: str) -> str:
    """``text`` without the syntax of the structure around its prose: a text that is one JSON
    document becomes its string values, one per line (numbers, punctuation and one-word keys
    are syntax; a key of several words is kept). Any other text is returned as it is, and so
    is a document too deeply nested to walk.

    The classifier was trained on prose: it scores the syntax of a JSON request as suspicious
    whatever it carries (the benign battery's JSON-wrapped texts). HTML and markdown are left
    alone: stripping them moved as many cross-source benign rows above the threshold as below
    it, and the hiding place of an HTML comment is itself a signal.
    """
    stripped = text.strip()
    if stripped[:1] in ("{", "[") and len(stripped) <= _JSON_MAX_CHARS:
        out: list[str] = []
        try:
            _json_strings(json.loads(stripped, object_pairs_hook=_Pairs), out)
        except (ValueError, RecursionError):
            return text
        return "\n".join(out)
    return text


def sentence_units(text: str, min_words: int = UNIT_MIN_WORDS) -> list[str]:
    """The sentences (and lines) of ``text``, pieces under ``min_words`` words joined to the
    next one (a short tail to the last), in order."""
    units: list[str] = []
    cur = ""
    for part in _UNIT_BREAK.split(text):
        part = part.strip()
        if not part:
            continue
        cur = f"{cur} {part}" if cur else part
        if len(cur.split()) >= min_words:
            units.append(cur)
            cur = ""
    if cur:
        if units:
            units[-1] = f"{units[-1]} {cur}"
        else:
            units.append(cur)
    return units
