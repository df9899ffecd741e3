"""Validators run in Python on the candidate spans Hyperscan finds.

Hyperscan finds candidates fast but cannot compute checksums or parse numbers; these
functions turn a candidate into a finding only when it is plausibly real (a Luhn-valid card
number in a known IIN range, an IBAN valid in the ISO 13616 registry, a phone number that
``phonenumbers`` calls valid for one of the configured regions …). That is what keeps order
numbers, dates, version strings and placeholders from being redacted.

Two shapes of validator exist:

* **exact** (:data:`VALIDATOR_FUNCS`): ``candidate -> bool`` on one matched span; the span
  detector tries the longest end of each match first.
* **region** (:data:`REGION_VALIDATORS`): ``(text, start, end, opts) -> [(s, e), ...]`` on a
  region where the rule's matches overlap; they see the whole text (for context such as an
  IBAN head before a card-like run) and may return several findings (two phone numbers in a
  row) or a narrower span (only the value of ``password = "…"``).
"""

from __future__ import annotations

import base64
import binascii
import ipaddress
import json
import math
import re
import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

Span = tuple[int, int]

#: Regions tried, in order, for phone numbers written without a country code.
DEFAULT_PHONE_REGIONS: tuple[str, ...] = (
    "US",
    "GB",
    "DE",
    "FR",
    "ES",
    "IT",
    "NL",
    "IN",
    "CN",
    "JP",
    "PH",
    "TR",
    "IL",
    "BR",
    "AU",
    "MX",
)


@dataclass(frozen=True, slots=True)
class ValidatorOptions:
    """Per-check settings the validators read (only phones have some today)."""

    phone_regions: tuple[str, ...] = DEFAULT_PHONE_REGIONS


DEFAULT_OPTIONS = ValidatorOptions()


def _digits(text: str) -> str:
    return "".join(c for c in text if c.isdigit())


# --------------------------------------------------------------------------- cards


def _luhn_ok(digits: str) -> bool:
    total = 0
    for i, ch in enumerate(reversed(digits)):
        d = int(ch)
        if i % 2 == 1:
            d = d * 2 - 9 if d > 4 else d * 2
        total += d
    return total % 10 == 0


# (first digits range, lengths). Visa, Mastercard (51-55, 2221-2720), Amex, Diners,
# Discover, JCB, UnionPay, Maestro, Mir, RuPay, Troy, Verve (ISO/IEC 7812 IIN ranges).
_IIN: tuple[tuple[int, int, frozenset[int]], ...] = tuple(
    (lo, hi, frozenset(lens))
    for lo, hi, lens in (
        (4, 4, (13, 16, 19)),
        (51, 55, (16,)),
        (2221, 2720, (16,)),
        (34, 34, (15,)),
        (37, 37, (15,)),
        (300, 305, (14, 16, 17, 18, 19)),
        (36, 36, (14, 16, 17, 18, 19)),
        (38, 39, (14, 16, 17, 18, 19)),
        (6011, 6011, (16, 17, 18, 19)),
        (644, 649, (16, 17, 18, 19)),
        (65, 65, (16, 17, 18, 19)),
        (3528, 3589, (16, 17, 18, 19)),
        (62, 62, (16, 17, 18, 19)),
        (50, 50, (12, 13, 14, 15, 16, 17, 18, 19)),
        (56, 69, (12, 13, 14, 15, 16, 17, 18, 19)),
        (2200, 2204, (16, 17, 18, 19)),
        (60, 60, (16,)),
        (9792, 9792, (16,)),
        (506099, 506198, (16, 18, 19)),
    )
)


def _iin_ok(digits: str) -> bool:
    n = len(digits)
    for lo, hi, lens in _IIN:
        width = len(str(lo))
        if n in lens and lo <= int(digits[:width]) <= hi:
            return True
    return False


def luhn(candidate: str) -> bool:
    """A card number: 12-19 digits (spaces/dashes allowed) in a known IIN range, Luhn-valid."""
    digits = _digits(candidate)
    if not 12 <= len(digits) <= 19 or len(set(digits)) == 1:
        return False
    return _iin_ok(digits) and _luhn_ok(digits)


# Card-like runs: digit groups joined by one space or dash (one kind of separator per number).
_CARD_RUN = re.compile(r"(?<![\w.,/-])\d[\d -]{10,24}\d(?![\w/]|[.,-]\d)")
_IBAN_HEAD = re.compile(r"[A-Za-z]{2}\d{2}[ -]?(?:[A-Za-z0-9]{1,4}[ -]?)*$")


def _card_groups(run: str) -> list[Span]:
    return [(m.start(), m.end()) for m in re.finditer(r"\d+", run)]


