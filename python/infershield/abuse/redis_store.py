"""Buckets and quarantines in Redis, shared by every replica.

Check and take are one step: a Lua script runs atomically inside Redis, so two replicas can
never both spend a caller's last token. By default the script reads Redis' own clock
(``TIME``), so replicas with skewed clocks still agree; tests may pass an explicit clock.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Callable
from typing import Any

import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import RedisError

from infershield.abuse.store import Bucket, StoreUnavailable, Take

# KEYS[1]: the bucket (a hash: t = tokens, ts = last refill); KEYS[2]: the quarantine key
# or an unused placeholder. ARGV: rate, burst, cost, force (0/1), check quarantine (0/1),
# now (seconds; negative: Redis' clock). Numbers come back as strings: Redis would
# truncate Lua floats to integers. Mirrors infershield.abuse.store.take_tokens.
TAKE_LUA = """
local rate = tonumber(ARGV[1])
local burst = tonumber(ARGV[2])
local cost = tonumber(ARGV[3])
local now = tonumber(ARGV[6])
if now < 0 then
  local t = redis.call('TIME')
  now = tonumber(t[1]) + tonumber(t[2]) / 1000000
end
if ARGV[5] == '1' then
  local q = redis.call('PTTL', KEYS[2])
  if q > 0 then
    return {0, '0', tostring(q / 1000), tostring(q / 1000)}
  end
end
local s = redis.call('HMGET', KEYS[1], 't', 'ts')
local tokens = tonumber(s[1])
local last = tonumber(s[2])
if tokens == nil or last == nil then
  tokens = burst
  last = now
end
if now > last then
  tokens = math.min(burst, tokens + (now - last) * rate)
  last = now
end
local ok = 1
local retry = 0
if ARGV[4] == '1' then
  tokens = math.max(tokens - cost, -burst)
elseif tokens >= cost then
  tokens = tokens - cost
else
  ok = 0
  retry = (cost - tokens) / rate
end
redis.call('HSET', KEYS[1], 't', tostring(tokens), 'ts', tostring(last))
redis.call('PEXPIRE', KEYS[1], math.ceil(2 * burst / rate * 1000) + 1000)
return {ok, tostring(tokens), tostring(retry), '0'}
"""

_ERRORS = (RedisError, OSError, asyncio.TimeoutError)


class RedisStore:
    """A :class:`~infershield.abuse.store.Store` in Redis (redis-py's asyncio client).

    Every failure (refused connection, timeout, error reply) becomes
    :class:`~infershield.abuse.store.StoreUnavailable`; the limiter decides what then.
    """

    name = "redis"

    def __init__(
        self,
        url: str,
        *,
        prefix: str = "infershield",
        timeout_s: float = 0.05,
        clock: Callable[[], float] | None = None,
    ) -> None:
        self.url = url
        self.prefix = prefix
        self.timeout_s = timeout_s
        self._clock = clock
        self._client: Any = None
        self._script: Any = None

    def _conn(self) -> Any:
        # Created on first use, inside the event loop that uses it (asyncio pools are per loop).
        if self._client is None:
            self._client = aioredis.Redis.from_url(
                self.url,
                socket_timeout=self.timeout_s,
                socket_connect_timeout=self.timeout_s,
                # One immediate retry replaces a pooled connection that died with a restarted
                # Redis; the client's default (backoff up to seconds) would stall the caller.
                retry=Retry(NoBackoff(), 1),
                retry_on_timeout=False,
                health_check_interval=0,
            )
            self._script = self._client.register_script(TAKE_LUA)
        return self._client

    def key(self, *parts: str) -> str:
        return ":".join((self.prefix, *parts))

    async def take(
        self,
        key: str,
        bucket: Bucket,
        cost: float,
        *,
        force: bool = False,
        quarantine_key: str = "",
    ) -> Take:
        self._conn()
        now = -1.0 if self._clock is None else self._clock()
        qkey = self.key("q", quarantine_key) if quarantine_key else self.key("q", "-")
        try:
            ok, tokens, retry, quarantined = await self._script(
                keys=[self.key("b", key), qkey],
                args=[
                    repr(bucket.rate),
                    repr(bucket.burst),
                    repr(float(cost)),
                    "1" if force else "0",
                    "1" if quarantine_key else "0",
                    repr(now),
                ],
            )
        except _ERRORS as exc:
            raise StoreUnavailable(f"redis: {exc}") from None
        retry_s = float(retry)
        return Take(
            bool(int(ok)),
            float(tokens),
            math.inf if retry_s > 1e300 else retry_s,
            float(quarantined),
        )

    async def quarantine(self, key: str, seconds: float) -> None:
        try:
            await self._conn().set(self.key("q", key), "1", px=max(1, math.ceil(seconds * 1000)))
        except _ERRORS as exc:
            raise StoreUnavailable(f"redis: {exc}") from None

    async def quarantined_for(self, key: str) -> float:
        try:
            ms = await self._conn().pttl(self.key("q", key))
        except _ERRORS as exc:
            raise StoreUnavailable(f"redis: {exc}") from None
        return max(0.0, int(ms) / 1000.0)

    async def close(self) -> None:
        if self._client is not None:
            client, self._client = self._client, None
            await client.aclose()
