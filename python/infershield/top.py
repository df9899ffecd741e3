"""``infershield top``: live rates, block ratios and latency percentiles in a terminal.

For operators without Grafana: it polls the firewall's Prometheus endpoint
(``server.metrics_listen``), parses the text format and shows, over the last interval,
request rates per RPC and model, block and error ratios, blocks by check and category,
latency p50/p90/p99 per stage and per check (interpolated from the histogram buckets the
way PromQL's ``histogram_quantile`` does), and the health gauges. ``--once`` prints one
snapshot and exits (two scrapes ``--interval`` apart, so rates are real rates).
"""

from __future__ import annotations

import argparse
import math
import sys
import time
import urllib.error
import urllib.request
from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, TextIO

from prometheus_client.parser import text_string_to_metric_families

from infershield.telemetry.metrics import BREAKER_VALUES, PREFIX

Labels = tuple[tuple[str, str], ...]
EXIT_OK, EXIT_UNREACHABLE = 0, 2
_BREAKER_NAMES = {v: k for k, v in BREAKER_VALUES.items()}
_STAGE_ORDER = ("total", "input_checks", "upstream", "output_checks")


@dataclass(frozen=True)
class Snapshot:
    """One scrape: ``samples[name][labels] = value``, taken at monotonic time ``t``."""

    t: float
    samples: Mapping[str, Mapping[Labels, float]]

    def series(self, name: str) -> Mapping[Labels, float]:
        return self.samples.get(name, {})


def parse(text: str, t: float = 0.0) -> Snapshot:
    """Parse Prometheus text exposition into a :class:`Snapshot`."""
    out: dict[str, dict[Labels, float]] = defaultdict(dict)
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            out[s.name][tuple(sorted(s.labels.items()))] = s.value
    return Snapshot(t, dict(out))


def scrape(url: str, timeout: float = 5.0) -> Snapshot:
    """Fetch and parse ``url``; raises OSError (URLError) when unreachable."""
    with urllib.request.urlopen(url, timeout=timeout) as resp:
        text = resp.read().decode("utf-8", errors="replace")
    return parse(text, time.monotonic())


def histogram_quantile(q: float, buckets: Iterable[tuple[float, float]]) -> float | None:
    """The ``q`` quantile from cumulative ``(upper_bound, count)`` buckets, like PromQL.

    Linear interpolation inside the bucket holding the rank; the +Inf bucket answers with
    the highest finite bound. None when there are no observations.
    """
    bs = sorted(buckets)
    if not bs or bs[-1][1] <= 0:
        return None
    rank = q * bs[-1][1]
    prev_le, prev_count = 0.0, 0.0
    for le, count in bs:
        if count >= rank:
            if math.isinf(le):
                return prev_le
            if count == prev_count:
                return le
            return prev_le + (le - prev_le) * (rank - prev_count) / (count - prev_count)
        prev_le, prev_count = le, count
    return bs[-1][0]


# --------------------------------------------------------------------------- aggregation


def _group(
    series: Mapping[Labels, float], keys: tuple[str, ...], where: Callable[[dict[str, str]], bool]
) -> dict[tuple[str, ...], float]:
    out: dict[tuple[str, ...], float] = defaultdict(float)
    for labels, v in series.items():
        d = dict(labels)
        if where(d):
            out[tuple(d.get(k, "") for k in keys)] += v
    return out


def _all(_: dict[str, str]) -> bool:
    return True


class _View:
    """Differences between two snapshots (or totals of one, when there is no previous)."""

    def __init__(self, prev: Snapshot | None, cur: Snapshot) -> None:
        self.prev, self.cur = prev, cur
        self.dt = cur.t - prev.t if prev is not None else 0.0

    def total(self, name: str, keys: tuple[str, ...] = (),
              where: Callable[[dict[str, str]], bool] = _all) -> dict[tuple[str, ...], float]:
        return _group(self.cur.series(name), keys, where)

    def delta(self, name: str, keys: tuple[str, ...] = (),
              where: Callable[[dict[str, str]], bool] = _all) -> dict[tuple[str, ...], float]:
        now = self.total(name, keys, where)
        if self.prev is None:
            return {}
        before = _group(self.prev.series(name), keys, where)
        # A restarted firewall resets its counters: treat the new value as the increase.
        return {k: x - before.get(k, 0.0) if x >= before.get(k, 0.0) else x for k, x in now.items()}

    def rate(self, name: str, keys: tuple[str, ...] = (),
             where: Callable[[dict[str, str]], bool] = _all) -> dict[tuple[str, ...], float] | None:
        if self.dt <= 0:
            return None
        return {k: v / self.dt for k, v in self.delta(name, keys, where).items()}

    def quantiles(
        self, name: str, keys: tuple[str, ...], qs: tuple[float, ...]
    ) -> dict[tuple[str, ...], tuple[float, list[float | None], bool]]:
        """Per group: (observations, quantiles, windowed?) over the window when it had traffic."""
        bucket = f"{name}_bucket"
        cum = self.total(bucket, (*keys, "le"))
        win = self.delta(bucket, (*keys, "le"))
        groups: dict[tuple[str, ...], dict[str, list[tuple[float, float]]]] = defaultdict(
            lambda: {"cum": [], "win": []}
        )
        for src, kind in ((cum, "cum"), (win, "win")):
            for k, v in src.items():
                groups[k[:-1]][kind].append((float(k[-1]), v))
        out = {}
        for g, b in groups.items():
            win_count = max((c for _, c in b["win"]), default=0.0)
            use_win = win_count > 0
            chosen = b["win"] if use_win else b["cum"]
            count = max((c for _, c in chosen), default=0.0)
            out[g] = (count, [histogram_quantile(q, chosen) for q in qs], use_win)
        return out