def card_region(text: str, start: int, end: int, opts: ValidatorOptions) -> list[Span]:
    """Every card number in a run of digit groups, never one that is part of an IBAN."""
    out: list[Span] = []
    for m in _CARD_RUN.finditer(text, max(0, start - 1), min(len(text), end + 1)):
        s0 = m.start()
        # Digits right after an IBAN head ("DE89 3704 …") belong to the IBAN, valid or not.
        head = text[max(0, s0 - 40) : s0]
        if _IBAN_HEAD.search(head) and re.search(r"[A-Za-z]{2}\d{2}", head):
            continue
        run = m.group()
        seps = {c for c in run if not c.isdigit()}
        if len(seps) > 1 or "  " in run or "--" in run:
            continue
        groups = _card_groups(run)
        i = 0
        while i < len(groups):
            for j in range(len(groups), i, -1):
                a, b = groups[i][0], groups[j - 1][1]
                # A card cut out of a longer run ("order 12 4111…") must be long; a short
                # Luhn-valid tail of "1234-5678-9012-3456" is no card.
                if (i > 0 or j < len(groups)) and len(_digits(run[a:b])) < 15:
                    continue
                if luhn(run[a:b]):
                    out.append((s0 + a, s0 + b))
                    i = j
                    break
            else:
                i += 1
    return out


# --------------------------------------------------------------------------- IBAN


def iban(candidate: str) -> bool:
    """An IBAN valid in the ISO 13616 registry (country, length, BBAN format, mod-97)."""
    from stdnum import iban as std_iban

    s = re.sub(r"[ -]", "", candidate).upper()
    if len(s) < 15 or not s[:2].isalpha() or not s[2:4].isdigit() or not s.isalnum():
        return False
    return bool(std_iban.is_valid(s))


_IBAN_RUN = re.compile(r"(?<![A-Za-z0-9])[A-Za-z]{2}\d{2}(?:[ -]?[A-Za-z0-9]){11,40}")


def iban_region(text: str, start: int, end: int, opts: ValidatorOptions) -> list[Span]:
    """IBANs, with or without space/dash groups; trailing words are trimmed off."""
    out: list[Span] = []
    for m in _IBAN_RUN.finditer(text, max(0, start - 1), min(len(text), end + 1)):
        run = m.group()
        cuts = [g.end() for g in re.finditer(r"[A-Za-z0-9]+", run)]
        for cut in reversed(cuts):
            if iban(run[:cut]):
                out.append((m.start(), m.start() + cut))
                break
    return out


# --------------------------------------------------------------------------- SSN


def us_ssn(candidate: str) -> bool:
    """A US SSN outside the ranges the SSA never issues (area 000/666/9xx, group 00,
    serial 0000) and not one of the famous advertising numbers."""
    d = _digits(candidate)
    if len(d) != 9:
        return False
    area, group, serial = d[:3], d[3:5], d[5:]
    if area in ("000", "666") or area[0] == "9" or group == "00" or serial == "0000":
        return False
    return d not in ("078051120", "219099999", "123456789")


_SSN = re.compile(r"(?<![\w.\-/])(\d{3})([ .\-/]?)(\d{2})\2(\d{4})(?![\w\-/]|[.,]\d)")


def ssn_region(text: str, start: int, end: int, opts: ValidatorOptions) -> list[Span]:
    """SSNs written 123-45-6789, 123 45 6789, 123.45.6789 (one separator kind) or, after an
    SSN keyword (the pattern anchors it), 123456789."""
    out: list[Span] = []
    for m in _SSN.finditer(text, start, end):
        if not m.group(2) and not re.search(
            r"(?i)(ssn|social security|soc\. ?sec)", text[max(0, m.start() - 40) : m.start()]
        ):
            continue
        if us_ssn(m.group()):
            out.append((m.start(), m.end()))
    return out


# --------------------------------------------------------------------------- IP addresses


def ipv4(candidate: str) -> bool:
    """A dotted-quad IPv4 address with every octet in range and no leading zeros."""
    parts = candidate.split(".")
    if len(parts) != 4:
        return False
    for p in parts:
        if not p.isdigit() or (len(p) > 1 and p[0] == "0") or int(p) > 255:
            return False
    # 0.0.0.0 and loopback addresses identify nobody.
    return candidate != "0.0.0.0" and parts[0] != "127"


_VERSION_BEFORE = re.compile(
    r"(?i)(\bv|\bversion|\brelease|\bbuild|\bver\.?|\bchapter|\bsection|§|\bfigure|"
    r"\btable|\bstep|\bclause|\boid)\s?$"
)
_IPV4 = re.compile(r"(?<![\w.])\d{1,3}\.\d{1,3}\.\d{1,3}\.\d{1,3}(?!\w|\.\d)")


def ipv4_region(text: str, start: int, end: int, opts: ValidatorOptions) -> list[Span]:
    """IPv4 addresses not glued to more dotted numbers and not written as a version."""
    out: list[Span] = []
    for m in _IPV4.finditer(text, max(0, start - 1), min(len(text), end + 1)):
        if _VERSION_BEFORE.search(text[max(0, m.start() - 10) : m.start()]):
            continue
        if ipv4(m.group()):
            out.append((m.start(), m.end()))
    return out


