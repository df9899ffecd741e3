"""``server.processes: N``: N serving processes on one port, under a supervisor.

One Python process keeps at most about one core busy (the GIL, and gRPC's asyncio server
polls on one thread), so the firewall scales across cores with processes. The supervisor
(the process ``infershield serve`` started as):

- checks the config and compiles the policy once, so the children load the compiled rule
  databases from the on-disk cache instead of compiling N times;
- reserves the port with ``SO_REUSEPORT`` (a busy port is a start-up error, not N crashing
  children; port 0 is resolved once, so every child serves the same port);
- starts N children, each a re-run of its own command line with :data:`SLOT_ENV` set, which
  bind the port with ``grpc.so_reuseport``: the kernel spreads connections over them;
- serves one metrics endpoint over the children's counters (prometheus_client multiprocess
  mode in a fresh temporary directory named for its pid, removed at exit; one that a
  SIGKILLed supervisor left behind is removed at the next start) and its own restart count;
- forwards SIGHUP (reload) to every child, SIGTERM/SIGINT as SIGTERM (each child stops
  accepting and drains within ``server.grace_period_s``), and restarts a child that dies,
  with a doubling back-off; a restart that cannot be spawned is retried on the same
  back-off, while the other children serve on. It exits 1 if the children cannot start.

Each child keeps its own audit chain (:func:`infershield.audit.process_chain_path`), its own
concurrency limit and, with ``ratelimit.backend: memory``, its own rate limits and quarantine.
"""

from __future__ import annotations

import contextlib
import ctypes
import hashlib
import logging
import os
import re
import select
import shutil
import signal
import socket
import stat
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from types import FrameType
from typing import TYPE_CHECKING

from infershield.config import Config
from infershield.errors import ConfigError

if TYPE_CHECKING:
    from prometheus_client import CollectorRegistry

    from infershield.telemetry.metrics import MetricsServer

log = logging.getLogger(__name__)

#: Set in a child's environment: ``INDEX:COUNT:READY_FD:SUPERVISOR_PID:HOST:PORT``. (No
#: double underscore, so the config loader does not read it as a field override.)
SLOT_ENV = "INFERSHIELD_PROCESS_SLOT"
#: How long the children get to start serving (loading models, warming caches).
START_TIMEOUT_S = 300.0
#: Restart back-off: first delay, cap, and how long a child must have served for the next
#: failure to count as a new one (back to the first delay).
BACKOFF_S = 0.5
BACKOFF_MAX_S = 30.0
BACKOFF_RESET_S = 30.0
#: The supervisor's metrics directory: this prefix, a tag of the host's name, its pid, a
#: random suffix. The tag keeps a supervisor from judging a directory that another host (a
#: container in another pid namespace sharing the same /tmp) made: its pids mean nothing here.
METRICS_DIR_PREFIX = "infershield-metrics-"
_HOST_TAG = hashlib.sha256(socket.gethostname().encode()).hexdigest()[:8]
_METRICS_DIR = re.compile(re.escape(METRICS_DIR_PREFIX) + r"([0-9a-f]{8})-(\d+)-\w+")
#: A prometheus_client multiprocess file: ``counter_<pid>.db``, ``gauge_livesum_<pid>.db``...
_METRICS_FILE = re.compile(r".+_(\d+)\.db")
#: What a failed spawn raises (fork or exec failing, no file descriptors for the pipe).
SPAWN_ERRORS = (OSError, subprocess.SubprocessError)


