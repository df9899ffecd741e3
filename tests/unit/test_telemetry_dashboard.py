"""The Grafana dashboard only queries metrics the firewall exports, and covers each area."""

import json
import re
from pathlib import Path
from typing import Any

from infershield.telemetry import Metrics

DASHBOARD = Path(__file__).resolve().parents[2] / "dashboards" / "grafana" / "infershield.json"
_SUFFIXES = {"counter": ("_total",), "histogram": ("_bucket", "_count", "_sum"), "gauge": ("",)}


def exported_names() -> set[str]:
    names: set[str] = set()
    for fam in Metrics().registry.collect():
        names.update(fam.name + s for s in _SUFFIXES[fam.type])
    return names


def exprs(dash: dict[str, Any]) -> list[str]:
    return [t["expr"] for p in dash["panels"] for t in p.get("targets", [])]


def test_dashboard_queries_only_exported_metrics() -> None:
    dash = json.loads(DASHBOARD.read_text())
    used = {m for e in exprs(dash) for m in re.findall(r"\binfershield_[a-z_]+", e)}
    assert used, "no queries found"
    assert used <= exported_names(), used - exported_names()


def test_dashboard_covers_the_issue_panels() -> None:
    dash = json.loads(DASHBOARD.read_text())
    text = "\n".join(exprs(dash))
    for needle in (
        "rate(infershield_requests_total",  # request rate
        'decision="block"',  # block ratio
        "sum by (check, category) (rate(infershield_blocks_total",
        "histogram_quantile(0.5, sum by (le, stage)",
        "histogram_quantile(0.99, sum by (le, stage)",
        "infershield_queue_depth",
        "infershield_upstream_circuit_state",
        "infershield_worker_restarts_total",
    ):
        assert needle in text, needle
    ids = [p["id"] for p in dash["panels"]]
    assert len(ids) == len(set(ids))
    assert dash["uid"] == "infershield-overview"