def ipv6(candidate: str) -> bool:
    """A valid IPv6 address (``ipaddress``), not the unspecified or loopback address."""
    if "%" in candidate:
        candidate = candidate.split("%", 1)[0]
    try:
        addr = ipaddress.IPv6Address(candidate)
    except ValueError:
        return False
    return not (addr.is_unspecified or addr.is_loopback)


_IPV6 = re.compile(
    r"(?<![\w:.])[0-9A-Fa-f:]*:[0-9A-Fa-f:.]*(?:[0-9A-Fa-f]|::)(?![\w:]|\.\d)"
)


def ipv6_region(text: str, start: int, end: int, opts: ValidatorOptions) -> list[Span]:
    """IPv6 addresses; a run with a bad group (``12345:db8::1``) is rejected whole, not
    trimmed to a valid-looking tail."""
    out: list[Span] = []
    for m in _IPV6.finditer(text, max(0, start - 1), min(len(text), end + 1)):
        cand = m.group()
        if cand.count(":") >= 2 and ipv6(cand):
            out.append((m.start(), m.end()))
    return out


# --------------------------------------------------------------------------- phones

# Dates and times are never phone numbers, nor are dotted versions with short groups.
_DATE_SHAPES = (
    re.compile(r"^\d{4}[-./ ]\d{1,2}[-./ ]\d{1,2}(?:[ T]\d{1,2}(?:[:.]\d{2}){1,2})?$"),
    re.compile(r"^\d{1,2}[-./ ]\d{1,2}[-./ ]\d{2,4}(?:[ T]\d{1,2}(?:[:.]\d{2}){1,2})?$"),
    re.compile(r"^\d{4}[-/]\d{1,2}$|^\d{1,2}[-/]\d{4}$"),
)
_PHONE_CONTEXT = re.compile(
    r"(?i)(phone|tel\b|tel\.|telephone|call|mobile|cell|fax|whats ?app|sms|text me|dial|"
    r"contact|reach me|ring|hotline|numéro|teléfono|telefone|telefon|tél|"
    r"móvil|celular|handy|телефон|電話|电话|手机|전화|☎|📞|📱)"
)
_DATE_HEAD = re.compile(
    r"^(\d{4}[-./](0?[1-9]|1[0-2])[-./]\d{1,2}|\d{1,2}[-./]\d{1,2}[-./](19|20)\d\d)(\D|$)"
)
_IP_SHAPE = re.compile(r"^\d{1,3}(\.\d{1,3}){3}$")
_NANP = re.compile(
    r"^(\+?1[ .\-]?)?(\([2-9]\d{2}\) ?|[2-9]\d{2}[ .\-])\d{3}[ .\-]\d{4}$"
)
# 123-45-6789 is how SSNs are written, never phone numbers.
_SSN_SHAPE = re.compile(r"^\d{3}([-. ])\d{2}\1\d{4}$")
_PHONE_GROUP = re.compile(r"\+?\(?\d+\)?")
_PHONE_SEPS = frozenset(" -./\t")


def _ascii_word(ch: str) -> bool:
    return ch.isascii() and (ch.isalnum() or ch == "_")


def _date_like(cand: str) -> bool:
    for shape in _DATE_SHAPES:
        if shape.match(cand):
            parts = [int(p) for p in re.findall(r"\d+", cand)[:3]]
            months = [p for p in parts if 1 <= p <= 12]
            if months and all(0 <= p <= 9999 for p in parts):
                return True
    return False


def _version_like(cand: str, before: str) -> bool:
    if "." not in cand or any(c in cand for c in " -()+"):
        return False
    groups = cand.split(".")
    # 06.12.34.56.78 (French style) has even groups; 10.0.19041.1 and 3.2.1 do not.
    return (
        bool(_VERSION_BEFORE.search(before))
        or any(len(g) == 1 for g in groups)
        or len({len(g) for g in groups}) > 2
    )


@lru_cache(maxsize=4096)
def _phone_valid(cand: str, regions: tuple[str, ...]) -> bool:
    import phonenumbers

    digits = _digits(cand)
    if not 7 <= len(digits) <= 15:
        return False
    international = cand.startswith("+") or cand.startswith("00")
    tries: Sequence[str | None] = (None,) if cand.startswith("+") else regions
    if cand.startswith("00"):
        cand = "+" + cand[2:].lstrip()
        tries = (None,)
    for region in tries:
        try:
            num = phonenumbers.parse(cand, region)
        except phonenumbers.NumberParseException:
            continue
        if phonenumbers.is_valid_number(num):
            if international:
                return True
            # A national number must also be grouped as that region writes it (or more
            # coarsely): "2024 2025 2026" may parse somewhere, but nobody writes it so.
            national = phonenumbers.format_number(num, phonenumbers.PhoneNumberFormat.NATIONAL)
            if _grouping_fits(cand, national):
                return True
        if international:
            return False
    return False


