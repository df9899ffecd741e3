"""A burst of concurrent ModelInfer calls through the firewall, with and without a reload.

Issue 18: 3,000 concurrent calls from one asyncio client saw ~22% CANCELLED, which gRPC
core sent when its backlog of calls not yet picked up by the server overflowed. A caller
may only ever see OK, a shed (RESOURCE_EXHAUSTED with a retry-after) or UNAVAILABLE.
"""

from __future__ import annotations

import asyncio
import collections
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import grpc
import pytest
import yaml
from tritonclient.grpc import service_pb2_grpc as pb_grpc

from e2e.helpers import text_request
from firewall_support import TritonHandle, free_port

pytestmark = pytest.mark.e2e

#: Past gRPC core's old default backlog (1,000 soft, 3,000 hard): fails without the fix.
BURST = 3000
ALLOWED = {
    grpc.StatusCode.OK,
    grpc.StatusCode.RESOURCE_EXHAUSTED,
    grpc.StatusCode.UNAVAILABLE,
}
RULES_ONLY = Path(__file__).parents[2] / "python" / "infershield" / "policies" / "rules_only.yaml"


def _config(port: int, upstream: str, banned: str) -> dict[str, Any]:
    """The shipped rules-only policy plus one banned word (to see a reload take effect);
    default limits."""
    policy = yaml.safe_load(RULES_ONLY.read_text(encoding="utf-8"))["policy"]
    policy["input"].append({"type": "ban_substrings", "options": {"substrings": [banned]}})
    return {
        "server": {"listen": f"127.0.0.1:{port}", "grace_period_s": 1.0},
        "backend": {"kind": "triton", "upstream": f"triton://{upstream}"},
        "policy": policy,
        "telemetry": {"log_level": "WARNING"},
    }


async def _burst(
    url: str, n: int, *, midway: Callable[[], None] | None = None
) -> tuple[collections.Counter[grpc.StatusCode], list[dict[str, str]]]:
    """``n`` concurrent ModelInfer calls on one channel (30 s timeout each); returns the
    status counts and the trailers of the shed calls. ``midway`` runs after n/3 answers."""
    done = 0
    shed: list[dict[str, str]] = []
    async with grpc.aio.insecure_channel(url) as ch:
        stub = pb_grpc.GRPCInferenceServiceStub(ch)  # type: ignore[no-untyped-call]

        async def one(i: int) -> grpc.StatusCode:
            nonlocal done
            try:
                await stub.ModelInfer(text_request([f"hello number {i}"]), timeout=30)
                code = grpc.StatusCode.OK
            except grpc.aio.AioRpcError as exc:
                code = exc.code()
                if code is grpc.StatusCode.RESOURCE_EXHAUSTED:
                    shed.append(dict(exc.trailing_metadata() or ()))  # type: ignore[arg-type]
            done += 1
            if midway is not None and done == n // 3:
                midway()
            return code

        codes = await asyncio.gather(*(one(i) for i in range(n)))
    return collections.Counter(codes), shed


def _assert_only_ok_or_shed(
    codes: collections.Counter[grpc.StatusCode], shed: list[dict[str, str]]
) -> None:
    assert set(codes) <= ALLOWED, f"unexpected statuses: {dict(codes)}"
    assert codes[grpc.StatusCode.OK] > 0
    for trailers in shed:
        assert trailers.get("infershield-limit") == "max_queue"
        assert float(trailers["retry-after"]) > 0


def test_burst_sees_only_ok_or_shed(
    triton: TritonHandle, start_firewall: Callable[[dict[str, Any]], int]
) -> None:
    port = start_firewall(_config(free_port(), triton.url, "zzbanned"))
    codes, shed = asyncio.run(_burst(f"127.0.0.1:{port}", BURST))
    _assert_only_ok_or_shed(codes, shed)
    # Nothing was lost: the firewall still answers at once.
    again, _ = asyncio.run(_burst(f"127.0.0.1:{port}", 4))
    assert again == {grpc.StatusCode.OK: 4}


def _blocked(url: str, text: str) -> bool:
    async def call() -> bool:
        async with grpc.aio.insecure_channel(url) as ch:
            stub = pb_grpc.GRPCInferenceServiceStub(ch)  # type: ignore[no-untyped-call]
            try:
                await stub.ModelInfer(text_request([text]), timeout=5)
            except grpc.aio.AioRpcError as exc:
                return exc.code() is grpc.StatusCode.PERMISSION_DENIED
            return False

    return asyncio.run(call())


def test_burst_with_sighup_midway(triton: TritonHandle, tmp_path: Path) -> None:
    """The real CLI in its own process; SIGHUP reloads a changed policy mid-burst."""
    port = free_port()
    url = f"127.0.0.1:{port}"
    cfg = tmp_path / "serve.yaml"
    cfg.write_text(yaml.safe_dump(_config(port, triton.url, "zzfirst")), encoding="utf-8")
    cmd = [sys.executable, "-m", "infershield", "serve", "--config", str(cfg)]
    with subprocess.Popen(cmd, stdin=subprocess.DEVNULL) as proc:
        try:
            end = time.monotonic() + 60
            while not _blocked(url, "zzfirst"):
                assert proc.poll() is None and time.monotonic() < end, "server did not start"
                time.sleep(0.2)

            def reload() -> None:
                cfg.write_text(
                    yaml.safe_dump(_config(port, triton.url, "zzsecond")), encoding="utf-8"
                )
                os.kill(proc.pid, signal.SIGHUP)

            codes, shed = asyncio.run(_burst(url, BURST, midway=reload))
            _assert_only_ok_or_shed(codes, shed)
            end = time.monotonic() + 15
            while not _blocked(url, "zzsecond"):
                assert time.monotonic() < end, "the reload never took effect"
                time.sleep(0.1)
            assert not _blocked(url, "zzfirst")
            assert proc.poll() is None
        finally:
            proc.terminate()
            proc.wait(20)
    assert proc.returncode == 0
