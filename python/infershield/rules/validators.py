"""Checksum and range validators run in Python on the candidate spans Hyperscan finds.

Hyperscan finds candidates fast but cannot compute checksums; these functions turn a
candidate into a finding only when it is plausibly real (a Luhn-valid card number, an IBAN
whose mod-97 is 1 …), which is what keeps order numbers and timestamps from being redacted.
"""

from __future__ import annotations

import base64
import binascii
import ipaddress
import json
from collections.abc import Callable

# IBAN lengths per country (ISO 13616 registry, common subset of SEPA and beyond).
_IBAN_LENGTHS: dict[str, int] = {
    "AD": 24, "AE": 23, "AL": 28, "AT": 20, "AZ": 28, "BA": 20, "BE": 16, "BG": 22, "BH": 22,
    "BR": 29, "CH": 21, "CR": 22, "CY": 28, "CZ": 24, "DE": 22, "DK": 18, "DO": 28, "EE": 20,
    "EG": 29, "ES": 24, "FI": 18, "FO": 18, "FR": 27, "GB": 22, "GE": 22, "GI": 23, "GL": 18,
    "GR": 27, "GT": 28, "HR": 21, "HU": 28, "IE": 22, "IL": 23, "IS": 26, "IT": 27, "JO": 30,
    "KW": 30, "KZ": 20, "LB": 28, "LI": 21, "LT": 20, "LU": 20, "LV": 21, "MC": 27, "MD": 24,
    "ME": 22, "MK": 19, "MR": 27, "MT": 31, "MU": 30, "NL": 18, "NO": 15, "PK": 24, "PL": 28,
    "PS": 29, "PT": 25, "QA": 29, "RO": 24, "RS": 22, "SA": 24, "SE": 24, "SI": 19, "SK": 24,
    "SM": 27, "TN": 24, "TR": 26, "UA": 29, "VG": 24, "XK": 20,
}


def _digits(text: str) -> str:
    return "".join(c for c in text if c.isdigit())


def luhn(candidate: str) -> bool:
    """A 13-19 digit card number (spaces/dashes allowed) whose Luhn checksum holds."""
    digits = _digits(candidate)
    if not 13 <= len(digits) <= 19 or len(set(digits)) == 1:
        return False
    total = 0
    for i, ch in enumerate(reversed(digits)):
        d = int(ch)
        if i % 2 == 1:
            d = d * 2 - 9 if d > 4 else d * 2
        total += d
    return total % 10 == 0


def iban(candidate: str) -> bool:
    """An IBAN with a known country length and a mod-97 remainder of 1."""
    s = "".join(candidate.split()).upper()
    if len(s) < 15 or not s[:2].isalpha() or not s[2:4].isdigit() or not s.isalnum():
        return False
    expected = _IBAN_LENGTHS.get(s[:2])
    if expected is None or len(s) != expected:
        return False
    rearranged = s[4:] + s[:4]
    number = "".join(str(int(c, 36)) for c in rearranged)
    return int(number) % 97 == 1


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


def ipv4(candidate: str) -> bool:
    """A dotted-quad IPv4 address with every octet in range and no leading zeros."""
    parts = candidate.split(".")
    if len(parts) != 4:
        return False
    for p in parts:
        if not p.isdigit() or (len(p) > 1 and p[0] == "0") or int(p) > 255:
            return False
    # Version-like strings ("1.2.3.4") are legal addresses; so be it. 0.0.0.0 is not PII.
    return candidate != "0.0.0.0"


def ipv6(candidate: str) -> bool:
    """A syntactically valid IPv6 address with at least two groups of content."""
    try:
        addr = ipaddress.IPv6Address(candidate)
    except ValueError:
        return False
    return not (addr.is_unspecified or addr.is_loopback)


def jwt(candidate: str) -> bool:
    """Three base64url segments whose header decodes to a JSON object with ``alg``."""
    parts = candidate.split(".")
    if len(parts) != 3:
        return False
    head = parts[0] + "=" * (-len(parts[0]) % 4)
    try:
        obj = json.loads(base64.urlsafe_b64decode(head))
    except (binascii.Error, ValueError, UnicodeDecodeError):
        return False
    return isinstance(obj, dict) and "alg" in obj


def phone(candidate: str) -> bool:
    """An international number with 8-15 digits (E.164 allows at most 15)."""
    return 8 <= len(_digits(candidate)) <= 15


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
    "none": _always,
}