def _boundaries(text: str) -> tuple[str, set[int]]:
    digits, cuts, n = [], set(), 0
    for ch in text:
        if ch.isdigit():
            digits.append(ch)
            n += 1
        elif n:
            cuts.add(n)
    return "".join(digits), cuts


def _grouping_fits(cand: str, formatted: str) -> bool:
    """Every digit-group boundary of ``cand`` is one of ``formatted`` (same digits)."""
    cd, cc = _boundaries(cand)
    fd, fc = _boundaries(formatted)
    # Different digits: the region's trunk prefix (GB 0…, DE 0…) was left out, which
    # nobody does when writing a national number; "123-456-7890" is no GB 01234 567890.
    return cd == fd and (cc - {len(cd)}) <= fc


def phone(candidate: str) -> bool:
    """A phone number ``phonenumbers`` calls valid (with a country code, or for one of the
    default regions)."""
    return _phone_valid(candidate.strip(), DEFAULT_PHONE_REGIONS) and not _date_like(candidate)


def _phone_ok(text: str, a: int, b: int, opts: ValidatorOptions) -> bool:
    cand = text[a:b]
    if _DATE_HEAD.match(cand) or _IP_SHAPE.match(cand):
        return False
    if b + 1 < len(text) and text[b] == ":" and text[b + 1].isdigit():
        return False  # 2024-01-15 10:30: a time follows
    if _NANP.match(cand):
        return True  # US/Canada layout with valid-looking area and exchange (555 too)
    if _SSN_SHAPE.match(cand) or _date_like(cand) or _version_like(cand, text[max(0, a - 10) : a]):
        return False
    separated = any(c in _PHONE_SEPS or c in "()" for c in cand) or cand.startswith("+")
    # A bare digit run is an order or invoice number unless it is introduced as a phone
    # (or starts with a trunk prefix and validates in a default region).
    if (
        not separated
        and not cand.startswith("0")
        and not _PHONE_CONTEXT.search(text[max(0, a - 40) : a])
    ):
        return False
    return _phone_valid(cand, opts.phone_regions)


def phone_region(text: str, start: int, end: int, opts: ValidatorOptions) -> list[Span]:
    """Every phone number in a run of digit groups: from each group, the longest run of
    following groups that validates, so two numbers in a row are two findings."""
    lo = max(0, start - 2)
    groups = [(m.start(), m.end()) for m in _PHONE_GROUP.finditer(text, lo, min(len(text), end))]
    out: list[Span] = []
    i = 0
    while i < len(groups):
        # Groups chain while separated by at most two separator characters.
        chain = [groups[i]]
        for g in groups[i + 1 :]:
            gap = text[chain[-1][1] : g[0]]
            if len(gap) > 2 or any(c not in _PHONE_SEPS for c in gap) or len(chain) >= 8:
                break
            chain.append(g)
        a = chain[0][0]
        # The group must not continue a word or a longer number (a1234…, 12.34.56.78.90.1).
        if a > 0 and (
            _ascii_word(text[a - 1]) or (text[a - 1] in ".-/" and a > 1 and text[a - 2].isdigit())
        ):
            i += 1
            continue
        # Only a number that announces itself (+, 00, trunk 0, parentheses) may be cut out of
        # a longer run of groups; "4111 1111" inside a card-like run is not a phone.
        lead = text[a]
        # Mid-run ("4539 1488 0343 6468"), only a + or ( starts a new number.
        if lead not in "+(" and re.search(r"\d[ .\-/]{1,2}$", text[max(0, a - 3) : a]):
            i += 1
            continue
        splittable = lead in "+(" or lead == "0"
        for j in range(len(chain), 0 if splittable else len(chain) - 1, -1):
            b = chain[j - 1][1]
            if b < len(text) and _ascii_word(text[b]):
                continue
            if b + 1 < len(text) and text[b] in ".-/" and text[b + 1].isdigit():
                continue
            if _phone_ok(text, a, b, opts):
                out.append((a, b))
                i += j
                break
        else:
            i += 1
    return out


# --------------------------------------------------------------------------- postal codes

_US_STATES = frozenset(
    [
        "AL",
        "AK",
        "AZ",
        "AR",
        "CA",
        "CO",
        "CT",
        "DE",
        "FL",
        "GA",
        "HI",
        "ID",
        "IL",
        "IN",
        "IA",
        "KS",
        "KY",
        "LA",
        "ME",
        "MD",
        "MA",
        "MI",
        "MN",
        "MS",
        "MO",
        "MT",
        "NE",
        "NV",
        "NH",
        "NJ",
        "NM",
        "NY",
        "NC",
        "ND",
        "OH",
        "OK",
        "OR",
        "PA",
        "RI",
        "SC",
        "SD",
        "TN",
        "TX",
        "UT",
        "VT",
        "VA",
        "WA",
        "WV",
        "WI",
        "WY",
        "DC",
        "PR",
    ]
)
_UK_POSTCODE = re.compile(
    r"^(GIR ?0AA|[A-PR-UWYZ](\d[A-HJKPSTUW]?|\d\d|[A-HK-Y]\d[ABEHMNPRVWXY]?|[A-HK-Y]\d\d)"
    r" ?\d[ABD-HJLNP-UW-Z]{2})$"
)
_CA_POSTAL = re.compile(r"^[ABCEGHJ-NPRSTVXY]\d[ABCEGHJ-NPRSTV-Z] ?\d[ABCEGHJ-NPRSTV-Z]\d$")


