"""Report: catch rates, bypass, benign rate, floors, rendering."""

from __future__ import annotations

import builtins
from pathlib import Path
from typing import Any

import pytest

from infershield.errors import ConfigError
from infershield.redteam.battery import Case, Seed
from infershield.redteam.mutators import registry
from infershield.redteam.report import Report, check_floors, load_floors, percentile
from infershield.redteam.targets import Outcome

A1 = Seed("override.a", "override", "attack one")
A2 = Seed("override.b", "override", "attack two")
A3 = Seed("persona.a", "persona", "attack three")
B1 = Seed("benign.a", "benign", "hello")


def case(seed: Seed, mutator: str) -> Case:
    return Case(seed, registry()[mutator], f"{mutator}:{seed.text}")


def make() -> Report:
    rows = [
        (A1, "none", True), (A1, "leetspeak", True), (A1, "base64", False),
        (A2, "none", False), (A2, "leetspeak", False), (A2, "base64", False),  # never caught
        (A3, "none", True), (A3, "leetspeak", False), (A3, "base64", True),
        (B1, "none", False), (B1, "leetspeak", True), (B1, "base64", False),
        (B1, "tag_smuggle", True),  # exempt: suspicious by design
    ]
    cases = [case(s, m) for s, m, _ in rows]
    outcomes = [Outcome(b, float(i)) for i, (_, _, b) in enumerate(rows)]
    return Report("test target", "unit", cases, outcomes, date="today")


def test_rates() -> None:
    r = make()
    assert r.eligible == {"override.a", "persona.a"}
    assert r.missed_plain == ["override.b"]
    assert r.cell_rates() == {
        "override/none": 1.0, "override/leetspeak": 1.0, "override/base64": 0.0,
        "persona/none": 1.0, "persona/leetspeak": 0.0, "persona/base64": 1.0,
    }
    assert r.bypass() == (0.5, 4)
    assert r.bypass("spelling") == (0.5, 2)
    assert r.benign_rate() == (1 / 3, 1, 3)
    assert r.benign_rate(exempt=True) == (1.0, 1, 1)
    assert r.weakest(2) == [("override/base64", 0.0, 1), ("persona/leetspeak", 0.0, 1)]
    assert percentile([5.0, 1.0, 3.0], 0.5) == 3.0 and percentile([], 0.9) == 0.0
    d = r.to_dict()
    assert d["eligible_seeds"] == 2 and d["attack_seeds"] == 3 and d["benign_blocked"] == 1


def test_markdown() -> None:
    md = make().markdown("map.png")
    assert "**bypass overall: 50%** of 4 mutated variants" in md
    assert "missed: override.b" in md
    assert "![catch-rate heat-map](map.png)" in md
    assert "| leetspeak | spelling | 100% | 0% | 50% |" in md
    assert "| tag_smuggle | 1/1 | no (suspicious by design) |" in md


def test_floors(tmp_path: Path) -> None:
    f = tmp_path / "floors.yaml"
    f.write_text(
        "cells:\n  override/leetspeak: 1.0\n  persona/leetspeak: 0.5\n  hijack/none: 1.0\n"
        "benign_block_rate_max: 0.1\nbypass_overall_max: 0.6\n"
    )
    problems = check_floors(make(), load_floors(f))
    assert problems == [
        "cell persona/leetspeak: catch rate 0.00 is below its floor 0.5",
        "cell hijack/none: not measured (no variant of a seed blocked unmutated)",
        "benign battery: 0.333 blocked, above 0.1",
    ]
    bad = tmp_path / "bad.yaml"
    bad.write_text("cells: 3\n")
    with pytest.raises(ConfigError, match="cells"):
        load_floors(bad)


def test_heatmap(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                 capsys: pytest.CaptureFixture[str]) -> None:
    real_import = builtins.__import__

    def no_matplotlib(name: str, *args: Any, **kwargs: Any) -> Any:
        if name.startswith("matplotlib"):
            raise ImportError(name)
        return real_import(name, *args, **kwargs)

    with monkeypatch.context() as m:
        m.setattr(builtins, "__import__", no_matplotlib)
        assert make().heatmap(tmp_path / "x.png") is False
    assert "matplotlib is not installed" in capsys.readouterr().err
    assert not (tmp_path / "x.png").exists()
    pytest.importorskip("matplotlib")
    assert make().heatmap(tmp_path / "y.png") is True
    assert (tmp_path / "y.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
