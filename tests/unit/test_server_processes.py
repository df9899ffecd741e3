"""``server.processes``: the config field, the port reservation, the child's slot, the
audit set, and the supervisor's start-up and restart failures with tiny stand-in children
(it is driven end to end in tests/e2e/test_processes_e2e.py)."""

from __future__ import annotations

import json
import logging
import os
import socket
from pathlib import Path

import pytest

from infershield.audit import AuditLog, process_chain_path, process_chains, verify_set
from infershield.config import (
    MAX_AUTO_PROCESSES,
    Config,
    LimitsConfig,
    RateLimitConfig,
    RateSpec,
    load_config,
)
from infershield.errors import ConfigError
from infershield.server.processes import SLOT_ENV, ProcessSlot, _warn_per_process, reserve_port


def test_processes_default_is_one_and_auto_is_capped_per_core() -> None:
    assert load_config(env={}).process_count == 1
    auto = load_config(env={}, overrides={"server.processes": "auto"}).process_count
    assert 1 <= auto <= min(len(os.sched_getaffinity(0)), MAX_AUTO_PROCESSES)
    env = {"INFERSHIELD_SERVER__PROCESSES": "3"}
    assert load_config(env=env).process_count == 3


@pytest.mark.parametrize("bad", [0, -1, 100000, "many", 1.5, True])
def test_bad_process_counts_name_the_field(bad: object) -> None:
    with pytest.raises(ConfigError, match=r"server\.processes"):
        load_config(env={}, overrides={"server.processes": bad})


def test_a_busy_port_fails_the_reservation_with_a_clear_message() -> None:
    with socket.socket() as busy:  # a listener without SO_REUSEPORT, like another server
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        with pytest.raises(ConfigError, match=rf"server\.listen: cannot bind 127\.0\.0\.1:{port}"):
            reserve_port(f"127.0.0.1:{port}")


def test_port_zero_is_resolved_once_and_shareable_with_reuseport() -> None:
    sock, listen = reserve_port("127.0.0.1:0")
    try:
        port = int(listen.rpartition(":")[2])
        assert port > 0
        with socket.socket() as child:  # what grpc.so_reuseport does in each child
            child.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
            child.bind(("127.0.0.1", port))
            child.listen()
    finally:
        sock.close()


def test_the_slot_round_trips_through_the_environment() -> None:
    slot = ProcessSlot(1, 4, "[::1]:8001", 7, 4242)
    assert ProcessSlot.from_env({SLOT_ENV: slot.encode()}) == slot
    assert ProcessSlot.from_env({}) is None


def _chain(path: Path, index: int, count: int, events: int) -> Path:
    live = process_chain_path(path, index)
    log = AuditLog(live, key=b"k", fsync="never")
    log.record({"event": "open", "process": index, "processes": count})
    for i in range(events):
        log.record({"event": "screen", "n": i})
    log.close()
    return live