_POSTAL_KEYWORD = re.compile(
    r"(?i)^(zip|postal|post ?code|plz|code postal|cep|cap)( code)?[ :#]{0,3}"
)
_STATE_ZIP = re.compile(r"^([A-Z]{2}),? (\d{5}(?:-\d{4})?)$")


def _word_edge(text: str, a: int, b: int) -> bool:
    """Nothing alphanumeric (ASCII) glued to either end of ``text[a:b]``."""
    before = text[a - 1] if a > 0 else " "
    after = text[b] if b < len(text) else " "
    return not (before.isascii() and before.isalnum()) and not (after.isascii() and after.isalnum())


def postal_region(text: str, start: int, end: int, opts: ValidatorOptions) -> list[Span]:
    """UK and Canadian postcodes by their format; US ZIP codes after a state abbreviation;
    other codes (4-6 digits, 12-345, 123 45) only after a postal-code keyword."""
    cand = text[start:end]
    m = _STATE_ZIP.match(cand)
    if m:
        if m.group(1) in _US_STATES and _word_edge(text, start, end):
            return [(start + m.start(2), start + m.end(2))]
        return []
    if _UK_POSTCODE.match(cand) or _CA_POSTAL.match(cand):
        return [(start, end)] if _word_edge(text, start, end) else []
    k = _POSTAL_KEYWORD.match(cand)
    if k is None:
        return []
    rest = cand[k.end() :]
    code = re.match(
        r"\d{5}-\d{4}|\d{2}-\d{3}|\d{3} \d{2}|\d{4,6}|[A-Z]{1,2}\d[A-Z0-9]? ?\d[A-Z]{2}|"
        r"[A-Z]\d[A-Z] ?\d[A-Z]\d",
        rest,
    )
    if code is None:
        return []
    a = start + k.end() + code.start()
    b = start + k.end() + code.end()
    return [(a, b)] if _word_edge(text, a, b) else []


# --------------------------------------------------------------------------- tokens

_BASE62 = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
# Words that mark a value as a stand-in, not a credential (found case-insensitively).
_PLACEHOLDER_WORDS: tuple[str, ...] = (
    "xxx", "***", "...", "…", "changeme", "change_me", "change-me", "example", "sample",
    "dummy", "placeholder", "insert", "fake", "redacted", "replaceme", "replace_me",
    "replace-me", "notreal", "not_a_real", "not-a-real", "todo", "secret_here", "key_here",
    "token_here", "abcdefgh", "12345678", "qwerty", "asdfgh", "000000", "111111",
)  # fmt: skip
# Stand-ins with structure: template references, <angle> names, "your ... key".
_PLACEHOLDER_SHAPES = re.compile(
    r"your[_\- ]?[a-z_\-]{0,16}(key|token|secret|password|pass)|<[a-z_][\w\- ]*>|"
    r"\$\{[a-z_][\w.:\-]*\}|\{\{ *[\w.\- ]+ *\}\}|%\([a-z_]+\)s|here$"
)
# Whole values that stand in for one.
_PLACEHOLDER_WHOLE = re.compile(
    r"\$[A-Z_][A-Z0-9_]*|%[A-Z_]+%|<.*|\[.*\]|\$[{(].*|\{\{.*|%\(.*|(?i:null|none|nil|"
    r"undefined|true|false|password|secret|token|pass|passwd|string|str)"
)


def placeholder(value: str) -> bool:
    """True for values that stand in for a credential (``xxx``, ``<your-key>``,
    ``${VAR}``, ``changeme``, ``insert_key_here``, ``a-fake-api-key`` …)."""
    low = value.lower()
    for word in _PLACEHOLDER_WORDS:
        if word in low:
            return True
    if ("your" in low or "<" in low or "{" in low or "%(" in low or low.endswith("here")) and (
        _PLACEHOLDER_SHAPES.search(low)
    ):
        return True
    return _PLACEHOLDER_WHOLE.fullmatch(value) is not None


