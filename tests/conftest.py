"""Shared fixtures: a real Triton (pytriton, CPU) and InferShield servers on free ports."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from firewall_support import TritonHandle, run_triton, write_config

_SESSION_TRITON: list[TritonHandle] = []


@pytest.fixture(scope="session")
def triton() -> Iterator[TritonHandle]:
    """One Triton for the whole session (it takes seconds to start)."""
    pytest.importorskip("pytriton")
    with run_triton() as handle:
        _SESSION_TRITON.append(handle)
        yield handle
        _SESSION_TRITON.remove(handle)


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item: pytest.Item) -> None:
    """Before a test that needs the session Triton (and before its module's fixtures start
    firewalls in front of it), bring the Triton back if it died."""
    if _SESSION_TRITON and "triton" in getattr(item, "fixturenames", ()):
        _SESSION_TRITON[0].ensure_alive()


@pytest.fixture
def start_firewall(tmp_path: Path) -> Iterator[Callable[..., int]]:
    """``start_firewall(config_dict) -> port``: an InferShield server in a background thread."""
    from infershield.server.app import ServerThread

    started: list[ServerThread] = []

    def start(data: dict[str, Any]) -> int:
        cfg = write_config(tmp_path / f"config{len(started)}.yaml", data)
        st = ServerThread(cfg)
        port = st.start()
        started.append(st)
        return port

    yield start
    for st in reversed(started):
        st.stop(grace=0.5)


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[Any]:
    """A fresh ``redis-server`` on a free 127.0.0.1 port (skips, saying why, if not installed)."""
    from redis_support import REDIS_BINARY, SKIP_REASON, RedisServer

    if REDIS_BINARY is None:
        pytest.skip(SKIP_REASON)
    server = RedisServer(tmp_path / "redis")
    server.start()
    yield server
    server.stop()
