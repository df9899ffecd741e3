"""A real ``redis-server`` for tests: own port on 127.0.0.1, own temp dir, stopped after.

Importable from tests as ``redis_support``. The binary comes from Debian's ``redis-server``
package (the Makefile's apt list installs it); tests that need it skip, saying so, only when
the binary is absent.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from pathlib import Path

from firewall_support import free_port

REDIS_BINARY = shutil.which("redis-server")
SKIP_REASON = (
    "redis-server binary not found on PATH: install Debian's redis-server package "
    "(`make test` does, as root)"
)


class RedisServer:
    """One ``redis-server`` process; :meth:`kill` and :meth:`start` again on the same port
    play an outage and a recovery."""

    def __init__(self, workdir: Path, port: int | None = None) -> None:
        if REDIS_BINARY is None:
            raise RuntimeError(SKIP_REASON)
        self.workdir = workdir
        self.port = port or free_port()
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self, timeout: float = 10.0) -> None:
        assert REDIS_BINARY is not None
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.proc = subprocess.Popen(
            [
                REDIS_BINARY,
                "--port", str(self.port),
                "--bind", "127.0.0.1",
                "--dir", str(self.workdir),
                "--save", "",
                "--appendonly", "no",
                "--protected-mode", "yes",
                "--daemonize", "no",
                "--logfile", str(self.workdir / "redis.log"),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )  # fmt: skip
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"redis-server exited with {self.proc.returncode}")
            if self.ping():
                return
            time.sleep(0.02)
        self.stop()
        raise RuntimeError(f"redis-server did not answer on port {self.port}")

    def ping(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=0.2) as s:
                s.sendall(b"PING\r\n")
                return s.recv(16).startswith(b"+PONG")
        except OSError:
            return False

    def kill(self) -> None:
        """SIGKILL: the abrupt outage a crashed Redis gives its clients."""
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait(10)
            self.proc = None

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
            self.proc = None