def _low_variety(value: str) -> bool:
    """Too few distinct characters for its length (``aaaa…``, ``abab…``), judged on the
    first 48 characters; ascending runs (``abcdefgh``, ``12345678``) are placeholder words."""
    head = value[:48]
    return len(set(head)) < min(6, max(3, len(head) // 3))


def shannon(value: str) -> float:
    """Shannon entropy in bits per character."""
    if not value:
        return 0.0
    counts: dict[str, int] = {}
    for c in value:
        counts[c] = counts.get(c, 0) + 1
    n = len(value)
    return -sum(k / n * math.log2(k / n) for k in counts.values())


def token(candidate: str) -> bool:
    """A provider token: its random part is neither a placeholder nor low-variety."""
    return not placeholder(candidate) and not _low_variety(candidate)


def _crc_tail_ok(body: str, tail: str) -> bool:
    value = 0
    for c in tail:
        idx = _BASE62.find(c)
        if idx < 0:
            return False
        value = value * 62 + idx
    return value == zlib.crc32(body.encode("ascii"))


def github_crc(candidate: str) -> bool:
    """GitHub (``ghp_`` …) and npm (``npm_``) tokens: 30 random base62 characters and a
    6-character base62 CRC32 of them."""
    rest = candidate.partition("_")[2]
    if len(rest) != 36 or not rest.isascii() or not rest.isalnum():
        return False
    return _crc_tail_ok(rest[:30], rest[30:]) and token(rest)


def discord(candidate: str) -> bool:
    """A Discord bot token: base64 of a numeric user id, a timestamp, an HMAC."""
    first = candidate.split(".", 1)[0]
    try:
        uid = base64.urlsafe_b64decode(first + "=" * (-len(first) % 4)).decode("ascii")
    except (binascii.Error, ValueError, UnicodeDecodeError):
        return False
    return uid.isdigit() and 15 <= len(uid) <= 21 and token(candidate)


def _b64_json(segment: str) -> Any:
    try:
        raw = base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4))
        return json.loads(raw)
    except (binascii.Error, ValueError, UnicodeDecodeError):
        return None


def jwt(candidate: str) -> bool:
    """A JWT: a header that decodes to a JSON object with ``alg`` or ``typ`` and a payload
    that decodes to a JSON object; the signature may be missing (unsigned ``alg: none``)."""
    parts = candidate.rstrip(".").split(".")
    if len(parts) not in (2, 3):
        return False
    head = _b64_json(parts[0])
    if not isinstance(head, dict) or not ({"alg", "typ", "kid", "enc"} & set(head)):
        return False
    body = _b64_json(parts[1])
    return isinstance(body, dict) or len(parts) == 3


# --------------------------------------------------------------------------- credentials

# Words after the keyword that turn the name into metadata about a credential.
_META_SUFFIX = re.compile(
    r"(?i)^[_\-.]?(id|ids|name|names|type|types|file|files|path|url|uri|endpoint|length|len|"
    r"count|size|limit|max|min|field|prompt|label|hint|policy|expiry|expires|expiration|ttl|"
    r"timeout|header|param|params|env|var|location|dir|format|regex|pattern|mode|version|"
    r"budget|usage|rotation|provider|store|manager|strategy|validator|input|class|kind|"
    r"description|scope|scopes|index|ref|reset|confirm|confirmation|policy|rules|required)"
    r"(?![a-z])"
)
_CREDENTIAL = re.compile(
    r"(?P<key>(?i:pass(?:word|wd|phrase)?|pwd|secret|token|api[_\-. ]?key|apikey|"
    r"access[_\-. ]?key|auth[_\-. ]?(?:key|token)|private[_\-. ]?key|client[_\-. ]?secret|"
    r"credentials?|signing[_\-. ]?key|encryption[_\-. ]?key|master[_\-. ]?key|"
    r"session[_\-. ]?key|secret[_\-. ]?key|account[_\-. ]?key|app[_\-. ]?key|"
    r"license[_\-. ]?key|[_\-.]key|[_\-]pat)(?P<suffix>[A-Za-z0-9_.\-]{0,30}))"
    r"(?P<close>\[\]|[\"'`]?\]?)[ \t]{0,5}(?P<op>:=|=>|===|==|!=|=|:|->|>)[ \t]{0,5}@?"
    r"(?:(?P<q>[\"'`])(?P<qv>[^\"'`\r\n]{1,200})(?P=q)|(?P<v>[^\s\"'`,;<>)\]}]{1,200}))"
)
# Where a keyword may start inside a candidate region (the full pattern is tried there only).
_CREDENTIAL_KEY = re.compile(r"(?i)pass|pwd|secret|token|api|access|auth|private|client|"
                             r"credential|signing|encryption|master|session|account|app|"
                             r"license|[_\-.]key|[_\-]pat")
_CODE_LIKE = re.compile(
    r"^[A-Za-z_$][\w$]*(\.[A-Za-z_$][\w$]*)+(\(.*)?$|[()\[\]]|^[A-Z_][A-Z0-9_]*$|"
    r"^(https?|ftp|file)://|^/[\w./-]+$|^\./|^~/|^-?\d+(\.\d+)?$|^[a-z]+(-[a-z]+)+$"
)


def _classes(value: str) -> int:
    return (
        any(c.islower() for c in value)
        + any(c.isupper() for c in value)
        + any(c.isdigit() for c in value)
        + any(not c.isalnum() for c in value)
    )


