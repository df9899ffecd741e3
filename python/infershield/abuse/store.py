"""Bucket and quarantine state behind one interface; the in-memory backend.

A :class:`Store` does two things atomically per call: take tokens from a caller's bucket
(optionally after checking that the caller is not quarantined), and set or read a
quarantine. The in-memory store serves one process; :class:`~.redis_store.RedisStore` shares
the same state across replicas.
"""

from __future__ import annotations

import collections
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

Clock = Callable[[], float]


class StoreUnavailable(Exception):
    """The store could not be reached or answered with an error (the limiter decides)."""


@dataclass(frozen=True, slots=True)
class Bucket:
    """A token bucket: refills at ``rate`` per second up to ``burst`` tokens."""

    rate: float
    burst: float

    def __post_init__(self) -> None:
        if not (0 < self.rate < math.inf and 0 < self.burst < math.inf):
            raise ValueError("a bucket needs a positive, finite rate and burst")

    def scaled(self, divisor: int) -> Bucket:
        """This bucket at 1/``divisor`` of the rate and burst (a replica's local share)."""
        return Bucket(self.rate / divisor, max(1.0, self.burst / divisor))


@dataclass(frozen=True, slots=True)
class Take:
    """The outcome of one take: admitted or not, what is left, and when to retry."""

    allowed: bool
    tokens: float
    retry_after_s: float = 0.0
    #: Seconds of quarantine left when the caller is quarantined (then ``allowed`` is False).
    quarantined_s: float = 0.0


class Store(Protocol):
    """Where buckets and quarantines live. Every method is one atomic step."""

    name: str

    async def take(
        self,
        key: str,
        bucket: Bucket,
        cost: float,
        *,
        force: bool = False,
        quarantine_key: str = "",
    ) -> Take:
        """Take ``cost`` tokens from ``key``'s bucket.

        Without ``force`` the take happens only if enough tokens are there (else ``allowed``
        is False and ``retry_after_s`` says when they will be). With ``force`` the tokens are
        taken anyway (work already done, e.g. output tokens): the bucket may go into debt
        down to ``-burst``, which later takes must wait out. With ``quarantine_key``, a
        quarantined caller is refused first and nothing is taken.
        """
        ...

    async def quarantine(self, key: str, seconds: float) -> None:
        """Quarantine ``key`` for ``seconds`` (replacing any earlier quarantine)."""
        ...

    async def quarantined_for(self, key: str) -> float:
        """Seconds of quarantine left for ``key`` (0 when none)."""
        ...

    async def close(self) -> None: ...


def refill(tokens: float, last: float, now: float, bucket: Bucket) -> float:
    """Tokens after refilling from ``last`` to ``now`` (a clock going backwards adds none)."""
    return min(bucket.burst, tokens + max(0.0, now - last) * bucket.rate)


def take_tokens(tokens: float, cost: float, bucket: Bucket, force: bool) -> Take:
    """The bucket arithmetic both backends share (the Redis script mirrors it)."""
    if force:
        return Take(True, max(tokens - cost, -bucket.burst))
    if tokens >= cost:
        return Take(True, tokens - cost)
    return Take(False, tokens, (cost - tokens) / bucket.rate)


class MemoryStore:
    """Buckets and quarantines in this process. Bounded: least recently used keys go first
    (a forgotten caller starts again with a full bucket, which errs on the side of serving;
    quarantines are kept in their own map so bucket churn cannot evict them)."""

    name = "memory"

    def __init__(self, *, max_keys: int = 100_000, clock: Clock = time.monotonic) -> None:
        self.max_keys = max_keys
        self._clock = clock
        self._buckets: collections.OrderedDict[str, tuple[float, float]] = collections.OrderedDict()
        self._until: collections.OrderedDict[str, float] = collections.OrderedDict()

    def take_now(
        self,
        key: str,
        bucket: Bucket,
        cost: float,
        *,
        force: bool = False,
        quarantine_key: str = "",
    ) -> Take:
        """:meth:`take`, synchronously."""
        now = self._clock()
        if quarantine_key:
            left = self._quarantine_left(quarantine_key, now)
            if left > 0:
                return Take(False, 0.0, left, left)
        tokens, last = self._buckets.pop(key, (bucket.burst, now))
        result = take_tokens(refill(tokens, last, now, bucket), cost, bucket, force)
        self._buckets[key] = (result.tokens, max(now, last))
        while len(self._buckets) > self.max_keys:
            self._buckets.popitem(last=False)
        return result

    async def take(
        self,
        key: str,
        bucket: Bucket,
        cost: float,
        *,
        force: bool = False,
        quarantine_key: str = "",
    ) -> Take:
        return self.take_now(key, bucket, cost, force=force, quarantine_key=quarantine_key)

    def _quarantine_left(self, key: str, now: float) -> float:
        until = self._until.get(key)
        if until is None:
            return 0.0
        if until <= now:
            del self._until[key]
            return 0.0
        return until - now

    async def quarantine(self, key: str, seconds: float) -> None:
        self._until.pop(key, None)
        self._until[key] = self._clock() + seconds
        while len(self._until) > self.max_keys:
            self._until.popitem(last=False)

    async def quarantined_for(self, key: str) -> float:
        return self._quarantine_left(key, self._clock())

    async def close(self) -> None:
        self._buckets.clear()

    def __len__(self) -> int:
        return len(self._buckets)
