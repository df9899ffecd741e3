"""Abuse control across replicas: two firewalls share one real Redis.

Callers are told apart by address: each caller reaches each replica through its own
:class:`~redis_support.SourceProxy`, whose connections come from 127.0.0.N.
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from infershield.v1 import firewall_pb2 as fpb
from infershield.v1 import firewall_pb2_grpc as fpb_grpc

from firewall_support import INJECTION, config_data, free_port, write_config
from infershield.server.app import ServerThread
from redis_support import RedisServer, SourceProxy

pytestmark = pytest.mark.e2e


class Replicas:
    """Two ServerThreads on one config, and per-caller proxies to each."""

    def __init__(self, tmp_path: Path, data_for: Callable[[int], dict[str, Any]]) -> None:
        self.threads: list[ServerThread] = []
        self.ports: list[int] = []
        self.proxies: list[SourceProxy] = []
        self.channels: list[grpc.Channel] = []
        for i in range(2):
            cfg = write_config(tmp_path / f"replica{i}.yaml", data_for(i))
            st = ServerThread(cfg)
            self.ports.append(st.start())
            self.threads.append(st)

    def caller(self, ip: str) -> list[fpb_grpc.FirewallStub]:
        """One stub per replica, all from address ``ip``."""
        stubs = []
        for port in self.ports:
            proxy = SourceProxy(port, ip)
            self.proxies.append(proxy)
            ch = grpc.insecure_channel(f"127.0.0.1:{proxy.port}")
            # Connected before any flood starts, so setup time is not counted as flood time.
            grpc.channel_ready_future(ch).result(timeout=10)
            self.channels.append(ch)
            stubs.append(fpb_grpc.FirewallStub(ch))
        return stubs

    def close(self) -> None:
        for ch in self.channels:
            ch.close()
        for st in self.threads:
            st.stop(grace=0.5)
        for p in self.proxies:
            p.close()


def scan(stub: fpb_grpc.FirewallStub, text: str = "hello there") -> str:
    """'ok', or the refusal's ``infershield-limit`` (or the status code name)."""
    try:
        stub.Scan(fpb.ScanRequest(texts=[text]), timeout=10)
        return "ok"
    except grpc.RpcError as exc:
        e: Any = exc
        trailers = dict(e.trailing_metadata() or ())
        if e.code() is grpc.StatusCode.RESOURCE_EXHAUSTED:
            assert "retry-after" in trailers
            return str(trailers.get("infershield-limit"))
        return str(e.code().name)


