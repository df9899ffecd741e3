"""Abuse control shared across replicas: token buckets, quarantine, anomaly detection.

Transport-free. :mod:`.store` holds the bucket and quarantine state (in memory, or in Redis
via :mod:`.redis_store` so every replica sees the same state); :mod:`.limiter` turns the
``ratelimit`` config into per-caller decisions and handles an unreachable store;
:mod:`.anomaly` keeps per-caller streaming statistics; :mod:`.response` acts on anomalies
(log and metric, signed webhook, quarantine, audit); :mod:`.control` ties them to one call.

Every decision is keyed by ONE caller-identity string that the server derives in one place
(``infershield.server.admission.caller_key``).
"""

from infershield.abuse.store import Bucket, MemoryStore, Store, StoreUnavailable, Take

__all__ = ["Bucket", "MemoryStore", "Store", "StoreUnavailable", "Take"]
