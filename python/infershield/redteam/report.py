"""Aggregating a battery's outcomes: catch rates, bypass, false positives, latency, floors."""

from __future__ import annotations

import datetime as _dt
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from infershield.errors import ConfigError
from infershield.redteam.battery import Case
from infershield.redteam.mutators import FAMILIES
from infershield.redteam.targets import Outcome

Cell = tuple[str, str]  # (attack family, mutator name)


def _rate(caught: int, total: int) -> float:
    return caught / total if total else 0.0


def _pct(x: float) -> str:
    return f"{100.0 * x:.0f}%"


def percentile(values: Sequence[float], q: float) -> float:
    """The ``q`` quantile (0-1) by nearest rank; 0 for no values."""
    if not values:
        return 0.0
    s = sorted(values)
    k = min(len(s) - 1, max(0, round(q * (len(s) - 1))))
    return s[k]


@dataclass
class Report:
    """The outcomes of one battery against one target, and everything derived from them.

    Catch rates and bypass count only the variants of attack seeds whose unmutated form the
    target blocks (a mutation cannot "bypass" what was never caught); the seeds it misses
    unmutated are listed apart. The benign false-positive rate leaves out the mutators that
    are suspicious by design (``Mutator.benign_exempt``), shown in their own line.
    """

    target: str
    suite: str
    cases: Sequence[Case]
    outcomes: Sequence[Outcome]
    date: str = field(
        default_factory=lambda: _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    )

    def __post_init__(self) -> None:
        if len(self.cases) != len(self.outcomes):
            raise ValueError("one outcome per case")
        caught_plain = {
            c.seed.id
            for c, o in zip(self.cases, self.outcomes, strict=True)
            if c.attack and c.mutator.name == "none" and o.blocked
        }
        seeds_sent = {c.seed.id for c in self.cases if c.attack}
        has_plain = any(c.mutator.name == "none" for c in self.cases)
        # Without the unmutated form in the suite every attack seed counts.
        self.eligible: set[str] = caught_plain if has_plain else seeds_sent
        self.missed_plain: list[str] = sorted(seeds_sent - self.eligible) if has_plain else []
        self.attack_families: list[str] = list(
            dict.fromkeys(c.seed.family for c in self.cases if c.attack)
        )
        self.mutators: list[str] = list(dict.fromkeys(c.mutator.name for c in self.cases))
        self.mutator_family: dict[str, str] = {c.mutator.name: c.mutator.family for c in self.cases}
        self.cells: dict[Cell, list[int]] = {}  # -> [caught, total]
        self.benign: dict[str, list[int]] = {}  # mutator -> [blocked, total]
        self.exempt: set[str] = {c.mutator.name for c in self.cases if c.mutator.benign_exempt}
        for c, o in zip(self.cases, self.outcomes, strict=True):
            if c.attack:
                if c.seed.id not in self.eligible:
                    continue
                cell = self.cells.setdefault((c.seed.family, c.mutator.name), [0, 0])
            else:
                cell = self.benign.setdefault(c.mutator.name, [0, 0])
            cell[0] += int(o.blocked)
            cell[1] += 1

    # ------------------------------------------------------------------ figures

    def catch_rate(self, family: str | None = None, mutator: str | None = None) -> float:
        """Share of eligible attack variants blocked, optionally for one family/mutator."""
        caught = total = 0
        for (f, m), (c, t) in self.cells.items():
            if (family is None or f == family) and (mutator is None or m == mutator):
                caught += c
                total += t
        return _rate(caught, total)

    def bypass(self, mutator_family: str | None = None) -> tuple[float, int]:
        """(bypass rate, variants) over mutated variants (not ``none``) of eligible seeds."""
        caught = total = 0
        for (_, m), (c, t) in self.cells.items():
            fam = self.mutator_family[m]
            if fam == "none" or (mutator_family is not None and fam != mutator_family):
                continue
            caught += c
            total += t
        return (1.0 - _rate(caught, total) if total else 0.0), total

    def benign_rate(self, *, exempt: bool = False) -> tuple[float, int, int]:
        """(blocked share, blocked, total) over the benign battery, counted or exempt part."""
        blocked = total = 0
        for m, (b, t) in self.benign.items():
            if (m in self.exempt) == exempt:
                blocked += b
                total += t
        return _rate(blocked, total), blocked, total

    def latencies(self) -> list[float]:
        return [o.latency_ms for o in self.outcomes]

    def errors(self) -> dict[str, int]:
        """Endpoint statuses that were neither an answer nor a block, by code."""
        out: dict[str, int] = {}
        for o in self.outcomes:
            if o.code and not o.blocked:
                out[o.code] = out.get(o.code, 0) + 1
        return out

    def cell_rates(self) -> dict[str, float]:
        """Catch rate by ``family/mutator`` (the names floors use)."""
        return {f"{f}/{m}": _rate(c, t) for (f, m), (c, t) in self.cells.items() if t}

    def weakest(self, n: int = 12) -> list[tuple[str, float, int]]:
        """The ``n`` cells with the lowest catch rate: (name, rate, variants)."""
        rows = [(f"{f}/{m}", _rate(c, t), t) for (f, m), (c, t) in self.cells.items() if t]
        rows.sort(key=lambda r: (r[1], r[0]))
        return rows[:n]

    # ---------------------------------------------------------------- rendering

    def to_dict(self) -> dict[str, Any]:
        lat = self.latencies()
        fp, fp_b, fp_t = self.benign_rate()
        return {
            "target": self.target,
            "suite": self.suite,
            "date": self.date,
            "cases": len(self.cases),
            "attack_seeds": len({c.seed.id for c in self.cases if c.attack}),
            "eligible_seeds": len(self.eligible),
            "missed_unmutated": self.missed_plain,
            "bypass_overall": self.bypass()[0],
            "bypass_by_family": {f: self.bypass(f)[0] for f in self._mutator_families()},
            "benign_block_rate": fp,
            "benign_blocked": fp_b,
            "benign_total": fp_t,
            "latency_ms_p50": percentile(lat, 0.5),
            "latency_ms_p99": percentile(lat, 0.99),
            "cells": self.cell_rates(),
            "errors": self.errors(),
        }

    def _mutator_families(self) -> list[str]:
        present = set(self.mutator_family.values()) - {"none"}
        return [f for f in FAMILIES if f in present]

    def markdown(self, heatmap: str | None = None) -> str:
        """The report as Markdown (the heat-map image linked when given)."""
        lat = self.latencies()
        fp, fp_b, fp_t = self.benign_rate()
        _, ex_b, ex_t = self.benign_rate(exempt=True)
        overall, n_var = self.bypass()
        seeds = {c.seed.id for c in self.cases if c.attack}
        lines = [
            "# InferShield red-team report",
            "",
            f"- target: {self.target}",
            f"- suite: `{self.suite}`, {len(self.cases)} texts, {self.date}",
            f"- attack seeds blocked unmutated: {len(self.eligible)}/{len(seeds)}"
            + (f" (missed: {', '.join(self.missed_plain)})" if self.missed_plain else ""),
            f"- **bypass overall: {_pct(overall)}** of {n_var} mutated variants of the seeds "
            "blocked unmutated",
            f"- **benign battery blocked: {_pct(fp)}** ({fp_b}/{fp_t}); forms suspicious by "
            f"design (tag characters, decode/reassemble-and-follow): {ex_b}/{ex_t} blocked",
            f"- latency per text: p50 {percentile(lat, 0.5):.1f} ms, p99 "
            f"{percentile(lat, 0.99):.1f} ms",
        ]
        errs = self.errors()
        if errs:
            lines.append(
                "- endpoint errors (not counted as blocks): "
                + ", ".join(f"{k} x{v}" for k, v in sorted(errs.items()))
            )
        lines += ["", "## Bypass by mutator family", "", "| mutator family | variants | bypass |",
                  "|---|---:|---:|"]
        for fam in self._mutator_families():
            rate, n = self.bypass(fam)
            lines.append(f"| {fam} | {n} | {_pct(rate)} |")
        lines += ["", "## Weakest cells (attack family / mutator)", "",
                  "| cell | variants | catch rate |", "|---|---:|---:|"]
        for name, rate, n in self.weakest():
            lines.append(f"| {name} | {n} | {_pct(rate)} |")
        lines += ["", "## Catch rate per attack family x mutator", ""]
        if heatmap:
            lines += [f"![catch-rate heat-map]({heatmap})", ""]
        fams = self.attack_families
        lines.append("| mutator | family | " + " | ".join(fams) + " | all |")
        lines.append("|---|---|" + "---:|" * (len(fams) + 1))
        for m in self.mutators:
            row = [m, self.mutator_family[m]]
            for f in fams:
                c, t = self.cells.get((f, m), [0, 0])
                row.append(_pct(_rate(c, t)) if t else "-")
            row.append(_pct(self.catch_rate(mutator=m)))
            lines.append("| " + " | ".join(row) + " |")
        lines += ["", "## Benign battery (blocked / sent)", "", "| mutator | blocked | counted |",
                  "|---|---:|---|"]
        for m in self.mutators:
            b, t = self.benign.get(m, [0, 0])
            if t:
                counted = "no (suspicious by design)" if m in self.exempt else "yes"
                lines.append(f"| {m} | {b}/{t} | {counted} |")
        return "\n".join(lines) + "\n"

    def heatmap(self, path: Path) -> bool:
        """Write the catch-rate heat-map as PNG; False (with a message on stderr) when
        matplotlib (the ``bench`` extra) is not installed."""
        try:
            import matplotlib

            matplotlib.use("Agg")
            import matplotlib.pyplot as plt
        except ImportError:
            sys.stderr.write(
                "infershield redteam: matplotlib is not installed (pip install "
                "'infershield[bench]'); the heat-map was not written\n"
            )
            return False
        fams = self.attack_families
        grid = [
            [
                _rate(*self.cells[(f, m)]) if self.cells.get((f, m), [0, 0])[1] else float("nan")
                for f in fams
            ]
            for m in self.mutators
        ]
        fig, ax = plt.subplots(figsize=(1.2 * len(fams) + 3, 0.28 * len(self.mutators) + 1.5))
        im = ax.imshow(grid, cmap="RdYlGn", vmin=0.0, vmax=1.0, aspect="auto")
        ax.set_xticks(range(len(fams)), labels=fams, rotation=35, ha="right", fontsize=8)
        ax.set_yticks(range(len(self.mutators)), labels=self.mutators, fontsize=7)
        for i, row in enumerate(grid):
            for j, v in enumerate(row):
                if v == v:  # not NaN
                    ax.text(j, i, f"{100 * v:.0f}", ha="center", va="center", fontsize=6)
        ax.set_title(f"catch rate: {self.target} ({self.suite})", fontsize=9)
        fig.colorbar(im, ax=ax, fraction=0.03)
        fig.tight_layout()
        fig.savefig(path, dpi=120)
        plt.close(fig)
        return True


