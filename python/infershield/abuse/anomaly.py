"""Per-caller streaming statistics: an EWMA mean and variance per feature, and a z-score.

Features: ``input_size`` (bytes of a request) and ``score`` (the screening score, 0-1) per
request; ``request_rate`` (calls/s), ``block_rate`` and ``error_rate`` (shares of calls)
per window of ``window_s`` seconds, measured when the caller's next call closes the window.

A sample more than ``z`` standard deviations *above* the caller's own mean, once that
feature has ``warmup`` samples, raises an :class:`AnomalyEvent`. Only upward departures
count: a caller going quiet or sending smaller inputs is not abuse. Anomalous samples do not
move the baseline (an attack must not teach the detector that it is normal), and a
(caller, feature) raises at most one event per ``cooldown_s``. The standard deviation has a
floor of ``min_rel_std`` x mean (and a small absolute floor per feature), so perfectly steady
traffic does not turn a tiny wobble into a huge z.
"""

from __future__ import annotations

import collections
import math
import time
from dataclasses import dataclass, field

from infershield.abuse.store import Clock
from infershield.config import ANOMALY_FEATURES, AnomalyConfig

#: Absolute floor of the standard deviation per feature (its natural unit).
STD_FLOOR: dict[str, float] = {
    "request_rate": 0.5,
    "input_size": 16.0,
    "block_rate": 0.05,
    "score": 0.05,
    "error_rate": 0.05,
}


@dataclass(frozen=True, slots=True)
class AnomalyEvent:
    """A caller's feature departed from its baseline."""

    caller: str
    feature: str
    value: float
    mean: float
    std: float
    z: float

    def as_dict(self) -> dict[str, object]:
        return {
            "caller": self.caller,
            "feature": self.feature,
            "value": round(self.value, 6),
            "baseline_mean": round(self.mean, 6),
            "baseline_std": round(self.std, 6),
            "z": round(self.z, 3) if math.isfinite(self.z) else 1e9,
        }


@dataclass(slots=True)
class Ewma:
    """Exponentially weighted mean and variance (West's incremental form)."""

    alpha: float
    n: int = 0
    mean: float = 0.0
    var: float = 0.0

    def std(self, floor: float, rel: float) -> float:
        return max(math.sqrt(self.var), floor, rel * abs(self.mean))

    def update(self, x: float) -> None:
        if self.n == 0:
            self.mean, self.var = x, 0.0
        else:
            diff = x - self.mean
            incr = self.alpha * diff
            self.mean += incr
            self.var = (1 - self.alpha) * (self.var + diff * incr)
        self.n += 1


@dataclass(slots=True)
class _Caller:
    stats: dict[str, Ewma]
    window_start: float
    calls: int = 0
    blocks: int = 0
    errors: int = 0
    last_event: dict[str, float] = field(default_factory=dict)


class AnomalyDetector:
    """Per-caller baselines; :meth:`observe` one finished call, get the events it raised.

    Not thread-safe: the server calls it from its event loop only.
    """

    def __init__(self, cfg: AnomalyConfig, *, clock: Clock = time.monotonic) -> None:
        self.cfg = cfg
        self._clock = clock
        self._callers: collections.OrderedDict[str, _Caller] = collections.OrderedDict()

    def baseline(self, caller: str, feature: str) -> Ewma | None:
        c = self._callers.get(caller)
        return None if c is None else c.stats.get(feature)

    def observe(
        self,
        caller: str,
        *,
        input_bytes: int,
        score: float | None = None,
        blocked: bool = False,
        error: bool = False,
    ) -> list[AnomalyEvent]:
        """Record one call by ``caller``; return the anomalies it raised (usually none)."""
        now = self._clock()
        c = self._callers.pop(caller, None)
        if c is None:
            c = _Caller({f: Ewma(self.cfg.alpha) for f in ANOMALY_FEATURES}, now)
        self._callers[caller] = c
        while len(self._callers) > self.cfg.max_callers:
            self._callers.popitem(last=False)
        events: list[AnomalyEvent] = []
        elapsed = now - c.window_start
        if elapsed >= self.cfg.window_s:
            if c.calls:
                # The rate over the closed window (a gap after it does not count).
                span = min(elapsed, self.cfg.window_s)
                self._sample(caller, c, "request_rate", c.calls / span, now, events)
                self._sample(caller, c, "block_rate", c.blocks / c.calls, now, events)
                self._sample(caller, c, "error_rate", c.errors / c.calls, now, events)
            c.window_start, c.calls, c.blocks, c.errors = now, 0, 0, 0
        c.calls += 1
        c.blocks += blocked
        c.errors += error
        self._sample(caller, c, "input_size", float(input_bytes), now, events)
        if score is not None:
            self._sample(caller, c, "score", score, now, events)
        return events

    def _sample(
        self, caller: str, c: _Caller, feature: str, x: float, now: float, out: list[AnomalyEvent]
    ) -> None:
        st = c.stats[feature]
        if st.n >= self.cfg.warmup:
            std = st.std(STD_FLOOR[feature], self.cfg.min_rel_std)
            z = (x - st.mean) / std
            if z > self.cfg.z:
                last = c.last_event.get(feature)
                if last is None or now - last >= self.cfg.cooldown_s:
                    c.last_event[feature] = now
                    out.append(AnomalyEvent(caller, feature, x, st.mean, std, z))
                return  # an outlier never becomes part of the baseline
        st.update(x)

    def __len__(self) -> int:
        return len(self._callers)