@dataclass(frozen=True)
class ProcessSlot:
    """What a child knows of its place: its index among ``count``, the resolved address
    it binds (shared), and the pipe it reports readiness on."""

    index: int
    count: int
    listen: str
    ready_fd: int
    supervisor: int = 0

    def encode(self) -> str:
        return f"{self.index}:{self.count}:{self.ready_fd}:{self.supervisor}:{self.listen}"

    @classmethod
    def from_env(cls, env: dict[str, str] | None = None) -> ProcessSlot | None:
        raw = (os.environ if env is None else env).get(SLOT_ENV, "")
        if not raw:
            return None
        index, count, fd, parent, listen = raw.split(":", 4)
        return cls(int(index), int(count), listen, int(fd), int(parent))

    def ready(self) -> None:
        """Tell the supervisor this child serves (once)."""
        with contextlib.suppress(OSError):
            os.write(self.ready_fd, b"ready\n")
            os.close(self.ready_fd)


def die_with_parent(supervisor: int) -> None:
    """A child gets SIGTERM (and drains) when its supervisor dies, even by SIGKILL."""
    if not sys.platform.startswith("linux"):
        return
    with contextlib.suppress(OSError, AttributeError):
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        pr_set_pdeathsig = 1
        libc.prctl(pr_set_pdeathsig, signal.SIGTERM)
    if os.getppid() != supervisor:  # it was already gone before prctl
        os.kill(os.getpid(), signal.SIGTERM)