# ---------------------------------------------------------------------- floors


def load_floors(path: Path) -> dict[str, Any]:
    """A floors file: ``cells: {family/mutator: min catch rate}`` and optionally
    ``benign_block_rate_max`` and ``bypass_overall_max``."""
    try:
        data = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
    except OSError as exc:
        raise ConfigError(f"floors {path}: cannot read: {exc.strerror}") from None
    if not isinstance(data, Mapping) or not isinstance(data.get("cells"), Mapping):
        raise ConfigError(f"floors {path}: needs a 'cells' mapping of family/mutator to a rate")
    return dict(data)


def check_floors(report: Report, floors: Mapping[str, Any]) -> list[str]:
    """One message per cell below its floor (or missing), and per global limit exceeded."""
    rates = report.cell_rates()
    out = []
    for cell, floor in floors["cells"].items():
        if cell not in rates:
            out.append(f"cell {cell}: not measured (no variant of a seed blocked unmutated)")
        elif rates[cell] + 1e-9 < float(floor):
            out.append(f"cell {cell}: catch rate {rates[cell]:.2f} is below its floor {floor}")
    limit = floors.get("benign_block_rate_max")
    if limit is not None and report.benign_rate()[0] > float(limit) + 1e-9:
        out.append(f"benign battery: {report.benign_rate()[0]:.3f} blocked, above {limit}")
    limit = floors.get("bypass_overall_max")
    if limit is not None and report.bypass()[0] > float(limit) + 1e-9:
        out.append(f"bypass overall {report.bypass()[0]:.3f} is above {limit}")
    return out
