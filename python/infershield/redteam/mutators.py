"""Mutators: deterministic rewrites of a seed text that try to hide it from a firewall.

Each mutator has a ``name`` (``leetspeak``, ``pad_before_300``, ``spaced+json`` …) and a
``family`` (``spelling``, ``invisible``, ``encoding``, ``encoding_follow``, ``padding``,
``wrapper``, ``frame``, ``combo``; ``none`` is the seed itself). Randomness comes only from a
``random.Random`` seeded by the suite seed, the seed id and the mutator name, so a battery is
the same on every run and machine. The templates they use live in ``seeds/mutators.yaml``.
"""

from __future__ import annotations

import base64
import codecs
import json
import random
import urllib.parse
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources
from typing import Any

import yaml

from infershield.errors import ConfigError

#: Mutator families, in report order.
FAMILIES: tuple[str, ...] = (
    "none",
    "spelling",
    "invisible",
    "encoding",
    "encoding_follow",
    "padding",
    "wrapper",
    "frame",
    "combo",
)
#: Padding sizes, in (approximate) tokens.
PAD_TOKENS: tuple[int, ...] = (10, 300, 2000)

_LEET = {"a": "4", "e": "3", "i": "1", "o": "0", "s": "5", "t": "7"}
# Cyrillic and Greek letters that look like Latin ones.
_HOMOGLYPHS = {
    "a": "\u0430",
    "c": "\u0441",
    "e": "\u0435",
    "i": "\u0456",
    "o": "\u043e",
    "p": "\u0440",
    "x": "\u0445",
    "y": "\u0443",
    "s": "\u0455",
    "A": "\u0391",
    "E": "\u0395",
    "O": "\u039f",
    "T": "\u03a4",
}
_DIACRITICS = {
    "a": "áàâä",
    "e": "éèêë",
    "i": "íìîï",
    "o": "óòôö",
    "u": "úùûü",
    "n": "ñ",
    "c": "ç",
    "y": "ý",
}
_ZERO_WIDTH = ("\u200b", "\u200c", "\u00ad", "\u2060")

Transform = Callable[[str, random.Random], str]


@dataclass(frozen=True, slots=True)
class Mutator:
    """One named rewrite. ``benign_exempt`` marks forms that are suspicious by design (hidden
    tag characters, an instruction to decode or reassemble text and act on it): a benign
    text under them may be blocked, so they do not count toward the benign false-positive
    rate (the report shows them apart)."""

    name: str
    family: str
    apply: Transform
    benign_exempt: bool = False


@lru_cache(maxsize=1)
def mutator_data() -> dict[str, Any]:
    """The shipped templates (``seeds/mutators.yaml``)."""
    path = resources.files("infershield") / "redteam" / "seeds" / "mutators.yaml"
    data = yaml.safe_load(path.read_text(encoding="utf-8"))
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: top level must be a mapping")
    return data


# --------------------------------------------------------------------------- spelling


def leetspeak(text: str, rng: random.Random) -> str:
    """Letters replaced by look-alike digits (most of them, not all)."""
    return "".join(
        _LEET[c.lower()] if c.lower() in _LEET and rng.random() < 0.75 else c for c in text
    )


def _spell_out(text: str, letter_sep: str, word_sep: str) -> str:
    return word_sep.join(letter_sep.join(w) for w in text.split())


def spaced(text: str, rng: random.Random) -> str:
    """``i g n o r e   a l l``: a space between letters, three between words."""
    return _spell_out(text, " ", "   ")


def dotted(text: str, rng: random.Random) -> str:
    """``D.i.s.r.e.g.a.r.d a.l.l``: a dot (or dash) between letters, a space between words."""
    return _spell_out(text, rng.choice((".", ".", "-")), " ")


def fullwidth(text: str, rng: random.Random) -> str:
    """ASCII letters and punctuation in their full-width forms."""
    return "".join(
        chr(ord(c) + 0xFEE0) if "!" <= c <= "~" else "\u3000" if c == " " else c for c in text
    )


def homoglyph(text: str, rng: random.Random) -> str:
    """Latin letters swapped for Cyrillic/Greek look-alikes (most of them)."""
    return "".join(
        _HOMOGLYPHS[c] if c in _HOMOGLYPHS and rng.random() < 0.6 else c for c in text
    )


def diacritics(text: str, rng: random.Random) -> str:
    """Vowels (and n, c, y) with accents."""
    out = []
    for c in text:
        marks = _DIACRITICS.get(c)
        out.append(rng.choice(marks) if marks and rng.random() < 0.6 else c)
    return "".join(out)


def case_noise(text: str, rng: random.Random) -> str:
    """Random upper and lower case."""
    return "".join(c.upper() if rng.random() < 0.5 else c.lower() for c in text)


# -------------------------------------------------------------------------- invisible


def zero_width(text: str, rng: random.Random) -> str:
    """Zero-width spaces, joiners and soft hyphens between letters."""
    out = []
    for c in text:
        out.append(c)
        if c.isalpha() and rng.random() < 0.5:
            out.append(rng.choice(_ZERO_WIDTH))
    return "".join(out)


def tag_smuggle(text: str, rng: random.Random) -> str:
    """The text spelled in invisible Unicode tag characters after a harmless cover line
    (tags only spell ASCII: text in other scripts is smuggled as its base64)."""
    if not text.isascii():
        text = base64.b64encode(text.encode()).decode()
    hidden = "".join(chr(0xE0000 + ord(c)) for c in text if 0x20 <= ord(c) < 0x7F)
    return "Could you tell me a fun fact about octopuses?" + hidden


# --------------------------------------------------------------------------- encoding