def test_audit_set_verifies_every_chain_and_catches_a_missing_one(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    assert process_chain_path(path, 3) == tmp_path / "audit.p3.jsonl"
    chains = [_chain(path, i, 3, 5) for i in range(3)]
    assert process_chains(path) == dict(enumerate(chains))
    rep = verify_set(path, key=b"k")
    assert rep.ok and set(rep.chains) == {0, 1, 2} and rep.missing == ()

    chains[2].unlink()
    rep = verify_set(path, key=b"k")
    assert not rep.ok and rep.missing == (2,)


def test_audit_set_names_the_tampered_chain(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    chains = [_chain(path, i, 2, 3) for i in range(2)]
    lines = chains[0].read_text().splitlines()
    rec = json.loads(lines[2])
    rec["n"] = 99
    lines[2] = json.dumps(rec, sort_keys=True, separators=(",", ":"))
    chains[0].write_text("\n".join(lines) + "\n")
    rep = verify_set(path, key=b"k")
    assert not rep.ok
    assert not rep.chains[0].ok and rep.chains[0].bad_line == 3 and rep.chains[1].ok


def test_audit_set_of_one_process_is_the_plain_chain(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    log = AuditLog(path, fsync="never")
    log.record({"event": "screen"})
    log.close()
    rep = verify_set(path)
    assert rep.ok and list(rep.chains) == [None]
    with pytest.raises(FileNotFoundError):  # as before: the CLI reports it, exit 2
        verify_set(tmp_path / "absent.jsonl")


def test_children_that_cannot_start_stop_the_supervisor_with_exit_1(tmp_path: Path) -> None:
    import sys

    from infershield.server.processes import Supervisor

    sock, listen = reserve_port("127.0.0.1:0")
    try:
        sup = Supervisor(
            load_config(env={}), command=[sys.executable, "-c", "raise SystemExit(3)"],
            count=2, listen=listen, metrics_dir=str(tmp_path),
        )
        assert sup.run() == 1
    finally:
        sock.close()
    assert all(c.proc is None for c in sup.children)  # none left behind


def test_a_child_that_cannot_be_spawned_at_start_up_exits_1_and_leaves_no_pipe_open(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    from infershield.server.processes import Supervisor

    before = set(os.listdir("/proc/self/fd"))
    sock, listen = reserve_port("127.0.0.1:0")
    try:
        sup = Supervisor(
            load_config(env={}), command=[str(tmp_path / "no-such-program")],
            count=2, listen=listen, metrics_dir=str(tmp_path),
        )
        with caplog.at_level(logging.ERROR, logger="infershield.server.processes"):
            assert sup.run() == 1
    finally:
        sock.close()
    assert set(os.listdir("/proc/self/fd")) <= before  # the readiness pipe's read end too
    (logged,) = [r.getMessage() for r in caplog.records]
    assert logged.startswith("process 0 cannot be started: [Errno 2] No such file")


def _warnings(caplog: pytest.LogCaptureFixture, config: Config) -> list[str]:
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="infershield.server.processes"):
        _warn_per_process(config, 4)
    return [r.getMessage() for r in caplog.records]


def test_the_supervisor_warns_of_what_each_process_keeps_alone(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """N processes each keep their own in-memory rate limits (N times the rate) and their own
    repeated-blocks quarantine (a caller quarantined by one is still served by the others,
    even with Redis): one warning names what applies, nothing when neither is on."""
    rates = RateLimitConfig(default=RateSpec(requests_per_s=5))
    redis = RateLimitConfig(backend="redis", redis_url="redis://127.0.0.1:6379/0",
                            default=RateSpec(requests_per_s=5))
    quarantine = LimitsConfig(quarantine_after_blocks=3)

    assert _warnings(caplog, Config()) == []
    assert _warnings(caplog, Config(ratelimit=redis)) == []
    (w,) = _warnings(caplog, Config(ratelimit=rates))
    assert "own rate limits" in w and "up to 4x" in w and "quarantine" not in w
    (w,) = _warnings(caplog, Config(ratelimit=redis, limits=quarantine))
    assert "limits.quarantine_after_blocks" in w and "rate limits" not in w
    (w,) = _warnings(caplog, Config(ratelimit=rates, limits=quarantine))
    assert "own rate limits" in w and "limits.quarantine_after_blocks" in w


#: A child for the supervisor tests: it reports ready, the first one then dies (exit 3), and
#: the one that replaces it ends the test by sending its supervisor SIGTERM.
_CHILD = """
import os, signal, sys
from pathlib import Path
_, _, fd, supervisor, _ = os.environ["INFERSHIELD_PROCESS_SLOT"].split(":", 4)
starts = Path(sys.argv[1])
with starts.open("a") as f:
    f.write("x")
signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
os.write(int(fd), b"ready\\n")
if len(starts.read_text()) == 1:
    sys.exit(3)
os.kill(int(supervisor), signal.SIGTERM)
signal.pause()
"""


def test_a_restart_that_cannot_be_spawned_is_retried_not_the_end_of_the_supervisor(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """After start-up a child that dies is restarted; if that spawn fails (here fork fails
    once, as with no memory or process slots left) the supervisor logs it and tries again
    on the back-off (0.5 s, then 1 s) instead of stopping, which would take the other
    children down with it. Restarts are counted on the supervisor's metrics endpoint."""
    import errno
    import subprocess
    import sys

    from prometheus_client import generate_latest

    from infershield.server import processes
    from infershield.server.processes import Supervisor

    real = subprocess.Popen
    spawns: list[object] = []

    def fork_fails_once(*args: object, **kwargs: object) -> object:
        spawns.append(args)
        if len(spawns) == 2:  # the first restart
            raise OSError(errno.EAGAIN, "Resource temporarily unavailable")
        return real(*args, **kwargs)  # type: ignore[call-overload]

    starts = tmp_path / "starts"
    sock, listen = reserve_port("127.0.0.1:0")
    try:
        sup = Supervisor(
            load_config(env={}), command=[sys.executable, "-c", _CHILD, str(starts)],
            count=1, listen=listen, metrics_dir=str(tmp_path),
        )
        monkeypatch.setattr(subprocess, "Popen", fork_fails_once)
        with caplog.at_level(logging.INFO, logger="infershield.server.processes"):
            assert sup.run() == 0
    finally:
        sock.close()
    assert len(spawns) == 3 and starts.read_text() == "xx"
    logged = [r.getMessage() for r in caplog.records]
    assert "process 0 exited with code 3; restarting in 0.5s" in logged
    assert ("process 0 cannot be restarted: [Errno 11] Resource temporarily unavailable; "
            "retrying in 1.0s") in logged
    assert sup.restarts == 1
    scraped = generate_latest(processes._registry(str(tmp_path), sup)).decode()
    assert "infershield_process_restarts_total 1.0" in scraped


def test_metrics_directories_of_supervisors_that_are_gone_are_removed(tmp_path: Path) -> None:
    """A supervisor killed by SIGKILL leaves its metrics directory behind; the next one
    removes it, and nothing that may still be in use: not one named for a live supervisor,
    nor one a live process still writes to, nor a link, nor a name it does not make."""
    import subprocess
    import sys

    from infershield.server.processes import (
        METRICS_DIR_PREFIX,
        metrics_dir_prefix,
        remove_stale_metrics_dirs,
    )

    exited = subprocess.Popen([sys.executable, "-c", ""])
    exited.wait()  # reaped: its pid names no process now
    dead, live = exited.pid, os.getpid()

    def made(name: str, *files: str) -> Path:
        d = tmp_path / name
        d.mkdir()
        for f in files:
            (d / f).write_bytes(b"")
        return d

    stale = made(f"{metrics_dir_prefix(dead)}a1b2", f"counter_{dead}.db",
                 f"gauge_livesum_{dead}.db")
    running = made(f"{metrics_dir_prefix(live)}c3d4")
    draining = made(f"{metrics_dir_prefix(dead)}e5f6", f"counter_{live}.db")
    other = made("infershield-metrics-g7h8")  # not a name a supervisor makes now
    older = made(f"{METRICS_DIR_PREFIX}{dead}-i9j0")  # named without a host tag
    # Another host's (a container sharing /tmp): its pids mean nothing in this namespace.
    elsewhere = made(f"{METRICS_DIR_PREFIX}00000000-{dead}-k1l2")
    link = tmp_path / f"{metrics_dir_prefix(dead)}link"
    link.symlink_to(running)

    assert remove_stale_metrics_dirs(str(tmp_path)) == [str(stale)]
    assert not stale.exists()
    assert running.is_dir() and draining.is_dir() and other.is_dir() and link.is_symlink()
    assert older.is_dir() and elsewhere.is_dir()


def test_a_metrics_directory_named_for_no_possible_pid_is_left_alone(tmp_path: Path) -> None:
    """A name with a number past any pid (os.kill raises OverflowError, not OSError) must
    not stop the server starting: the clean-up leaves what it cannot judge alone."""
    from infershield.server.processes import metrics_dir_prefix, remove_stale_metrics_dirs

    huge = 2**64
    named = tmp_path / f"{metrics_dir_prefix(huge)}a1b2"
    named.mkdir()
    holding = tmp_path / f"{metrics_dir_prefix()}c3d4"
    holding.mkdir()
    (holding / f"counter_{huge}.db").write_bytes(b"")

    assert remove_stale_metrics_dirs(str(tmp_path)) == []
    assert named.is_dir() and holding.is_dir()