def credential_value(value: str, *, quoted: bool) -> bool:
    """The value of ``name = value`` is a credential: long and varied enough, not a
    placeholder, and (unquoted) not an expression, path or identifier. A value in a
    provider's token format is left to that provider's rule, which knows its length and
    checksum (a mistyped ``ghp_`` token under ``GITHUB_TOKEN=`` is not a finding)."""
    if placeholder(value) or _low_variety(value) or _PROVIDER_FORMAT.match(value):
        return False
    if _WORDS.match(value):
        return False
    if any(c.isspace() for c in value) and not quoted:
        return False
    if quoted:
        if len(value) < 6:
            return False
        if value.count(" ") > 1:
            # A passphrase, not a sentence: digits or symbols besides the spaces.
            return _classes(value.replace(" ", "")) >= 3 and value.count(" ") <= 4
        return _classes(value) >= 2 or (len(value) >= 12 and shannon(value) >= 3.0)
    if len(value) < 6 or _CODE_LIKE.search(value):
        return False
    return _classes(value) >= 2 and shannon(value) >= 2.5


# Values that a provider rule owns (prefixes of the secrets pack) or that are public keys.
_PROVIDER_FORMAT = re.compile(
    r"^(gh[pousr]_|github_pat_|gl(pat|dt|ptt|rt|rtr|cbt|imt|agent|oas|ft|soat|ffct|wt)-|"
    r"GR1348941|npm_|pypi-|SG\.|xox[a-z]-|xapp-|xoxe\.|AKIA|ASIA|A3T|AIza|GOCSPX-|ya29\.|"
    r"sq0[a-z]{3}-|EAAA|hf_|api_org_|sk-|[sr]k_(live|test|prod)_|pk_(live|test)_|whsec_|"
    r"shp(at|ca|pa|ss)_|ATATT|ATCTT|ATBB|do[opr]_v1_|HRKU-|dapi[0-9a-f]*$|sl\.|PMAK-|"
    r"lin_(api|oauth)_|ntn_|glsa_|glc_|NR(AK|II|JS|RA)-|dp\.(pt|st|sa|ct)\.|pul-|hv[sbr]\.|"
    r"sntry[su]_|sbp_|dckr_|AKCp|LTAI|AGE-SECRET-KEY|key-[0-9a-f]*$|SK[0-9a-fA-F]*$|"
    r"r8_|gsk_|xai-|pplx-|lsv2_|pcsk_|nf[pc]_|eyJ|[\w-]+\.[\w-]{6}\.[\w-]{27})"
)
# Identifier-like words joined by separators (key-value, hf_hub_download, bert-base-uncased).
_WORDS = re.compile(r"^([a-z]+([_\-.][a-z]+)+|[A-Z]+([_\-.][A-Z]+)+)$")


def _keyword_boundary(key: str, suffix: str) -> bool:
    # tokenizer, passages, secretary: the keyword runs on into another word.
    if suffix and suffix[0].isalpha() and suffix[0].islower():
        if suffix[0] == "s" and (len(suffix) == 1 or not suffix[1].isalpha()):
            return not _META_SUFFIX.match(suffix[1:])
        return False
    return not _META_SUFFIX.match(suffix)


def credential_region(text: str, start: int, end: int, opts: ValidatorOptions) -> list[Span]:
    """Values of ``password = "…"``, ``API_KEY: …``, ``"token": "…"``, ``secret := "…"``,
    ``if (pwd == "…")`` …; only the value is the finding."""
    out: list[Span] = []
    limit = min(len(text), end + 220)
    for k in _CREDENTIAL_KEY.finditer(text, start, end):
        m = _CREDENTIAL.match(text, k.start(), limit)
        if m is None:
            continue
        if not _keyword_boundary(m.group("key"), m.group("suffix")):
            continue
        op = m.group("op")
        if op == "->" and not m.group("q"):
            continue
        # <password>value</password>: ">" counts only after an opening tag.
        if op == ">" and text[max(0, m.start() - 1) : m.start()] != "<":
            continue
        quoted = m.group("q") is not None
        grp = "qv" if quoted else "v"
        value = m.group(grp)
        if not quoted:
            if op in ("==", "===", "!="):
                continue  # password == other_variable: a comparison, not a value
            value = value.rstrip(":.")
        if op == "!=":
            continue
        if op == ">" and not text.startswith("</", m.end(grp)):
            continue
        if credential_value(value, quoted=quoted):
            out.append((m.start(grp), m.start(grp) + len(value)))
    return out


_URL_CRED = re.compile(
    r"(?i)\b[a-z][a-z0-9+.\-]{1,20}://(?P<user>[^\s:/@\"'<>]{1,64}):(?P<pw>[^\s/@\"'<>]{1,128})@"
    r"[a-z0-9\[]"
)


