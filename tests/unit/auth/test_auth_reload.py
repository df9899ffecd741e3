"""SIGHUP reloads keys and certificates too; TLS reload refuses a broken pair."""

from __future__ import annotations

import asyncio
import os
import signal
import time
from pathlib import Path

import pytest

from infershield.auth.tls import ServerTls, read_pair
from infershield.config import ServerTlsConfig
from infershield.errors import ConfigError
from infershield.reload import PolicyWatcher
from tls_support import TestCA


class _Holder:
    """Enough of a PolicyHolder for the watcher: counts reloads."""

    def __init__(self) -> None:
        self.reloads = 0

    def reload(self) -> object:
        self.reloads += 1
        return None


def test_sighup_also_runs_the_access_reload() -> None:
    holder = _Holder()
    calls: list[float] = []

    async def also() -> None:
        calls.append(time.monotonic())

    async def main() -> None:
        watcher = PolicyWatcher(holder, None)  # type: ignore[arg-type]
        watcher.install_sighup(also=also)
        try:
            os.kill(os.getpid(), signal.SIGHUP)
            end = time.monotonic() + 5
            while (not calls or holder.reloads == 0) and time.monotonic() < end:
                await asyncio.sleep(0.01)
        finally:
            watcher.remove_sighup()

    asyncio.run(main())
    assert len(calls) == 1 and holder.reloads == 1


def test_tls_reload_keeps_the_old_pair_when_the_new_one_is_broken(tmp_path: Path) -> None:
    ca = TestCA(tmp_path / "ca")
    srv, other = ca.server(), ca.server("other")
    tls = ServerTls(ServerTlsConfig(cert=str(srv.cert), key=str(srv.key)))
    assert tls.fetch() is None and not tls.changed()
    # A key that does not belong to the certificate (a half-done rotation) is refused.
    srv.key.write_bytes(other.key.read_bytes())
    assert tls.changed()
    assert not tls.reload()
    assert tls.fetch() is None
    assert not tls.changed()  # a rejected pair is not retried until the files change again
    # The matching pair goes through, once, to the next handshake.
    srv.cert.write_bytes(other.cert.read_bytes())
    assert tls.reload()
    assert tls.fetch() is not None and tls.fetch() is None


def test_read_pair_names_the_problem(tmp_path: Path) -> None:
    ca = TestCA(tmp_path / "ca")
    a, b = ca.server("a"), ca.server("b")
    with pytest.raises(ConfigError, match=r"^server.tls: .*do not load as a pair"):
        read_pair(str(a.cert), str(b.key), "server.tls")
    with pytest.raises(ConfigError, match=r"^server.tls.cert: cannot read"):
        read_pair(str(tmp_path / "none.pem"), str(a.key), "server.tls")
    (tmp_path / "x.pem").write_text("not pem")
    with pytest.raises(ConfigError, match=r"^server.tls.key: .* is not PEM"):
        read_pair(str(a.cert), str(tmp_path / "x.pem"), "server.tls")
    assert read_pair(str(a.cert), str(a.key), "server.tls")[0].startswith(b"-----BEGIN")
