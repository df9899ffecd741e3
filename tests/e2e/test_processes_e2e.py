"""``server.processes: 2``: two serving processes on one port under a supervisor, through a
real Triton. Both serve, one metrics endpoint sums them, SIGHUP reaches each, a killed one is
replaced, SIGTERM drains calls in flight, and the audit chains verify as a set."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import grpc
import pytest
import yaml
from tritonclient.grpc import service_pb2_grpc as pb_grpc

from e2e.helpers import text_request
from firewall_support import TEST_POLICY, TritonHandle, config_data, free_port
from infershield.audit import process_chain_path, verify_set

pytestmark = pytest.mark.e2e

TESTS = Path(__file__).resolve().parents[1]
AUDIT_KEY = "procs-key"


@dataclass
class Group:
    proc: subprocess.Popen[bytes]
    port: int
    metrics_port: int
    audit: Path
    lines: list[str] = field(default_factory=list)

    def children(self) -> list[int]:
        raw = Path(f"/proc/{self.proc.pid}/task/{self.proc.pid}/children").read_text()
        return sorted(int(p) for p in raw.split())

    def metric(self, name: str, **labels: str) -> float:
        """The sum of ``name``'s samples whose labels include ``labels``."""
        url = f"http://127.0.0.1:{self.metrics_port}/metrics"
        text = urllib.request.urlopen(url, timeout=10).read().decode()
        total = 0.0
        for line in text.splitlines():
            m = re.match(rf"{name}(?:{{(.*)}})? (\S+)$", line)
            if m and all(f'{k}="{v}"' in (m.group(1) or "") for k, v in labels.items()):
                total += float(m.group(2))
        return total

    def wait_log(self, needle: str, count: int = 1, timeout: float = 90.0) -> None:
        end = time.monotonic() + timeout
        while sum(needle in line for line in self.lines) < count:
            assert self.proc.poll() is None, "\n".join(self.lines[-30:])
            assert time.monotonic() < end, f"no {needle!r} in:\n" + "\n".join(self.lines[-30:])
            time.sleep(0.05)


def infer(port: int, text: str, timeout: float = 20.0) -> None:
    """One ModelInfer on a fresh channel: a new connection, which the kernel may hand to
    either process."""
    with grpc.insecure_channel(f"127.0.0.1:{port}") as ch:
        pb_grpc.GRPCInferenceServiceStub(ch).ModelInfer(text_request([text]), timeout=timeout)


@pytest.fixture(scope="module")
def group(triton: TritonHandle, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Group]:
    tmp = tmp_path_factory.mktemp("procs")
    port, metrics_port = free_port(), free_port()
    policy = dict(TEST_POLICY)
    policy["input"] = [*TEST_POLICY["input"], {"type": "test_sleep", "name": "sleep"}]
    data = config_data(
        f"127.0.0.1:{port}",
        upstream=triton.url,
        policy=policy,
        audit={"path": str(tmp / "audit.jsonl"), "key_env": "PROCS_TEST_KEY",
               "record_allowed": True},
    )
    data["server"].update(processes=2, metrics_listen=f"127.0.0.1:{metrics_port}",
                          grace_period_s=5.0)
    data["cache_dir"] = str(tmp / "cache")
    cfg = tmp / "config.yaml"
    cfg.write_text(yaml.safe_dump(data))
    # Each child re-runs this command line, so it registers the test checks too.
    code = (
        f"import sys; sys.path.insert(0, {str(TESTS)!r}); import firewall_support; "
        "from infershield.cli import main; "
        f"sys.exit(main(['serve', '--config', {str(cfg)!r}]))"
    )
    env = {**os.environ, "PROCS_TEST_KEY": AUDIT_KEY,
           "INFERSHIELD_TELEMETRY__LOG_FORMAT": "text", "INFERSHIELD_TELEMETRY__LOG_LEVEL": "INFO"}
    proc = subprocess.Popen([sys.executable, "-c", code], env=env, stderr=subprocess.PIPE)
    g = Group(proc, port, metrics_port, tmp / "audit.jsonl")

    def read() -> None:
        assert proc.stderr is not None
        for raw in proc.stderr:
            g.lines.append(raw.decode(errors="replace").rstrip())

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    try:
        g.wait_log("with 2 processes")
        assert g.metric("infershield_in_flight_requests") == 0
        yield g
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
        reader.join(10)
        assert proc.stderr is not None
        proc.stderr.close()


