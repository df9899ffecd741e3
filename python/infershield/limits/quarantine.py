"""In-process quarantine: callers that keep getting blocked are shut out for a while."""

from __future__ import annotations

import collections
import time
from collections.abc import Callable

from infershield.errors import Quarantined
from infershield.limits.deadline import Clock


class Quarantine:
    """Automated incident response: callers that keep getting blocked are shut out for a while.

    ``strike(key)`` records one blocked request; ``after`` strikes within ``window_s`` put the
    caller in quarantine for ``duration_s``, during which ``check(key)`` raises
    :class:`~infershield.errors.Quarantined`. Both maps are bounded (least recently used
    callers are forgotten) so a flood of distinct callers cannot grow memory without bound.
    """

    def __init__(
        self,
        after: int,
        window_s: float,
        duration_s: float,
        *,
        max_keys: int = 10_000,
        clock: Clock = time.monotonic,
        on_quarantine: Callable[[str], None] | None = None,
    ) -> None:
        if after < 1 or not window_s > 0 or not duration_s > 0:
            raise ValueError("after must be >= 1 and the durations positive")
        self.after = after
        self.window_s = window_s
        self.duration_s = duration_s
        self.max_keys = max_keys
        self._clock = clock
        self._on_quarantine = on_quarantine
        self._strikes: collections.OrderedDict[str, collections.deque[float]] = (
            collections.OrderedDict()
        )
        self._until: collections.OrderedDict[str, float] = collections.OrderedDict()

    def check(self, key: str) -> None:
        """Raise ``Quarantined`` if ``key`` is in quarantine now."""
        until = self._until.get(key)
        if until is None:
            return
        left = until - self._clock()
        if left <= 0:
            del self._until[key]
            return
        raise Quarantined(
            "this caller is quarantined after repeated blocked requests; "
            f"retry in {left:.0f}s",
            retry_after_s=left,
        )

    def strike(self, key: str) -> bool:
        """Record a blocked request by ``key``; True when this strike starts a quarantine."""
        now = self._clock()
        hits = self._strikes.pop(key, None) or collections.deque()
        hits.append(now)
        while hits and now - hits[0] > self.window_s:
            hits.popleft()
        if len(hits) >= self.after:
            self._until.pop(key, None)
            self._until[key] = now + self.duration_s
            while len(self._until) > self.max_keys:
                self._until.popitem(last=False)
            if self._on_quarantine is not None:
                self._on_quarantine(key)
            return True
        self._strikes[key] = hits
        while len(self._strikes) > self.max_keys:
            self._strikes.popitem(last=False)
        return False

    def is_quarantined(self, key: str) -> bool:
        try:
            self.check(key)
        except Quarantined:
            return True
        return False