# --------------------------------------------------------------------------- rendering


def _fmt_rate(v: float | None) -> str:
    return "-" if v is None else f"{v:,.1f}/s"


def _fmt_ms(v: float | None) -> str:
    return "-" if v is None else f"{v * 1000:.2f}"


def _pct(num: float, den: float) -> str:
    return "-" if den <= 0 else f"{100.0 * num / den:.1f}%"


def render(prev: Snapshot | None, cur: Snapshot, url: str) -> str:
    """The screen for one refresh, as text."""
    v = _View(prev, cur)
    req = f"{PREFIX}_requests_total"
    lines = [
        f"infershield top  {url}  "
        + (f"window {v.dt:.1f}s" if v.dt > 0 else "totals since start")
        + time.strftime("  %Y-%m-%d %H:%M:%S", time.localtime()),
        "",
    ]

    # Requests, per RPC and model. Ratios use the window when it saw traffic.
    def blocked(d: dict[str, str]) -> bool:
        return d.get("decision") == "block"

    def errored(d: dict[str, str]) -> bool:
        return d.get("code", "OK") != "OK" and d.get("decision") != "block"

    keys = ("rpc", "model")
    totals = v.total(req, keys)
    win = v.delta(req, keys)
    use_win = sum(win.values()) > 0

    Where = Callable[[dict[str, str]], bool]

    def src(name: str, where: Where = _all) -> dict[tuple[str, ...], float]:
        return v.delta(name, keys, where) if use_win else v.total(name, keys, where)

    n_all, n_block, n_err = src(req), src(req, blocked), src(req, errored)
    rates = v.rate(req, keys)
    all_rate = sum(rates.values()) if rates is not None else None
    lines.append(
        f"requests  {_fmt_rate(all_rate)}  total {sum(totals.values()):,.0f}  "
        f"blocked {_pct(sum(n_block.values()), sum(n_all.values()))}  "
        f"errors {_pct(sum(n_err.values()), sum(n_all.values()))}"
        + ("" if use_win else "  (ratios since start)")
    )
    lines.append(f"  {'RPC':<22} {'MODEL':<20} {'RATE':>10} {'TOTAL':>9} {'BLOCK':>7} {'ERR':>7}")
    for k in sorted(totals, key=lambda k: -totals[k]):
        r = rates.get(k) if rates is not None else None
        lines.append(
            f"  {k[0]:<22.22} {k[1]:<20.20} {_fmt_rate(r):>10} {totals[k]:>9,.0f} "
            f"{_pct(n_block.get(k, 0.0), n_all.get(k, 0.0)):>7} "
            f"{_pct(n_err.get(k, 0.0), n_all.get(k, 0.0)):>7}"
        )
    if not totals:
        lines.append("  (no requests yet)")

    # Blocks by check and category.
    blk = f"{PREFIX}_blocks_total"
    bkeys = ("stage", "check", "category")
    btot = v.total(blk, bkeys)
    brate = v.rate(blk, bkeys)
    lines += ["", f"  {'BLOCKS BY':<40} {'RATE':>10} {'TOTAL':>9}"]
    for k in sorted(btot, key=lambda k: -btot[k]):
        lines.append(
            f"  {k[0] + ' ' + k[1] + ' / ' + k[2]:<40.40} "
            f"{_fmt_rate(brate.get(k) if brate is not None else None):>10} {btot[k]:>9,.0f}"
        )
    if not btot:
        lines.append("  (no blocks)")

    # Latency percentiles.
    qs = (0.5, 0.9, 0.99)
    lines += ["", f"  {'LATENCY (ms)':<40} {'p50':>8} {'p90':>8} {'p99':>8} {'N':>9}"]
    stages = v.quantiles(f"{PREFIX}_stage_duration_seconds", ("stage",), qs)
    order = {s: i for i, s in enumerate(_STAGE_ORDER)}
    for (stage,), (n, pq, windowed) in sorted(stages.items(), key=lambda i: order.get(i[0][0], 99)):
        lines.append(_lat_line(f"stage {stage}", n, pq, windowed))
    checks = v.quantiles(f"{PREFIX}_check_duration_seconds", ("stage", "check"), qs)
    for (stage, check), (n, pq, windowed) in sorted(checks.items()):
        lines.append(_lat_line(f"check {stage}/{check}", n, pq, windowed))
    if not stages and not checks:
        lines.append("  (no observations)")

    # Health.
    def one(name: str) -> float:
        return sum(v.total(name).values())

    breaker = v.total(f"{PREFIX}_upstream_circuit_state", ("upstream",))
    breaker_txt = ", ".join(
        f"{u[0]}={_BREAKER_NAMES.get(int(val), str(val))}" for u, val in sorted(breaker.items())
    ) or "-"
    limits = v.total(f"{PREFIX}_rate_limit_rejections_total", ("limit",))
    lines += [
        "",
        f"in flight {one(f'{PREFIX}_in_flight_requests'):.0f}  "
        f"queue {one(f'{PREFIX}_queue_depth'):.0f}  breaker {breaker_txt}",
        f"worker restarts {one(f'{PREFIX}_worker_restarts_total'):.0f}  "
        f"quarantines {one(f'{PREFIX}_quarantines_total'):.0f}  "
        f"upstream errors {one(f'{PREFIX}_upstream_errors_total'):.0f}  "
        f"rate-limited {sum(limits.values()):.0f}"
        + (" (" + ", ".join(f"{k[0]}={c:.0f}" for k, c in sorted(limits.items())) + ")"
           if limits else ""),
    ]
    return "\n".join(lines) + "\n"