def _encoders() -> dict[str, Callable[[str], str]]:
    return {
        "base64": lambda t: base64.b64encode(t.encode()).decode(),
        "hex": lambda t: t.encode().hex(),
        "rot13": lambda t: codecs.encode(t, "rot13"),
        "url": lambda t: urllib.parse.quote(t, safe=""),
        "reversed": lambda t: t[::-1],
    }


def _encoding(kind: str, follow: bool) -> Transform:
    encode = _encoders()[kind]

    def apply(text: str, rng: random.Random) -> str:
        data = mutator_data()
        template = data["encoding_follow"][kind] if follow else data["encoding_plain"]
        return str(template).format(payload=encode(text))

    return apply


# ---------------------------------------------------------------------------- padding


def padding(tokens: int, rng: random.Random) -> str:
    """Benign sentences adding up to about ``tokens`` tokens (0.75 words a token)."""
    pool: list[str] = mutator_data()["padding"]
    words_wanted = max(1, round(tokens * 0.75))
    out: list[str] = []
    words = 0
    while words < words_wanted:
        sentence = rng.choice(pool)
        if words_wanted - words < len(sentence.split()):
            sentence = " ".join(sentence.split()[: words_wanted - words]) + "."
        out.append(sentence)
        words += len(sentence.split())
    return " ".join(out)


def _pad(where: str, tokens: int) -> Transform:
    def apply(text: str, rng: random.Random) -> str:
        if where == "before":
            return f"{padding(tokens, rng)} {text}"
        if where == "after":
            return f"{text} {padding(tokens, rng)}"
        half = max(tokens // 2, 5)
        return f"{padding(half, rng)} {text} {padding(half, rng)}"

    return apply


# ---------------------------------------------------------------------- wrappers, frames


def _wrapper(kind: str) -> Transform:
    def apply(text: str, rng: random.Random) -> str:
        template: str = mutator_data()["wrappers"][kind]
        # The payload is placed without str.format so braces in it are kept as they are.
        return template.replace("{payload_json}", json.dumps(text, ensure_ascii=False)).replace(
            "{payload}", text
        )

    return apply


def _frame(kind: str) -> Transform:
    def apply(text: str, rng: random.Random) -> str:
        template: str = mutator_data()["frames"][kind]
        return template.replace("{payload}", text)

    return apply


def split(text: str, rng: random.Random) -> str:
    """The text cut in two inside a word, with an instruction to join the parts."""
    cut = len(text) // 2
    template: str = mutator_data()["split"]
    return template.replace("{first}", text[:cut]).replace("{second}", text[cut:])


# --------------------------------------------------------------------------- registry


def _base_mutators() -> dict[str, Mutator]:
    muts = [Mutator("none", "none", lambda t, r: t)]
    for fn in (leetspeak, spaced, dotted, fullwidth, homoglyph, diacritics, case_noise):
        muts.append(Mutator(fn.__name__, "spelling", fn))
    muts.append(Mutator("zero_width", "invisible", zero_width))
    muts.append(Mutator("tag_smuggle", "invisible", tag_smuggle, benign_exempt=True))
    for kind in _encoders():
        muts.append(Mutator(kind, "encoding", _encoding(kind, False)))
    for kind in _encoders():
        muts.append(
            Mutator(f"{kind}_follow", "encoding_follow", _encoding(kind, True), benign_exempt=True)
        )
    for tokens in PAD_TOKENS:
        for where in ("before", "after", "around"):
            muts.append(Mutator(f"pad_{where}_{tokens}", "padding", _pad(where, tokens)))
    for kind in ("json", "markdown", "code_fence", "html_comment"):
        muts.append(Mutator(kind, "wrapper", _wrapper(kind)))
    muts.append(Mutator("split", "frame", split, benign_exempt=True))
    for kind in ("translate", "story", "poem"):
        muts.append(Mutator(kind, "frame", _frame(kind)))
    return {m.name: m for m in muts}


def combo(first: Mutator, second: Mutator) -> Mutator:
    """``first`` applied to the seed, then ``second`` to the result."""

    def apply(text: str, rng: random.Random) -> str:
        return second.apply(first.apply(text, rng), rng)

    return Mutator(
        f"{first.name}+{second.name}",
        "combo",
        apply,
        benign_exempt=first.benign_exempt or second.benign_exempt,
    )


@lru_cache(maxsize=1)
def registry() -> Mapping[str, Mutator]:
    """Every mutator by name: the base ones and the combinations in ``mutators.yaml``."""
    base = _base_mutators()
    out = dict(base)
    for pair in mutator_data().get("combos", []):
        first, second = pair
        if first not in base or second not in base:
            raise ConfigError(f"mutators.yaml: combos: unknown mutator in {pair}")
        m = combo(base[first], base[second])
        out[m.name] = m
    return out


def resolve(names: list[str] | str) -> list[Mutator]:
    """Mutators by name (``all`` for every one); a combination ``a+b`` may be named even if
    it is not listed in ``mutators.yaml``."""
    reg = registry()
    if names == "all":
        return list(reg.values())
    out = []
    for name in names:
        if name in reg:
            out.append(reg[name])
        elif "+" in name and all(p in reg for p in name.split("+", 1)):
            a, b = name.split("+", 1)
            out.append(combo(reg[a], reg[b]))
        else:
            raise ConfigError(f"unknown mutator {name!r} (known: {', '.join(reg)})")
    return out


def rng_for(suite_seed: int, seed_id: str, mutator: str) -> random.Random:
    """The deterministic random source of one (seed, mutator) case."""
    return random.Random(f"{suite_seed}:{seed_id}:{mutator}")
