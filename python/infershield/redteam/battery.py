"""Seeds, suites and the battery of cases they expand into."""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from infershield.errors import ConfigError
from infershield.redteam.mutators import Mutator, mutator_data, resolve, rng_for

#: The seed of the deterministic battery (changing it changes every padded/noisy variant).
SUITE_SEED = 16


@dataclass(frozen=True, slots=True)
class Seed:
    """One hand-written text: an attack of ``family`` or a benign text (family ``benign``)."""

    id: str
    family: str
    text: str


@dataclass(frozen=True, slots=True)
class Case:
    """One text to send: ``seed`` rewritten by ``mutator``."""

    seed: Seed
    mutator: Mutator
    text: str

    @property
    def attack(self) -> bool:
        return self.seed.family != "benign"


@dataclass(frozen=True, slots=True)
class Suite:
    """A named selection: mutators, seeds per attack family (0 = all), benign seeds (0 = all)."""

    name: str
    mutators: tuple[Mutator, ...]
    seeds_per_family: int
    benign: int


def _seed_file(name: str) -> Any:
    path = resources.files("infershield") / "redteam" / "seeds" / name
    return yaml.safe_load(path.read_text(encoding="utf-8"))


def _attacks_from(data: Any, where: str) -> tuple[Seed, ...]:
    if not isinstance(data, dict) or not isinstance(data.get("families"), dict):
        raise ConfigError(f"{where}: needs a 'families' mapping of family to [{{id, text}}]")
    out: list[Seed] = []
    for family, rows in data["families"].items():
        if not isinstance(rows, list):
            raise ConfigError(f"{where}: families.{family}: must be a list")
        for i, r in enumerate(rows):
            if not isinstance(r, dict) or not r.get("id") or not isinstance(r.get("text"), str):
                raise ConfigError(f"{where}: families.{family}[{i}]: needs 'id' and 'text'")
            out.append(Seed(str(r["id"]), str(family), r["text"]))
    return tuple(out)


@lru_cache(maxsize=1)
def attack_seeds() -> tuple[Seed, ...]:
    """The shipped attack seeds (``seeds/attacks.yaml``), by family in file order."""
    return _attacks_from(_seed_file("attacks.yaml"), "seeds/attacks.yaml")


def load_attacks(path: Path) -> tuple[Seed, ...]:
    """Attack seeds from a user file in the shipped format (``families: {name: [{id, text}]}``)."""
    try:
        data = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
    except OSError as exc:
        raise ConfigError(f"attacks {path}: cannot read: {exc.strerror}") from None
    return _attacks_from(data, f"attacks {path}")


@lru_cache(maxsize=1)
def benign_seeds() -> tuple[Seed, ...]:
    """The shipped benign seeds (``seeds/benign.yaml``)."""
    return tuple(
        Seed(str(r["id"]), "benign", str(r["text"])) for r in _seed_file("benign.yaml")["benign"]
    )


def suite_names() -> list[str]:
    return list(mutator_data()["suites"])


def load_suite(name: str) -> Suite:
    """A suite from ``seeds/mutators.yaml``; ConfigError naming it if unknown."""
    suites = mutator_data()["suites"]
    if name not in suites:
        raise ConfigError(f"unknown suite {name!r} (known: {', '.join(suites)})")
    spec = suites[name]
    return Suite(
        name,
        tuple(resolve(spec["mutators"])),
        int(spec.get("seeds_per_family", 0)),
        int(spec.get("benign", 0)),
    )


def _pick_per_family(seeds: tuple[Seed, ...], n: int) -> list[Seed]:
    if n <= 0:
        return list(seeds)
    counts: dict[str, int] = {}
    out = []
    for s in seeds:
        if counts.get(s.family, 0) < n:
            counts[s.family] = counts.get(s.family, 0) + 1
            out.append(s)
    return out


def build_cases(
    suite: Suite, *, seed: int = SUITE_SEED, attacks_from: tuple[Seed, ...] | None = None
) -> list[Case]:
    """Every (seed, mutator) case of ``suite``, attacks first, in a fixed order.
    ``attacks_from`` replaces the shipped attack seeds (an operator's own corpus)."""
    attacks = _pick_per_family(attacks_from or attack_seeds(), suite.seeds_per_family)
    benign = list(benign_seeds())
    if suite.benign > 0:
        # Spread the pick over the file (everyday, hard negatives, languages).
        step = max(1, len(benign) // suite.benign)
        benign = benign[::step][: suite.benign]
    cases = []
    for s in attacks + benign:
        for m in suite.mutators:
            cases.append(Case(s, m, m.apply(s.text, rng_for(seed, s.id, m.name))))
    return cases
