"""Per-caller token buckets on two axes (requests/s, model tokens/s) over a :class:`Store`.

Which buckets apply to a call: ``ratelimit.models[model]`` (a bucket per caller *and*
model), else ``ratelimit.loopback`` for anonymous loopback callers, else
``ratelimit.default``. The request axis is taken when a call is admitted; input tokens
once the request has been tokenized (refused if the bucket cannot pay); output tokens once
the response has been screened (taken anyway, the work is done: the bucket goes into debt
and the caller's next calls wait it out). On a remote store the output debit runs in the
background, so the reply does not wait for that round trip.

When the store is unreachable, ``on_error`` decides (see :class:`CallerLimits`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from infershield.abuse.store import Bucket, Clock, MemoryStore, Store, StoreUnavailable, Take
from infershield.config import RateLimitConfig, RateSpec
from infershield.errors import LimitExceeded, Quarantined

log = logging.getLogger(__name__)

#: Output-token debits allowed in flight; past this a debit is awaited (back-pressure).
MAX_PENDING_DEBITS = 1024
#: How often an open stream re-reads its caller's quarantine from a remote store (seconds).
REMOTE_RECHECK_S = 1.0
#: Caller ids of anonymous loopback callers (what ``caller_key`` returns for them).
_LOOPBACK = ("ipv4:127.", "ipv6:[::1]", "unix:")


def is_loopback(caller: str) -> bool:
    """An anonymous caller connected over loopback (a local client or sidecar)."""
    return caller.startswith(_LOOPBACK)


@dataclass(frozen=True, slots=True)
class Buckets:
    """The resolved buckets of one (caller, model): either may be None (axis off)."""

    scope: str
    requests: Bucket | None
    tokens: Bucket | None


def _bucket(rate: float, burst: float) -> Bucket | None:
    return Bucket(rate, burst or max(1.0, rate)) if rate > 0 else None


def _buckets(scope: str, spec: RateSpec) -> Buckets:
    return Buckets(
        scope,
        _bucket(spec.requests_per_s, spec.requests_burst),
        _bucket(spec.tokens_per_s, spec.tokens_burst),
    )


class CallerLimits:
    """Decides, per caller, whether a call or its tokens fit; raises LimitExceeded if not.

    Store failures, by ``on_error``:

    - ``fallback`` (default): refuse for ``error_grace_s`` (a short blip must not hand every
      replica a fresh, unshared budget), then limit locally at 1/``replicas`` of each rate,
      so the replicas together stay near the shared limit; back to the store as soon as a
      retry (every ``retry_interval_s``) succeeds. Logged and counted.
    - ``block``: refuse every call until the store is back.
    - ``allow``: admit without limits while it is down (only on purpose).

    Refusals are RESOURCE_EXHAUSTED with ``retry-after``; a store refusal names the limit
    ``ratelimit_store``.
    """

    def __init__(
        self,
        cfg: RateLimitConfig,
        store: Store,
        *,
        clock: Clock = time.monotonic,
        on_store_state: Callable[[bool], None] | None = None,
    ) -> None:
        self.cfg = cfg
        self.store = store
        self._clock = clock
        self._on_store_state = on_store_state
        #: The local fallback (only used while a remote store is down).
        self.local = store if store.name == MemoryStore.name else MemoryStore(clock=clock)
        self._default = _buckets("*", cfg.default)
        self._loopback = None if cfg.loopback is None else _buckets("*", cfg.loopback)
        self._models = {m: _buckets(m, s) for m, s in cfg.models.items()}
        self.down_since: float | None = None
        self._last_try = 0.0
        #: Output-token debits in flight (remote store only; see charge_tokens).
        self._pending: set[asyncio.Task[None]] = set()

    @property
    def enabled(self) -> bool:
        specs = [self._default, *self._models.values()]
        if self._loopback is not None:
            specs.append(self._loopback)
        return any(b.requests or b.tokens for b in specs)

    def buckets(self, caller: str, model: str) -> Buckets:
        per_model = self._models.get(model)
        if per_model is not None:
            return per_model
        if self._loopback is not None and is_loopback(caller):
            return self._loopback
        return self._default

    # ------------------------------------------------------------------ calls

    async def admit(self, caller: str, model: str = "") -> None:
        """A new call: refuse a quarantined caller, then take one request token."""
        b = self.buckets(caller, model)
        if b.requests is None:
            left = await self._guard(lambda s, d: self._quarantine_only(s, caller))
            if left.quarantined_s > 0:
                raise _quarantined(left.quarantined_s)
            return
        bucket = b.requests
        res = await self._guard(
            lambda s, d: s.take(
                f"{caller}|req|{b.scope}",
                bucket.scaled(d),
                1.0,
                quarantine_key=caller,
            )
        )
        if res.quarantined_s > 0:
            raise _quarantined(res.quarantined_s)
        if not res.allowed:
            raise LimitExceeded(
                f"request rate limit exceeded for this caller ({bucket.rate:g}/s, burst "
                f"{bucket.burst:g}); retry in {res.retry_after_s:.2f}s",
                limit="requests_per_s",
                retry_after_s=res.retry_after_s,
            )

    async def charge_tokens(
        self, caller: str, model: str, tokens: int, *, output: bool = False
    ) -> None:
        """Take ``tokens`` model tokens: input tokens must fit, output tokens are debited."""
        b = self.buckets(caller, model)
        if b.tokens is None or tokens <= 0:
            return
        bucket = b.tokens
        if not output and tokens > bucket.burst:
            raise LimitExceeded(
                f"request needs {tokens} tokens; this caller's token burst is {bucket.burst:g}",
                limit="tokens_per_s",
            )
        key = f"{caller}|tok|{b.scope}"
        if output and self.store is not self.local and len(self._pending) < MAX_PENDING_DEBITS:
            # A debit is never refused, so the reply need not wait for the round trip.
            task = asyncio.get_running_loop().create_task(self._debit(key, bucket, tokens))
            self._pending.add(task)
            task.add_done_callback(self._pending.discard)
            return
        res = await self._guard(lambda s, d: s.take(key, bucket.scaled(d), tokens, force=output))
        if not res.allowed:
            raise LimitExceeded(
                f"token rate limit exceeded for this caller ({bucket.rate:g} tokens/s, burst "
                f"{bucket.burst:g}); retry in {res.retry_after_s:.2f}s",
                limit="tokens_per_s",
                retry_after_s=res.retry_after_s,
            )

    async def _debit(self, key: str, bucket: Bucket, tokens: int) -> None:
        # The store down and refusing: there is nothing to debit against.
        with contextlib.suppress(LimitExceeded):
            await self._guard(lambda s, d: s.take(key, bucket.scaled(d), tokens, force=True))

    async def quarantine(self, caller: str, seconds: float) -> None:
        """Quarantine ``caller`` in the store (every replica enforces it)."""

        async def op(s: Store, d: int) -> Take:
            await s.quarantine(caller, seconds)
            return Take(True, 0.0)

        await self._guard(op)

    async def quarantined_for(self, caller: str) -> float:
        return (await self._guard(lambda s, d: self._quarantine_only(s, caller))).quarantined_s

    def watch(self, caller: str) -> QuarantineWatch:
        """A :class:`QuarantineWatch` of ``caller``, for a stream it has open."""
        return QuarantineWatch(
            self, caller, remote=self.store is not self.local, clock=self._clock
        )

    @staticmethod
    async def _quarantine_only(store: Store, caller: str) -> Take:
        left = await store.quarantined_for(caller)
        return Take(left <= 0, 0.0, left, left)

    # ------------------------------------------------------------------ store failures

    async def _guard(self, op: Callable[[Store, int], Awaitable[Take]]) -> Take:
        """Run ``op`` on the store; on failure apply ``on_error``. ``op`` gets the store and
        the divisor for the bucket rates (1, or ``replicas`` on the local fallback)."""
        now = self._clock()
        if self.store is self.local:
            return await op(self.store, 1)
        if self.down_since is None or now - self._last_try >= self.cfg.retry_interval_s:
            self._last_try = now
            try:
                res = await op(self.store, 1)
            except StoreUnavailable as exc:
                self._mark_down(now, exc)
            else:
                self._mark_up(now)
                return res
        assert self.down_since is not None
        mode = self.cfg.on_error
        if mode == "allow":
            return Take(True, math.inf)
        grace_left = self.down_since + self.cfg.error_grace_s - now
        if mode == "block" or grace_left > 0:
            retry = self.cfg.retry_interval_s if mode == "block" else max(grace_left, 0.001)
            raise LimitExceeded(
                f"the rate limit store is unreachable; refusing calls (on_error {mode}); "
                f"retry in {retry:.2f}s",
                limit="ratelimit_store",
                retry_after_s=retry,
            )
        return await op(self.local, self.cfg.replicas)

    def _mark_down(self, now: float, exc: StoreUnavailable) -> None:
        if self.down_since is None:
            self.down_since = now
            log.error(
                "rate limit store %s unreachable (%s); on_error=%s: %s",
                self.store.name,
                exc,
                self.cfg.on_error,
                {
                    "fallback": f"refusing calls for {self.cfg.error_grace_s:g}s, then limiting "
                    f"locally at 1/{self.cfg.replicas} of each rate",
                    "block": "refusing calls until it is back",
                    "allow": "admitting calls WITHOUT rate limits until it is back",
                }[self.cfg.on_error],
            )
            if self._on_store_state is not None:
                self._on_store_state(False)

    def _mark_up(self, now: float) -> None:
        if self.down_since is not None:
            log.warning(
                "rate limit store %s reachable again after %.1fs; shared limits resume",
                self.store.name,
                now - self.down_since,
            )
            self.down_since = None
            if self._on_store_state is not None:
                self._on_store_state(True)

    async def close(self) -> None:
        if self._pending:
            await asyncio.wait(self._pending, timeout=1.0)
        await self.store.close()


class QuarantineWatch:
    """Re-reads one caller's quarantine while a stream it opened goes on.

    A stream is admitted once, as it opens, so a quarantine set later (by the anomaly
    responder, on this replica or another) would not reach it. :meth:`check` runs before each
    of the stream's requests: on the in-memory store at every request (a dictionary look-up),
    on a remote store at most every :data:`REMOTE_RECHECK_S` (one round trip, not one per
    message). Store failures count as they do for a new call (``on_error``).
    """

    def __init__(
        self, limits: CallerLimits, caller: str, *, remote: bool, clock: Clock = time.monotonic
    ) -> None:
        self.limits = limits
        self.caller = caller
        self.remote = remote
        self._clock = clock
        # The stream was admitted just now: a remote store is next asked one interval on.
        self._next = clock() + REMOTE_RECHECK_S if remote else 0.0

    async def check(self) -> None:
        """Raise :class:`~infershield.errors.Quarantined` if the caller is quarantined now."""
        if self.remote:
            now = self._clock()
            if now < self._next:
                return
            self._next = now + REMOTE_RECHECK_S
        left = await self.limits.quarantined_for(self.caller)
        if left > 0:
            raise _quarantined(left)


def _quarantined(left: float) -> Quarantined:
    return Quarantined(
        f"this caller is quarantined after anomalous behaviour; retry in {left:.0f}s",
        retry_after_s=left,
    )