_URL_PLACEHOLDER = re.compile(
    r"^<.*>$|^\$\{.*\}$|^\$[A-Za-z_]\w*$|^\{\{.*\}\}$|^%[sd(]|^\*+$|^x{3,}$|^\.{3}$|^…$|"
    r"^%[A-Z_]+%$|^(?i:your[_\-]?pass(word)?)$"
)


def url_credentials_region(text: str, start: int, end: int, opts: ValidatorOptions) -> list[Span]:
    """``scheme://user:password@host``: the ``user:password`` part, unless the password is a
    placeholder (``<password>``, ``${DB_PASS}``, ``****``)."""
    out: list[Span] = []
    for m in _URL_CRED.finditer(text, max(0, start - 1), min(len(text), end + 1)):
        pw = m.group("pw")
        # user:pass@host counts (the issue's own example); only stand-ins do not.
        if _URL_PLACEHOLDER.search(pw) or len(set(pw)) < 2:
            continue
        out.append((m.start("user"), m.end("pw")))
    return out


_CLI_CRED = re.compile(
    r"(?:(?<=\s)-u|--user)[ =][\"']?[^\s:\"']+:(?P<pw>[^\s\"']+)|"
    r"\bmysql\b[^\n]*?\s-p(?P<mpw>[^\s\"']+)"
)


def cli_credentials_region(
    text: str, start: int, end: int, opts: ValidatorOptions
) -> list[Span]:
    """Passwords on command lines: ``curl -u user:pw``, ``--user user:pw``, ``mysql -pPW``."""
    out: list[Span] = []
    for m in _CLI_CRED.finditer(text, max(0, start - 1), min(len(text), end + 200)):
        if m.start() > end:
            break
        grp = "pw" if m.group("pw") is not None else "mpw"
        pw = m.group(grp)
        if len(pw) >= 6 and _classes(pw) >= 2 and not placeholder(pw) and not _low_variety(pw):
            out.append((m.start(grp), m.end(grp)))
    return out


_PEM_END = re.compile(r"-{4,5} ?END [A-Z0-9 ]*PRIVATE KEY(?: BLOCK)? ?-{4,5}")
_PEM_BODY = re.compile(
    r"(?:\\[rn]|\s)*(?:[A-Za-z\-]+: [^\n\\]*(?:\\[rn]|\s)+)*"
    r"(?:[A-Za-z0-9+/=]{16}|MI[A-Za-z0-9+/]|b3Bl)"
)


def private_key_region(text: str, start: int, end: int, opts: ValidatorOptions) -> list[Span]:
    """A private-key block from its BEGIN line to its END line, or to the end of the text
    when the END line is missing (fail closed). A BEGIN line with no key material after it
    (prose, ``...``) is not a finding."""
    if not _PEM_BODY.match(text, end):
        return []
    m = _PEM_END.search(text, end)
    body = text[end : m.start() if m else len(text)]
    if placeholder(body.replace("\\n", "\n")) and len(re.sub(r"[^A-Za-z0-9+/]", "", body)) < 64:
        return []
    return [(start, m.end() if m else len(text))]


_PUTTY_END = re.compile(r"Private-MAC: [0-9a-f]+")


def putty_key_region(text: str, start: int, end: int, opts: ValidatorOptions) -> list[Span]:
    """A PuTTY key file from its header to its ``Private-MAC`` line (or the end of text)."""
    m = _PUTTY_END.search(text, end)
    return [(start, m.end() if m else len(text))]


def email(candidate: str) -> bool:
    """An address with a well-formed local part (no leading, trailing or doubled dot) and
    domain labels that neither start nor end with a hyphen."""
    local, _, domain = candidate.rpartition("@")
    if not local or ".." in local or local.startswith(".") or local.endswith("."):
        return False
    labels = domain.split(".")
    return len(labels) >= 2 and all(
        lab and not lab.startswith("-") and not lab.endswith("-") for lab in labels
    )


def _always(_: str) -> bool:
    return True


VALIDATOR_FUNCS: dict[str, Callable[[str], bool]] = {
    "luhn": luhn,
    "iban": iban,
    "us_ssn": us_ssn,
    "ipv4": ipv4,
    "ipv6": ipv6,
    "jwt": jwt,
    "phone": phone,
    "email": email,
    "token": token,
    "github_crc": github_crc,
    "discord": discord,
    "none": _always,
}

RegionValidator = Callable[[str, int, int, ValidatorOptions], list[Span]]

#: Validators that see a whole region of overlapping matches (and the text around it).
REGION_VALIDATORS: dict[str, RegionValidator] = {
    "card": card_region,
    "iban_region": iban_region,
    "ssn": ssn_region,
    "ipv4_region": ipv4_region,
    "ipv6_region": ipv6_region,
    "phone_region": phone_region,
    "postal": postal_region,
    "credential": credential_region,
    "url_credentials": url_credentials_region,
    "cli_credentials": cli_credentials_region,
    "private_key": private_key_region,
    "putty_key": putty_key_region,
}