def _lat_line(label: str, n: float, pq: list[float | None], windowed: bool) -> str:
    mark = "" if windowed else "*"
    return (
        f"  {label:<40.40} {_fmt_ms(pq[0]):>8} {_fmt_ms(pq[1]):>8} {_fmt_ms(pq[2]):>8} "
        f"{n:>8,.0f}{mark or ' '}"
    )


# --------------------------------------------------------------------------- command


def cmd_top(args: argparse.Namespace, *, stdout: TextIO | None = None) -> int:
    """Poll ``args.metrics`` and redraw every ``args.interval`` seconds (once with --once)."""
    out = stdout if stdout is not None else sys.stdout
    url: str = args.metrics
    interval = max(0.0, float(args.interval))
    try:
        prev = scrape(url)
        if args.once:
            if interval > 0:
                time.sleep(interval)
                cur = scrape(url)
                out.write(render(prev, cur, url))
            else:
                out.write(render(None, prev, url))
            return EXIT_OK
    except (OSError, ValueError) as exc:
        print(f"infershield top: cannot scrape {url}: {_why(exc)}", file=sys.stderr)
        return EXIT_UNREACHABLE
    try:
        while True:
            time.sleep(interval or 1.0)
            try:
                cur = scrape(url)
            except (OSError, ValueError) as exc:
                out.write(f"\x1b[H\x1b[2Jinfershield top: cannot scrape {url}: {_why(exc)}\n")
                out.flush()
                continue
            # Home + clear, then the frame: a full redraw keeps it simple and flicker is rare.
            out.write("\x1b[H\x1b[2J" + render(prev, cur, url) + "(* = since start; ^C quits)\n")
            out.flush()
            prev = cur
    except KeyboardInterrupt:
        return EXIT_OK


def _why(exc: BaseException) -> str:
    if isinstance(exc, urllib.error.URLError) and not isinstance(exc, urllib.error.HTTPError):
        return str(exc.reason)
    return str(exc)


def register(sub: Any) -> None:
    """Add the ``top`` subcommand to the ``infershield`` CLI."""
    p = sub.add_parser("top", help="live rates, block ratios and latency from the metrics endpoint")
    p.add_argument(
        "--metrics", default="http://127.0.0.1:9464/metrics", metavar="URL",
        help="the firewall's Prometheus endpoint (server.metrics_listen; default %(default)s)",
    )
    p.add_argument("--interval", type=float, default=2.0, metavar="S",
                   help="seconds between refreshes (default %(default)s)")
    p.add_argument("--once", action="store_true",
                   help="print one snapshot over --interval seconds and exit")
    p.set_defaults(func=cmd_top)
