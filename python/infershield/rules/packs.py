"""Rule packs: YAML files of Hyperscan signatures, validated once at load time.

A pack is a YAML mapping::

    pack: injection              # must equal the file's stem for shipped packs
    description: ...
    mode: signature              # signature: scanned raw + normalised + decoded blobs
                                 # span: raw text only, with offsets (PII, secrets)
    defaults: {category: injection, severity: high, flags: [caseless, dotall, utf8]}
    rules:
      - id: inj.ignore_previous
        severity: high
        pattern: 'ignore\\s+(all\\s+)?previous\\s+instructions'
        examples: {match: [...], no_match: [...]}

Every field is checked; a bad pack raises :class:`~infershield.errors.ConfigError` naming the
file and the rule id. Rule ids are unique across all packs loaded together.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any, Literal, cast, get_args

import yaml

from infershield.config import yaml_error
from infershield.errors import ConfigError

SEVERITIES: tuple[str, ...] = ("low", "medium", "high", "critical")
#: Score a finding contributes, by severity.
SEVERITY_SCORE: dict[str, float] = {"low": 0.25, "medium": 0.5, "high": 0.8, "critical": 1.0}
FLAGS: tuple[str, ...] = ("caseless", "dotall", "multiline", "utf8", "ucp", "som")
DEFAULT_FLAGS: tuple[str, ...] = ("caseless", "dotall", "utf8")
CATEGORIES: tuple[str, ...] = (
    "injection",
    "jailbreak",
    "exfiltration",
    "template_injection",
    "obfuscation",
    "pii",
    "secret",
    "banned",
    # Not an attack: marks text that *discusses* attacks; the signatures check uses it to
    # lower the severity of what else matched (see checks/input/signatures.py).
    "discussion",
)
#: Python-side validators a span rule may name; they run on each candidate span.
VALIDATORS: tuple[str, ...] = (
    # exact: candidate -> bool (rules/validators.py VALIDATOR_FUNCS)
    "luhn", "iban", "us_ssn", "ipv4", "ipv6", "jwt", "phone", "email", "token", "github_crc",
    "discord", "none",
    # region: every finding in a run of overlapping candidates (REGION_VALIDATORS)
    "card", "iban_region", "ssn", "ipv4_region", "ipv6_region", "phone_region", "postal",
    "credential", "url_credentials", "cli_credentials", "private_key", "putty_key",
)
Mode = Literal["signature", "span"]
#: What a ``discussion`` rule lowers: every lone attack match of the text (``text``), only
#: attack matches that overlap one of its own matches (``match``: a guard clause excuses the
#: attack phrase it contains, not one written next to it), or those in the same sentence as
#: one of its matches (``sentence``: "how do I detect prompts like ...").
Scope = Literal["text", "match", "sentence"]
_ID_RE = re.compile(r"^[a-z][a-z0-9_]*(\.[a-z0-9_]+)+$")
_PACK_RE = re.compile(r"^[a-z][a-z0-9_]*$")
_RULE_KEYS = {"id", "category", "severity", "pattern", "flags", "examples", "description",
              "validator", "kind", "scope", "quotable"}
_PACK_KEYS = {"pack", "description", "mode", "defaults", "rules"}


@dataclass(frozen=True, slots=True)
class Rule:
    """One signature. ``kind`` names what a span rule finds (``email``, ``aws_access_key``);
    it is what redaction writes (``[REDACTED:email]``)."""

    id: str
    pack: str
    category: str
    severity: str
    pattern: str
    flags: frozenset[str]
    match_examples: tuple[str, ...]
    no_match_examples: tuple[str, ...]
    mode: Mode = "signature"
    validator: str = "none"
    kind: str = ""
    description: str = ""
    scope: Scope = "text"
    #: Whether a match quoted by a text that talks about it may be left to the other checks
    #: (``checks/input/mention.py``). False for orders addressed to the AI that reads the
    #: content ("Note to AI: ..."): quoted, they are still the indirect injection itself.
    quotable: bool = True

    @property
    def score(self) -> float:
        return SEVERITY_SCORE[self.severity]

    @property
    def severity_rank(self) -> int:
        return SEVERITIES.index(self.severity)

    def to_pattern(self) -> Any:
        """The native ``Pattern`` for this rule (imports the native module lazily)."""
        from infershield.native import Pattern

        return Pattern(
            self.id,
            self.pattern,
            caseless="caseless" in self.flags,
            dotall="dotall" in self.flags,
            multiline="multiline" in self.flags,
            utf8="utf8" in self.flags,
            ucp="ucp" in self.flags,
            som="som" in self.flags,
        )


@dataclass(frozen=True, slots=True)
class RulePack:
    """A loaded, validated pack."""

    name: str
    path: Path
    mode: Mode
    description: str
    rules: tuple[Rule, ...]


def severity_rank(severity: str, where: str = "severity") -> int:
    """Index of ``severity`` in :data:`SEVERITIES`; ConfigError naming ``where`` if unknown."""
    if severity not in SEVERITIES:
        raise ConfigError(f"{where}: must be one of {list(SEVERITIES)}, got {severity!r}")
    return SEVERITIES.index(severity)


def packs_dir() -> Path:
    """Directory holding the shipped packs."""
    return Path(str(resources.files("infershield") / "rules"))


def shipped_packs() -> list[str]:
    """Names of every pack shipped with the package, sorted."""
    return sorted(p.stem for p in packs_dir().glob("*.yaml"))


def resolve_pack(name_or_path: str | Path) -> Path:
    """A shipped pack name (``injection``) or a path to a user pack (``./my.yaml``)."""
    s = str(name_or_path)
    if _PACK_RE.match(s):
        p = packs_dir() / f"{s}.yaml"
        if not p.is_file():
            raise ConfigError(f"unknown rule pack {s!r} (shipped: {', '.join(shipped_packs())})")
        return p
    p = Path(s).expanduser()
    if not p.is_file():
        raise ConfigError(f"rule pack {s}: no such file")
    return p


def load_pack(name_or_path: str | Path) -> RulePack:
    """Load and validate one pack; every problem is a ConfigError naming the file and rule."""
    path = resolve_pack(name_or_path)
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ConfigError(f"rule pack {path}: cannot read: {exc.strerror}") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"rule pack {yaml_error(path, exc)}") from None
    return _build_pack(data, path)


def load_packs(names: Iterable[str | Path]) -> list[Rule]:
    """Load several packs; rule ids must be unique across all of them."""
    rules: list[Rule] = []
    seen: dict[str, str] = {}
    for name in names:
        pack = load_pack(name)
        for r in pack.rules:
            if r.id in seen:
                raise ConfigError(
                    f"rule pack {pack.path}: rule {r.id}: duplicate id (also in {seen[r.id]})"
                )
            seen[r.id] = str(pack.path)
            rules.append(r)
    return rules


def pack_hash(rules: Sequence[Rule]) -> str:
    """Stable digest of everything that affects the compiled database (cache key)."""
    h = hashlib.sha256()
    for r in rules:
        h.update(json.dumps([r.id, r.pattern, sorted(r.flags)]).encode("utf-8"))
        h.update(b"\0")
    return h.hexdigest()


# --------------------------------------------------------------------------- validation


def _build_pack(data: Any, path: Path) -> RulePack:
    where = f"rule pack {path}"
    if not isinstance(data, Mapping):
        raise ConfigError(f"{where}: top level must be a mapping")
    unknown = set(data) - _PACK_KEYS
    if unknown:
        raise ConfigError(f"{where}: unknown field(s) {sorted(unknown)}")
    name = data.get("pack")
    if not isinstance(name, str) or not _PACK_RE.match(name):
        raise ConfigError(f"{where}: 'pack' must be a lowercase identifier, got {name!r}")
    mode = data.get("mode", "signature")
    if mode not in ("signature", "span"):
        raise ConfigError(f"{where}: mode must be 'signature' or 'span', got {mode!r}")
    description = data.get("description", "")
    if not isinstance(description, str):
        raise ConfigError(f"{where}: description must be a string")
    defaults = data.get("defaults", {})
    if not isinstance(defaults, Mapping) or set(defaults) - {"category", "severity", "flags"}:
        raise ConfigError(f"{where}: defaults may only set category, severity and flags")
    raw_rules = data.get("rules")
    if not isinstance(raw_rules, list) or not raw_rules:
        raise ConfigError(f"{where}: 'rules' must be a non-empty list")
    rules: list[Rule] = []
    ids: set[str] = set()
    for i, raw in enumerate(raw_rules):
        rule = _build_rule(raw, defaults, name, mode, f"{where}: rules[{i}]")
        if rule.id in ids:
            raise ConfigError(f"{where}: rule {rule.id}: duplicate id")
        ids.add(rule.id)
        rules.append(rule)
    return RulePack(name, path, mode, description, tuple(rules))


def _build_rule(
    raw: Any, defaults: Mapping[str, Any], pack: str, mode: Mode, where: str
) -> Rule:
    if not isinstance(raw, Mapping):
        raise ConfigError(f"{where}: expected a mapping")
    rid = raw.get("id")
    if not isinstance(rid, str) or not _ID_RE.match(rid):
        raise ConfigError(f"{where}: id must look like 'pack.rule_name', got {rid!r}")
    where = f"{where.rsplit(': ', 1)[0]}: rule {rid}"
    unknown = set(raw) - _RULE_KEYS
    if unknown:
        raise ConfigError(f"{where}: unknown field(s) {sorted(unknown)}")

    def field_str(key: str, allowed: Sequence[str] | None = None) -> str:
        value = raw.get(key, defaults.get(key))
        if not isinstance(value, str) or not value:
            raise ConfigError(f"{where}: {key} must be a non-empty string")
        if allowed is not None and value not in allowed:
            raise ConfigError(f"{where}: {key} must be one of {list(allowed)}, got {value!r}")
        return value

    category = field_str("category", CATEGORIES)
    severity = field_str("severity", SEVERITIES)
    pattern = field_str("pattern")
    flags_raw = raw.get("flags", defaults.get("flags", list(DEFAULT_FLAGS)))
    if not isinstance(flags_raw, list) or not all(isinstance(f, str) for f in flags_raw):
        raise ConfigError(f"{where}: flags must be a list of names")
    bad = [f for f in flags_raw if f not in FLAGS]
    if bad:
        raise ConfigError(f"{where}: unknown flag(s) {bad} (known: {list(FLAGS)})")
    flags = frozenset(flags_raw)
    validator = raw.get("validator", "none")
    if validator not in VALIDATORS:
        raise ConfigError(f"{where}: validator must be one of {list(VALIDATORS)}")
    kind = raw.get("kind", "")
    if not isinstance(kind, str) or (kind and not _PACK_RE.match(kind)):
        raise ConfigError(f"{where}: kind must be a lowercase identifier")
    if mode == "span":
        if not kind:
            raise ConfigError(f"{where}: span rules need a 'kind' (what redaction writes)")
        # Offsets are needed to validate and redact the candidate.
        flags = flags | {"som"}
    desc = raw.get("description", "")
    if not isinstance(desc, str):
        raise ConfigError(f"{where}: description must be a string")
    examples = raw.get("examples")
    if not isinstance(examples, Mapping) or set(examples) - {"match", "no_match"}:
        raise ConfigError(f"{where}: examples must be a mapping with 'match' and 'no_match'")
    pos = _examples(examples.get("match"), f"{where}: examples.match")
    neg = _examples(examples.get("no_match"), f"{where}: examples.no_match")
    scope = cast(Scope, field_str("scope", get_args(Scope)) if "scope" in raw else "text")
    if scope != "text" and category != "discussion":
        raise ConfigError(f"{where}: only discussion rules have a scope")
    quotable = raw.get("quotable", True)
    if not isinstance(quotable, bool):
        raise ConfigError(f"{where}: quotable must be true or false")
    return Rule(rid, pack, category, severity, pattern, flags, pos, neg, mode, validator,
                kind, desc, scope, quotable)


def _examples(value: Any, where: str) -> tuple[str, ...]:
    if not isinstance(value, list) or not value:
        raise ConfigError(f"{where}: needs at least one example string")
    if not all(isinstance(v, str) and v for v in value):
        raise ConfigError(f"{where}: every example must be a non-empty string")
    return tuple(value)