def test_both_processes_serve_and_one_endpoint_sums_them(group: Group) -> None:
    assert len(group.children()) == 2
    for i in range(40):
        infer(group.port, f"hello {i}")
    # record_allowed: each process's chain holds the calls it served.
    served = {}
    for index in (0, 1):
        lines = process_chain_path(group.audit, index).read_text().splitlines()
        served[index] = sum(json.loads(line).get("event") == "screen" for line in lines)
    assert served[0] > 0 and served[1] > 0, served
    assert served[0] + served[1] >= 40  # input and output screens of the 40 calls
    assert group.metric("infershield_requests_total", rpc="ModelInfer", code="OK") == 40


def test_sighup_reaches_every_process(group: Group) -> None:
    before = group.metric("infershield_policy_reloads_total", result="ok")
    group.proc.send_signal(signal.SIGHUP)
    end = time.monotonic() + 30
    while group.metric("infershield_policy_reloads_total", result="ok") < before + 2:
        assert time.monotonic() < end, group.lines[-20:]
        time.sleep(0.1)
    time.sleep(0.5)
    assert group.metric("infershield_policy_reloads_total", result="ok") == before + 2
    infer(group.port, "after reload")


def test_a_killed_process_is_restarted(group: Group) -> None:
    old = group.children()
    os.kill(old[0], signal.SIGKILL)
    group.wait_log("is serving", count=3)  # two at start, then the replacement
    new = group.children()
    assert len(new) == 2 and old[0] not in new and old[1] in new
    assert any("exited with code -9; restarting" in line for line in group.lines)
    assert group.metric("infershield_process_restarts_total") == 1
    for i in range(10):
        infer(group.port, f"after restart {i}")


def test_sigterm_drains_calls_in_flight(group: Group) -> None:
    results: list[str] = []

    def slow(i: int) -> None:
        try:
            infer(group.port, f"take your time {i}")
            results.append("OK")
        except grpc.RpcError as exc:
            results.append(f"{exc.code().name}: {exc.details()}")

    threads = [threading.Thread(target=slow, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    end = time.monotonic() + 20
    while group.metric("infershield_in_flight_requests") < 8:  # all inside the 1 s check
        assert time.monotonic() < end, group.lines[-20:]
        time.sleep(0.02)
    group.proc.send_signal(signal.SIGTERM)
    for t in threads:
        t.join(30)
    assert group.proc.wait(30) == 0, group.lines[-20:]
    assert results == ["OK"] * 8, "\n".join([*results, *group.lines[-40:]])


def test_audit_verify_checks_the_set(group: Group) -> None:
    assert group.proc.poll() is not None  # after the drain: every record is on disk
    cli = [sys.executable, "-m", "infershield", "audit", "verify", str(group.audit),
           "--key-env", "PROCS_TEST_KEY"]
    env = {**os.environ, "PROCS_TEST_KEY": AUDIT_KEY}
    out = subprocess.run(cli, env=env, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stdout + out.stderr
    report = json.loads(out.stdout)
    assert report["ok"] and set(report["chains"]) == {"p0", "p1"}

    p1 = process_chain_path(group.audit, 1)
    good = p1.read_text()
    lines = good.splitlines()
    lines[1] = lines[1].replace('"decision":"allow"', '"decision":"block"')
    assert lines[1] != good.splitlines()[1]
    p1.write_text("\n".join(lines) + "\n")
    out = subprocess.run(cli, env=env, capture_output=True, text=True, timeout=60)
    assert out.returncode == 1 and not json.loads(out.stdout)["chains"]["p1"]["ok"]

    p1.unlink()  # a whole chain gone is caught too
    assert not verify_set(group.audit, key=AUDIT_KEY.encode()).ok
    assert verify_set(group.audit, key=AUDIT_KEY.encode()).missing == (1,)
