"""``serve`` says at start-up whether its backend answers."""

from __future__ import annotations

import logging
import socket
import time
from typing import Any

import pytest

from infershield.backends.base import Backend
from infershield.call import CallContext
from infershield.config import BackendConfig, Config, ServerConfig
from infershield.server.app import ServerThread


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _wait_for(caplog: pytest.LogCaptureFixture, needle: str, timeout: float = 10.0) -> str:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        for r in caplog.records:
            if needle in r.getMessage():
                return r.levelname
        time.sleep(0.05)
    raise AssertionError(f"no log line with {needle!r}")


def test_a_down_upstream_is_reported_at_start_up(caplog: pytest.LogCaptureFixture) -> None:
    upstream = f"127.0.0.1:{_closed_port()}"
    cfg = Config(server=ServerConfig(listen="127.0.0.1:0"),
                 backend=BackendConfig(kind="triton", upstream=upstream))
    with caplog.at_level(logging.INFO, logger="infershield.server.app"):
        st = ServerThread(cfg)
        st.start()
        try:
            level = _wait_for(caplog, f"upstream Triton {upstream} is not reachable")
        finally:
            st.stop(grace=0.1)
    assert level == "WARNING"


class _ReadyBackend(Backend):
    kind = "triton"

    async def call(self, method: str, request: Any, ctx: CallContext) -> Any:
        raise AssertionError("not used")

    def stream_infer(self, requests: Any, ctx: CallContext) -> Any:
        raise AssertionError("not used")

    async def ready(self) -> bool:
        return True


def test_a_ready_upstream_is_logged_at_info(caplog: pytest.LogCaptureFixture) -> None:
    cfg = Config(server=ServerConfig(listen="127.0.0.1:0"),
                 backend=BackendConfig(kind="triton", upstream="127.0.0.1:1"))
    with caplog.at_level(logging.INFO, logger="infershield.server.app"):
        st = ServerThread(cfg, backend=_ReadyBackend())
        st.start()
        try:
            level = _wait_for(caplog, "upstream Triton 127.0.0.1:1 is ready")
        finally:
            st.stop(grace=0.1)
    assert level == "INFO"
    assert not [r for r in caplog.records if "not reachable" in r.getMessage()]
