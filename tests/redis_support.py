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


class SourceProxy:
    """A loopback TCP forwarder whose upstream connections come from ``source_ip``
    (127.0.0.N), so the firewall sees a distinct caller per proxy. One proxy per (caller,
    replica) lets one caller reach several replicas from the same address."""

    def __init__(self, target_port: int, source_ip: str) -> None:
        import asyncio
        import threading

        self.target_port = target_port
        self.source_ip = source_ip
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._thread.start()
        self._server = asyncio.run_coroutine_threadsafe(self._start(), self._loop).result(10)
        self.port: int = self._server.sockets[0].getsockname()[1]

    async def _start(self) -> object:
        import asyncio

        return await asyncio.start_server(self._handle, "127.0.0.1", 0)

    async def _pipe(self, r: object, w: object) -> None:
        import asyncio

        reader: asyncio.StreamReader = r  # type: ignore[assignment]
        writer: asyncio.StreamWriter = w  # type: ignore[assignment]
        try:
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
        except (ConnectionError, asyncio.CancelledError):
            pass
        finally:
            writer.close()

    async def _handle(self, r: object, w: object) -> None:
        import asyncio

        try:
            ur, uw = await asyncio.open_connection(
                "127.0.0.1", self.target_port, local_addr=(self.source_ip, 0)
            )
        except OSError:
            w.close()  # type: ignore[attr-defined]
            return
        await asyncio.gather(self._pipe(r, uw), self._pipe(ur, w))

    def close(self) -> None:
        import asyncio

        async def stop() -> None:
            self._server.close()  # type: ignore[attr-defined]

        asyncio.run_coroutine_threadsafe(stop(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(5)
        self._loop.close()