def flood(
    stubs: list[fpb_grpc.FirewallStub], seconds: float, threads: int = 2
) -> tuple[Counter[str], float]:
    """Send as fast as ``threads`` threads can, alternating replicas.

    Returns the outcomes and the time from the first send to the last send (the span over
    which the bucket refilled while the flood was on).
    """
    out: Counter[str] = Counter()
    lock = threading.Lock()
    start = time.monotonic()
    last = [start]

    def worker(k: int) -> None:
        i = k
        while (sent := time.monotonic()) - start < seconds:
            r = scan(stubs[i % len(stubs)])
            i += 1
            with lock:
                out[r] += 1
                last[0] = max(last[0], sent)

    ts = [threading.Thread(target=worker, args=(k,)) for k in range(threads)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    return out, last[0] - start


@pytest.fixture
def redis_replicas(redis_server: RedisServer, tmp_path: Path) -> Iterator[Callable[..., Replicas]]:
    made: list[Replicas] = []

    def make(**sections: Any) -> Replicas:
        rl = {"backend": "redis", "redis_url": redis_server.url, "redis_timeout_s": 0.2}
        rl.update(sections.pop("ratelimit", {}))
        r = Replicas(
            tmp_path,
            lambda i: config_data(f"127.0.0.1:{free_port()}", ratelimit=rl, **sections),
        )
        made.append(r)
        return r

    yield make
    for r in made:
        r.close()


RATE, BURST, SECONDS = 20.0, 5.0, 3.0


def test_shared_buckets_hold_each_caller_to_its_limit_across_replicas(
    redis_replicas: Callable[..., Replicas],
) -> None:
    reps = redis_replicas(ratelimit={"default": {"requests_per_s": RATE, "requests_burst": BURST}})
    flooders = {ip: reps.caller(ip) for ip in ("127.0.0.2", "127.0.0.3", "127.0.0.4")}
    quiet = reps.caller("127.0.0.5")
    results: dict[str, tuple[Counter[str], float]] = {}

    def run(ip: str) -> None:
        results[ip] = flood(flooders[ip], SECONDS)

    ts = [threading.Thread(target=run, args=(ip,)) for ip in flooders]
    for t in ts:
        t.start()
    quiet_out: Counter[str] = Counter()
    while any(t.is_alive() for t in ts):  # a caller well under its limit, meanwhile
        quiet_out[scan(quiet[quiet_out.total() % 2])] += 1
        time.sleep(0.2)
    for t in ts:
        t.join()
    assert quiet_out["ok"] == quiet_out.total() >= 10, quiet_out
    for ip, (out, elapsed) in results.items():
        assert set(out) <= {"ok", "requests_per_s"}, (ip, out)
        assert out["requests_per_s"] > out["ok"]  # it really was a flood
        admitted_rate = (out["ok"] - BURST) / elapsed
        # Both replicas together admit the caller's one limit, not twice it.
        assert abs(admitted_rate - RATE) <= 0.05 * RATE, (ip, out, elapsed, admitted_rate)


def test_redis_killed_mid_flood_fails_closed_then_local_then_recovers(
    redis_replicas: Callable[..., Replicas], redis_server: RedisServer
) -> None:
    from infershield.telemetry import metrics

    reps = redis_replicas(
        ratelimit={
            "default": {"requests_per_s": RATE, "requests_burst": BURST},
            "on_error": "fallback",
            "error_grace_s": 1.0,
            "replicas": 2,
            "retry_interval_s": 0.2,
        }
    )
    caller = reps.caller("127.0.0.6")
    before, _ = flood(caller, 1.0)
    assert before["ok"] > 0 and set(before) <= {"ok", "requests_per_s"}
    redis_server.kill()
    grace, _ = flood(caller, 0.7)
    # Fail closed while the grace lasts: refusals name the store; nothing gets through.
    assert grace["ok"] == 0 and grace["ratelimit_store"] > 0, grace
    time.sleep(0.4)
    local, elapsed = flood(caller, 2.0)
    # Each replica limits locally at RATE/2 (burst BURST/2): together about RATE.
    assert 0.5 * RATE <= local["ok"] / elapsed <= 1.5 * RATE + BURST, (local, elapsed)
    assert "ratelimit_store" not in local
    for st in reps.threads:  # still serving, and saying so
        assert st.app.abuse is not None and st.app.abuse.limits.down_since is not None
    redis_server.start()
    time.sleep(0.5)
    after, _ = flood(caller, 1.0)
    assert after["ok"] > 0 and set(after) <= {"ok", "requests_per_s"}, after
    for st in reps.threads:
        assert st.app.abuse is not None and st.app.abuse.limits.down_since is None
    m = metrics.active()
    if m is not None:
        assert m.registry.get_sample_value("infershield_ratelimit_store_down") == 0


def test_attack_campaign_quarantines_the_caller_on_both_replicas(
    redis_replicas: Callable[..., Replicas], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from infershield.audit import verify
    from webhook_support import WebhookReceiver

    monkeypatch.setenv("INFERSHIELD_TEST_WEBHOOK_SECRET", "hook-key")
    receiver = WebhookReceiver(b"hook-key")
    audit = tmp_path / "audit.jsonl"
    try:
        reps = redis_replicas(
            anomaly={
                "enabled": True,
                "warmup": 10,
                "responses": {"score": ["log", "webhook", "quarantine"]},
                "quarantine_s": 60,
                "webhook": {"url": receiver.url, "secret_env": "INFERSHIELD_TEST_WEBHOOK_SECRET"},
            },
            audit={"path": str(audit)},
        )
        attacker = reps.caller("127.0.0.7")
        bystander = reps.caller("127.0.0.8")
        for i in range(24):  # a benign baseline on both replicas
            assert scan(attacker[i % 2], f"what is the weather like in city {i}?") == "ok"
            assert scan(bystander[i % 2], f"summarise chapter {i}") == "ok"
        # The campaign, replayed against replica 0 only.
        outcomes = [scan(attacker[0], INJECTION) for _ in range(5)]
        assert outcomes[0] == "ok"  # Scan reports the block in its result, not as an error
        assert "PERMISSION_DENIED" in outcomes  # quarantined after the anomaly
        # Both replicas now refuse the attacker (state in Redis), and only the attacker.
        assert scan(attacker[1]) == "PERMISSION_DENIED"
        assert scan(attacker[0]) == "PERMISSION_DENIED"
        assert scan(bystander[0]) == "ok" and scan(bystander[1]) == "ok"
        got = receiver.wait_for(1)
        assert got and got[0].signature_ok
        assert got[0].body["caller"] == "ipv4:127.0.0.7" and got[0].body["feature"] == "score"
        assert "quarantine" in got[0].body["responses"]
    finally:
        receiver.close()
    for st in reps.threads:
        st.stop(grace=0.5)
    reps.threads.clear()
    text = audit.read_text()
    assert '"event":"anomaly"' in text and '"event":"quarantine"' in text
    assert '"event":"alert"' in text and '"outcome":"sent"' in text
    assert verify(audit).ok
