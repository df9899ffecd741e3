"""The e2e harness itself: a session Triton that dies is brought back on its port."""

from __future__ import annotations

import itertools
import os
import signal
import time
from pathlib import Path

import pytest
import tritonclient.grpc as tg

from firewall_support import run_triton

pytestmark = pytest.mark.e2e


def _tritonserver_pid(grpc_port: int) -> int:
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            argv = (proc / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        port = str(grpc_port).encode()
        if argv[0].endswith(b"/tritonserver") and any(
                a == b"--grpc-port" and b == port for a, b in itertools.pairwise(argv)):
            return int(proc.name)
    raise AssertionError(f"no tritonserver process on grpc port {grpc_port}")


def test_a_killed_triton_is_restarted_on_the_same_port(
        capfd: pytest.CaptureFixture[str]) -> None:
    pytest.importorskip("pytriton")
    with run_triton() as handle:
        handle.ensure_alive()
        assert handle.restarts == 0  # alive: nothing to do
        os.kill(_tritonserver_pid(handle.port), signal.SIGKILL)
        end = time.monotonic() + 15
        while handle.triton.is_alive() and time.monotonic() < end:
            time.sleep(0.1)
        assert not handle.triton.is_alive()
        handle.ensure_alive()
        assert handle.restarts == 1
        with tg.InferenceServerClient(handle.url) as client:
            assert client.is_model_ready("echo")
        assert f"session Triton on port {handle.port} died" in capfd.readouterr().err
