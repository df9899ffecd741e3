"""An oversized request is refused by the transport before it is buffered: memory stays flat.

The server runs in its own process so that its resident memory can be read from /proc.
"""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
import yaml
from tritonclient.grpc import service_pb2 as pb

from e2e.helpers import encode, stub, text_request
from firewall_support import TritonHandle, free_port

pytestmark = pytest.mark.e2e
MAX_REQUEST_BYTES = 8 * 1024 * 1024  # the shipped default
HUGE = 300 * 1024 * 1024


def _rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS")


@pytest.fixture(scope="module")
def server(triton: TritonHandle, tmp_path_factory: pytest.TempPathFactory) -> Iterator[
    tuple[str, int]
]:
    port = free_port()
    cfg = tmp_path_factory.mktemp("oversize") / "config.yaml"
    cfg.write_text(
        yaml.safe_dump(
            {
                "server": {"listen": f"127.0.0.1:{port}", "grace_period_s": 1.0},
                "backend": {"kind": "triton", "upstream": f"triton://{triton.url}"},
                "policy": {"input": [{"type": "repetition"}], "output": [{"type": "secrets"}]},
                "limits": {"max_request_bytes": MAX_REQUEST_BYTES},
            }
        ),
        encoding="utf-8",
    )
    cmd = [sys.executable, "-m", "infershield", "serve", "--config", str(cfg)]
    url = f"127.0.0.1:{port}"
    with subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL) as proc:
        try:
            ch, s = stub(url)
            with ch:
                end = time.monotonic() + 60
                while True:
                    try:
                        s.ModelInfer(text_request(["warm up"]), timeout=2)
                        break
                    except grpc.RpcError:
                        assert proc.poll() is None and time.monotonic() < end, "no server"
                        time.sleep(0.2)
            yield url, proc.pid
        finally:
            proc.terminate()
            proc.wait(20)


def test_oversized_requests_keep_memory_flat(server: tuple[str, int]) -> None:
    url, pid = server
    huge = pb.ModelInferRequest(model_name="echo", id="huge")
    huge.inputs.add(name="TEXT", datatype="BYTES", shape=[1, 1])
    huge.raw_input_contents.append(encode([b"x" * HUGE]))
    ch, s = stub(url)
    with ch:
        for _ in range(3):  # settle allocator pools on ordinary traffic first
            s.ModelInfer(text_request(["hello"] * 8), timeout=10)
        baseline = _rss_mb(pid)
        peak = baseline
        t0 = time.monotonic()
        for _ in range(10):
            with pytest.raises(grpc.RpcError) as err:
                s.ModelInfer(huge, timeout=60)
            assert err.value.code() is grpc.StatusCode.RESOURCE_EXHAUSTED  # type: ignore[attr-defined]
            peak = max(peak, _rss_mb(pid))
        elapsed = time.monotonic() - t0
        ok = s.ModelInfer(text_request(["still serving"]), timeout=10)
        assert ok.outputs[0].name == "OUTPUT"
    after = _rss_mb(pid)
    # Refused by the transport: no 300 MB buffer, so resident memory barely moves.
    assert peak - baseline < 8, (baseline, peak)
    assert after - baseline < 8, (baseline, after)
    assert elapsed < 60  # ten refusals, not ten 300 MB reads; generous for a loaded CI box
