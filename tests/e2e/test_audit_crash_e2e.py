"""The audit trail survives ``kill -9``: with ``audit.fsync: always`` every request that got a
reply has its record (matched by request id), and the rotated log still verifies."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import grpc
import pytest
import yaml
from infershield.v1 import firewall_pb2 as fpb
from infershield.v1 import firewall_pb2_grpc as fpb_grpc

from firewall_support import config_data, free_port
from infershield.audit import rotated_files, verify

pytestmark = pytest.mark.e2e

TESTS = Path(__file__).resolve().parents[1]
CLIENTS = 8


def test_kill_9_keeps_every_replied_request_in_a_verifiable_log(tmp_path: Path) -> None:
    log = tmp_path / "audit" / "audit.jsonl"
    port = free_port()
    cfg = tmp_path / "config.yaml"
    data = config_data(
        f"127.0.0.1:{port}",
        audit={
            "path": str(log),
            "key_env": "INFERSHIELD_CRASH_TEST_KEY",
            "record_allowed": True,
            "fsync": "always",
            "rotate_bytes": 16384,  # several files, so the crash test covers rotation too
        },
    )
    cfg.write_text(yaml.safe_dump(data))
    # A separate process (it gets SIGKILL); firewall_support registers the test policy's check.
    code = (
        f"import sys; sys.path.insert(0, {str(TESTS)!r}); import firewall_support; "
        "from infershield.cli import main; "
        f"sys.exit(main(['serve', '--config', {str(cfg)!r}]))"
    )
    env = {"INFERSHIELD_CRASH_TEST_KEY": "crash-key", "PATH": "/usr/bin:/bin"}
    proc = subprocess.Popen([sys.executable, "-c", code], env=env, stderr=subprocess.PIPE)
    replied: list[str] = []
    lock = threading.Lock()
    try:
        channel = grpc.insecure_channel(f"127.0.0.1:{port}")
        api = fpb_grpc.FirewallStub(channel)
        deadline = time.monotonic() + 120
        while True:  # up when the model answers
            try:
                api.Infer(fpb.InferRequest(model="minilm", prompt="warm up", id="warm"), timeout=30)
                break
            except grpc.RpcError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise
                time.sleep(0.2)

        def client(k: int) -> None:
            n = 0
            while True:
                rid = f"c{k}-{n}"
                n += 1
                try:
                    api.Infer(
                        fpb.InferRequest(model="minilm", prompt=f"note {k} number {n}", id=rid),
                        timeout=10,
                    )
                except grpc.RpcError:
                    return  # the server is gone
                with lock:
                    replied.append(rid)

        threads = [threading.Thread(target=client, args=(k,)) for k in range(CLIENTS)]
        for t in threads:
            t.start()
        while len(replied) < 200 and proc.poll() is None:
            time.sleep(0.05)
        proc.kill()  # SIGKILL: no drain, no close, no flush
        proc.wait(10)
        for t in threads:
            t.join(30)
        channel.close()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
        assert proc.stderr is not None
        proc.stderr.close()
    assert len(replied) >= 200
    rep = verify(log, key=b"crash-key")
    assert rep.ok, rep
    files = [*rotated_files(log), log]
    assert len(files) >= 3
    recorded: set[str] = set()
    for f in files:
        if f.exists():
            for line in f.read_text().splitlines():
                rec: dict[str, Any] = json.loads(line)
                recorded.add(rec.get("request_id", ""))
    missing = set(replied) - recorded
    assert not missing, sorted(missing)[:10]