def reserve_port(listen: str) -> tuple[socket.socket, str]:
    """Bind ``listen`` with SO_REUSEPORT (not listening: it takes no connections) so a busy
    port fails here, once, and port 0 becomes one real port; returns the socket (keep it
    open while the children run) and the resolved ``HOST:PORT``."""
    host, _, port = listen.rpartition(":")
    bare = host.strip("[]")
    try:
        infos = socket.getaddrinfo(
            bare, int(port), type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        )
    except socket.gaierror as exc:
        raise ConfigError(f"server.listen: cannot resolve {host}: {exc.strerror}") from None
    family, kind, proto, _, addr = infos[0]
    sock = socket.socket(family, kind, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind(addr)
    except OSError as exc:
        sock.close()
        raise ConfigError(
            f"server.listen: cannot bind {listen}: {exc.strerror} (server.processes needs "
            "the port free, or held only by processes of this user with SO_REUSEPORT)"
        ) from None
    return sock, f"{host}:{sock.getsockname()[1]}"


@dataclass
class _Child:
    index: int
    proc: subprocess.Popen[bytes] | None = None
    ready_r: int = -1
    ready: bool = False
    started: float = 0.0
    failures: int = 0
    restart_at: float = 0.0
    hup_pending: bool = False


@dataclass
class Supervisor:
    """Runs ``count`` children of ``command`` on ``listen`` until SIGTERM/SIGINT."""

    config: Config
    command: Sequence[str]
    count: int
    listen: str = ""
    metrics_dir: str = ""
    children: list[_Child] = field(default_factory=list)
    #: Children restarted after they exited (``infershield_process_restarts_total``).
    restarts: int = 0
    _stopping: bool = False
    _started: bool = False

    # ------------------------------------------------------------------ children

    def _spawn(self, child: _Child) -> None:
        read_fd, write_fd = os.pipe()
        slot = ProcessSlot(child.index, self.count, self.listen, write_fd, os.getpid())
        env = dict(os.environ)
        env[SLOT_ENV] = slot.encode()
        env["PROMETHEUS_MULTIPROC_DIR"] = self.metrics_dir
        try:
            # A process group of its own: a terminal's Ctrl-C reaches the supervisor only,
            # which drains the children in order (they die with it: die_with_parent). Not a
            # session of its own: with scheduler autogroups that would change its CPU share.
            child.proc = subprocess.Popen(
                list(self.command), env=env, pass_fds=(write_fd,), process_group=0
            )
        except BaseException:
            os.close(read_fd)  # no child will ever write to it
            raise
        finally:
            os.close(write_fd)
        child.ready_r, child.ready = read_fd, False
        child.started = time.monotonic()
        log.info("process %d started (pid %d)", child.index, child.proc.pid)

    def _signal(self, child: _Child, sig: int) -> None:
        if child.proc is not None and child.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                child.proc.send_signal(sig)

    def _poll_ready(self, timeout: float) -> None:
        waiting = {c.ready_r: c for c in self.children if c.ready_r >= 0 and not c.ready}
        if not waiting:
            time.sleep(timeout)
            return
        with contextlib.suppress(InterruptedError):
            readable, _, _ = select.select(list(waiting), [], [], timeout)
            for fd in readable:
                c = waiting[fd]
                data = os.read(fd, 64)
                os.close(fd)
                c.ready_r = -1
                if data.startswith(b"ready"):
                    c.ready = True
                    assert c.proc is not None
                    log.info("process %d (pid %d) is serving", c.index, c.proc.pid)
                    if c.hup_pending:
                        c.hup_pending = False
                        self._signal(c, signal.SIGHUP)

    def _reap(self) -> list[tuple[_Child, int]]:
        """Children that exited since the last look, with their exit codes."""
        dead = []
        for c in self.children:
            if c.proc is None:
                continue
            rc = c.proc.poll()
            if rc is None:
                continue
            dead.append((c, rc))
            self._mark_dead(c.proc.pid)
            c.proc = None
            if c.ready_r >= 0:
                os.close(c.ready_r)
                c.ready_r = -1
        return dead

    def _mark_dead(self, pid: int) -> None:
        # Its live gauges (in flight, queue) leave the sums; its counters stay counted.
        from prometheus_client import multiprocess

        with contextlib.suppress(OSError):
            multiprocess.mark_process_dead(pid, self.metrics_dir)  # type: ignore[no-untyped-call]

    # ------------------------------------------------------------------ signals

    def _on_hup(self, _sig: int, _frame: FrameType | None) -> None:
        log.info("SIGHUP: reloading every process")
        for c in self.children:
            if c.ready:
                self._signal(c, signal.SIGHUP)
            else:  # no handler yet (SIGHUP would kill it); it gets one once it serves
                c.hup_pending = True

    def _on_term(self, _sig: int, _frame: FrameType | None) -> None:
        # Once only: a child that is draining has given up its handler, and a second
        # SIGTERM would kill it with its calls in flight.
        if self._stopping:
            return
        log.info("draining %d processes (grace %.1fs)", self.count,
                 self.config.server.grace_period_s)
        self._stopping = True
        for c in self.children:
            self._signal(c, signal.SIGTERM)

    # ------------------------------------------------------------------ main loop

    def run(self) -> int:
        """Start, supervise, drain; 0 after a clean drain, 1 if the children cannot start
        or one does not drain cleanly."""
        old = {
            sig: signal.signal(sig, handler)
            for sig, handler in (
                (signal.SIGHUP, self._on_hup),
                (signal.SIGTERM, self._on_term),
                (signal.SIGINT, self._on_term),
            )
        }
        rc = 1
        try:
            self.children = [_Child(i) for i in range(self.count)]
            if self._spawn_all():
                rc = self._loop()
        finally:
            self._on_term(signal.SIGTERM, None)
            clean = self._wait_all(self.config.server.grace_period_s + 30.0)
            for sig, handler in old.items():
                signal.signal(sig, handler)
        return rc if clean else 1  # a child that did not drain cleanly fails the run

    def _spawn_all(self) -> bool:
        """Start every child; False (logged) if one cannot be spawned: at start-up that
        stops the server (exit 1), as a child that fails to start does."""
        for c in self.children:
            try:
                self._spawn(c)
            except SPAWN_ERRORS as exc:
                log.error("process %d cannot be started: %s; stopping", c.index, exc)
                return False
        return True

    def _backoff(self, child: _Child, now: float) -> float:
        """Schedule ``child``'s next start on the doubling back-off; returns the delay."""
        # The exponent is capped: past the cap the delay is BACKOFF_MAX_S anyway, and a
        # float would overflow after a thousand failures (eight hours at the cap).
        delay = min(BACKOFF_S * (1 << min(child.failures, 16)), BACKOFF_MAX_S)
        child.failures += 1
        child.restart_at = now + delay
        return delay

    def _restart(self, child: _Child, now: float) -> None:
        """Start a child again after it exited. A spawn that fails (no memory or process
        slots for fork, the program gone) is logged and retried on the back-off: ending the
        supervisor here would take the children that still serve down with it."""
        try:
            self._spawn(child)
        except SPAWN_ERRORS as exc:
            delay = self._backoff(child, now)
            log.error("process %d cannot be restarted: %s; retrying in %.1fs",
                      child.index, exc, delay)
            return
        self.restarts += 1

    def _loop(self) -> int:
        deadline = time.monotonic() + START_TIMEOUT_S
        while not self._stopping:
            self._poll_ready(0.1)
            now = time.monotonic()
            if not self._started:
                if all(c.ready for c in self.children):
                    self._started = True
                    log.info("serving on %s with %d processes", self.listen, self.count)
                elif now > deadline:
                    log.error("server.processes: the processes did not start serving within "
                              "%.0fs; stopping", START_TIMEOUT_S)
                    return 1
            for c, rc in self._reap():
                if self._stopping:
                    break
                if not self._started:
                    log.error("process %d exited with code %d before serving; stopping "
                              "(its log above says why)", c.index, rc)
                    return 1
                if now - c.started >= BACKOFF_RESET_S:
                    c.failures = 0
                delay = self._backoff(c, now)
                log.warning("process %d exited with code %d; restarting in %.1fs",
                            c.index, rc, delay)
            for c in self.children:
                if c.proc is None and not self._stopping and now >= c.restart_at:
                    self._restart(c, now)
        return 0

    def _wait_all(self, timeout: float) -> bool:
        """Wait for every child to exit; True if each drained and exited with 0."""
        end = time.monotonic() + timeout
        clean = True
        for c in self.children:
            if c.proc is None:
                continue
            try:
                c.proc.wait(max(0.0, end - time.monotonic()))
            except subprocess.TimeoutExpired:
                log.error("process %d (pid %d) did not drain in time: killed",
                          c.index, c.proc.pid)
                c.proc.kill()
                c.proc.wait()
            if c.proc.returncode:
                clean = False
                log.warning("process %d exited with code %d while draining",
                            c.index, c.proc.returncode)
        self._reap()
        return clean


def _warn_per_process(config: Config, count: int) -> None:
    """Say which limits each process keeps alone, so N processes admit N times as much."""
    rl = config.ratelimit
    kept: list[str] = []
    if rl.backend == "memory" and (
        rl.default.requests_per_s > 0 or rl.models or config.limits.rate_per_s > 0
    ):
        kept.append(f"rate limits (ratelimit.backend: memory): together they admit up to "
                    f"{count}x the configured rates; ratelimit.backend: redis shares them")
    after = config.limits.quarantine_after_blocks
    if after > 0:
        # Never in the shared store: Redis does not help here.
        kept.append(f"repeated-blocks quarantine (limits.quarantine_after_blocks: {after}, "
                    f"per process even with ratelimit.backend: redis): a caller quarantined "
                    f"by one process is still served by the others, and may be blocked up to "
                    f"{count * after} times within quarantine_window_s before all refuse it")
    if kept:
        log.warning("server.processes: %d processes each keep their own %s", count,
                    "; and their own ".join(kept))


def supervise(config: Config, command: Sequence[str] | None = None) -> int:
    """Serve ``config`` with ``config.process_count`` processes; returns the exit code.

    ``command`` re-runs this program in each child (default: this process's own command
    line, ``sys.orig_argv``); the child sees :data:`SLOT_ENV` and serves one slot.
    """
    from infershield.policy import Policy
    from infershield.telemetry import logs

    logs.setup_logging(config.telemetry, exclusive=True)
    count = config.process_count
    sock, listen = reserve_port(config.server.listen)  # a busy port fails before any work
    metrics_dir = ""
    metrics_server = None
    try:
        # Validate and compile once, here: the children find the rule databases in the cache.
        Policy.from_config(config).close()
        _warn_per_process(config, count)
        remove_stale_metrics_dirs()
        metrics_dir = tempfile.mkdtemp(prefix=metrics_dir_prefix())
        sup = Supervisor(
            config,
            command=command or [sys.executable, *sys.orig_argv[1:]],
            count=count,
            listen=listen,
            metrics_dir=metrics_dir,
        )
        metrics_server = _serve_metrics(config, _registry(metrics_dir, sup))
        return sup.run()
    finally:
        if metrics_server is not None:
            metrics_server.close()
        sock.close()
        if metrics_dir:
            shutil.rmtree(metrics_dir, ignore_errors=True)


def metrics_dir_prefix(pid: int | None = None) -> str:
    """The name a supervisor's metrics directory starts with (this host, ``pid`` or ours)."""
    return f"{METRICS_DIR_PREFIX}{_HOST_TAG}-{os.getpid() if pid is None else pid}-"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # someone else's process
    except OverflowError:
        return True  # past any pid: not a name we made, left alone
    return True


def _users(path: str) -> Iterator[int]:
    """The pids whose metrics files are in ``path``."""
    for name in os.listdir(path):
        m = _METRICS_FILE.fullmatch(name)
        if m is not None:
            yield int(m.group(1))


def remove_stale_metrics_dirs(parent: str | None = None) -> list[str]:
    """Remove the metrics directories that supervisors killed by SIGKILL (no ``finally``)
    left in ``parent`` (the temporary directory); returns those removed.

    Only a directory (not a link) of this user, named for a supervisor of this host that is
    gone, and
    with no file of a live process in it (its children drain after it dies, and write
    there until they exit). Anything unreadable is left alone."""
    parent = parent if parent is not None else tempfile.gettempdir()
    removed: list[str] = []
    try:
        entries = list(os.scandir(parent))
    except OSError:
        return removed
    for entry in entries:
        m = _METRICS_DIR.fullmatch(entry.name)
        if m is None or m.group(1) != _HOST_TAG:
            continue
        try:
            st = entry.stat(follow_symlinks=False)
            if not stat.S_ISDIR(st.st_mode) or st.st_uid != os.getuid():
                continue
            if any(_alive(pid) for pid in (int(m.group(2)), *_users(entry.path))):
                continue
        except OSError:
            continue
        shutil.rmtree(entry.path, ignore_errors=True)
        log.info("removed the metrics directory %s of a supervisor that is gone", entry.path)
        removed.append(entry.path)
    return removed


def _registry(metrics_dir: str, sup: Supervisor) -> CollectorRegistry:
    """The children's files in ``metrics_dir``, summed, and the supervisor's own series."""
    from prometheus_client import CollectorRegistry
    from prometheus_client.multiprocess import MultiProcessCollector

    from infershield.telemetry.metrics import SupervisorMetrics

    registry = CollectorRegistry()
    MultiProcessCollector(registry, path=metrics_dir)  # type: ignore[no-untyped-call]
    registry.register(SupervisorMetrics(lambda: sup.restarts))
    return registry


def _serve_metrics(config: Config, registry: CollectorRegistry) -> MetricsServer | None:
    """One endpoint for all children (see :func:`_registry`)."""
    from infershield.telemetry.metrics import DEFAULT_METRICS_LISTEN, start_metrics_server

    listen = config.server.metrics_listen
    if not listen:
        return None
    if listen != "auto":
        return start_metrics_server(registry, listen)
    try:
        return start_metrics_server(registry, DEFAULT_METRICS_LISTEN)
    except ConfigError as exc:
        log.warning("metrics not served: %s (set server.metrics_listen to another HOST:PORT, "
                    "or to \"\" to turn them off)", exc.message)
        return None
