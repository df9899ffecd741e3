"""An in-process token-bucket rate limiter keyed by caller."""

from __future__ import annotations

import collections
import time

from infershield.errors import LimitExceeded
from infershield.limits.deadline import Clock


class RateLimiter:
    """Token buckets keyed by caller: ``rate`` requests per second with bursts of ``burst``.

    The number of buckets is bounded (least recently used callers are forgotten), so a flood
    of distinct caller ids cannot grow memory without bound. A forgotten caller starts again
    with a full bucket, which errs on the side of serving.
    """

    def __init__(
        self, rate: float, burst: float, *, max_keys: int = 10_000, clock: Clock = time.monotonic
    ) -> None:
        if not rate > 0 or not burst >= 1:
            raise ValueError("rate must be > 0 and burst >= 1")
        self.rate = rate
        self.burst = burst
        self.max_keys = max_keys
        self._clock = clock
        self._buckets: collections.OrderedDict[str, tuple[float, float]] = collections.OrderedDict()

    def try_acquire(self, key: str, cost: float = 1.0) -> None:
        """Take ``cost`` tokens from ``key``'s bucket or raise ``LimitExceeded(limit="rate")``."""
        now = self._clock()
        tokens, last = self._buckets.pop(key, (self.burst, now))
        tokens = min(self.burst, tokens + (now - last) * self.rate)
        if tokens < cost:
            self._buckets[key] = (tokens, now)
            retry = (cost - tokens) / self.rate
            raise LimitExceeded(
                f"rate limit exceeded for this caller ({self.rate:g}/s, burst {self.burst:g}); "
                f"retry in {retry:.2f}s",
                limit="rate",
                retry_after_s=retry,
            )
        self._buckets[key] = (tokens - cost, now)
        while len(self._buckets) > self.max_keys:
            self._buckets.popitem(last=False)

    def __len__(self) -> int:
        return len(self._buckets)
