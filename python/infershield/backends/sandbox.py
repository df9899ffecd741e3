"""A pool of killable worker processes that run a model's forward pass.

Why processes: a model that leaks, loops, allocates without bound or segfaults must not take
the firewall down with it. Each worker is a fresh interpreter started with ``subprocess``
(fork+exec, like multiprocessing's ``spawn``; never a bare ``fork``: the server has gRPC
threads, and forking a threaded process can deadlock the child). Unlike ``spawn`` it does not
re-import the parent's ``__main__``, so the pool works from any program. The worker talks
to the parent over a socket pair with length-prefixed pickles, and:

- caps its address space with ``RLIMIT_AS`` (``backend.worker_memory_mb``), so a runaway
  allocation fails inside the worker (MemoryError) instead of in the server;
- caps the CPU seconds of each request with ``RLIMIT_CPU`` (``backend.worker_cpu_seconds``,
  re-armed before every request: the kernel then kills a spinning worker with SIGXCPU);
- builds its models once at start (the ONNX session is created inside the worker).

The parent enforces the wall-clock timeout of each request. When a worker overruns, dies
(SIGKILL, segfault, OOM killer) or runs out of memory, only the request it was running fails,
with an error naming the limit; the worker is replaced and requests still queued go to the
replacement. A caller that goes away cancels its request: a queued one is dropped, a running
one gets ``cancel_grace_s`` to finish and is then killed, so no abandoned work keeps a worker.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import itertools
import logging
import multiprocessing.connection
import os
import pickle
import resource
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from infershield.errors import (
    BackendUnavailable,
    DeadlineExceeded,
    InvalidRequest,
    LimitExceeded,
    ModelError,
)

if TYPE_CHECKING:
    from infershield.config import BackendConfig

log = logging.getLogger(__name__)

#: A model built inside the worker: named input arrays in, named output arrays out.
ModelFn = Callable[[Mapping[str, Any]], Mapping[str, Any]]

# Reply kinds on the worker -> parent pipe.
_OK, _MEMORY, _INVALID, _ERROR, _READY, _LOAD_FAILED = (
    "ok",
    "memory",
    "invalid",
    "error",
    "ready",
    "load_failed",
)


@dataclass(frozen=True, kw_only=True)
class ModelSpec:
    """How a worker builds one model: ``factory`` is ``"module:function"``, called once in
    the worker with ``args``/``kwargs``, and returns a :data:`ModelFn`.

    Everything here is pickled into the worker, so it must be plain data.
    """

    factory: str
    args: tuple[Any, ...] = ()
    kwargs: Mapping[str, Any] = field(default_factory=dict)
    #: Directories added to the worker's ``sys.path`` first (e.g. a model directory that
    #: holds the factory's module).
    sys_path: tuple[str, ...] = ()

    def build(self) -> ModelFn:
        for p in self.sys_path:
            if p not in sys.path:
                sys.path.insert(0, p)
        module_name, _, attr = self.factory.partition(":")
        fn = getattr(importlib.import_module(module_name), attr)
        model: ModelFn = fn(*self.args, **dict(self.kwargs))
        return model


# --------------------------------------------------------------------------- worker side


def _worker_main(
    conn: multiprocessing.connection.Connection,
    specs: Mapping[str, ModelSpec],
    memory_bytes: int,
    cpu_seconds: int,
) -> None:
    """The worker's serving loop (runs in the child, see :func:`_child_entry`)."""
    # Ctrl-C goes to the whole process group; shutdown is the parent's decision.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    _die_with_parent()
    if memory_bytes > 0:
        resource.setrlimit(resource.RLIMIT_AS, (memory_bytes, memory_bytes))
    try:
        models = {name: spec.build() for name, spec in specs.items()}
    except BaseException as exc:  # report, then exit: the parent decides whether to retry
        with contextlib.suppress(Exception):
            conn.send_bytes(pickle.dumps((0, _LOAD_FAILED, f"{type(exc).__name__}: {exc}")))
        return
    conn.send_bytes(pickle.dumps((0, _READY, os.getpid())))
    while True:
        try:
            raw = conn.recv_bytes()
        except (EOFError, OSError):
            return  # the parent closed the pipe: shut down
        job_id = -1  # "the job in flight": a worker runs one job at a time
        out_of_memory = False
        try:
            job_id, model_name, inputs = pickle.loads(raw)
            del raw
            _arm_cpu_limit(cpu_seconds)
            model = models.get(model_name)
            if model is None:
                reply: tuple[Any, ...] = (job_id, _INVALID, f"unknown model {model_name!r}")
            else:
                reply = (job_id, _OK, dict(model(inputs)))
            payload = pickle.dumps(reply, protocol=pickle.HIGHEST_PROTOCOL)
            del reply, inputs
        except MemoryError:
            out_of_memory = True
            payload = pickle.dumps((job_id, _MEMORY, "MemoryError"))
        except InvalidRequest as exc:
            payload = pickle.dumps((job_id, _INVALID, exc.message))
        except BaseException as exc:  # the model's own failure: report it, stay alive
            kind = _classify(exc)
            out_of_memory = kind == _MEMORY
            payload = pickle.dumps((job_id, kind, _describe(exc)))
        try:
            conn.send_bytes(payload)
        except (BrokenPipeError, OSError):
            return
        if out_of_memory:
            return  # a worker that hit MemoryError may be in a bad state: let it be replaced


def _child_entry() -> None:
    """``python -c 'from infershield.backends.sandbox import _child_entry; _child_entry()' FD``.

    The first message is the parent's ``sys.path`` (so factories import as they would in
    the parent), the second the worker's arguments.
    """
    conn = multiprocessing.connection.Connection(int(sys.argv[1]))
    paths: list[str] = pickle.loads(conn.recv_bytes())
    sys.path[:] = paths + [p for p in sys.path if p not in paths]
    specs, memory_bytes, cpu_seconds = pickle.loads(conn.recv_bytes())
    _worker_main(conn, specs, memory_bytes, cpu_seconds)


def _die_with_parent() -> None:
    # If the server is SIGKILLed, its workers must not live on (Linux only; best effort).
    if not sys.platform.startswith("linux"):
        return
    with contextlib.suppress(Exception):
        import ctypes

        pr_set_pdeathsig = 1
        ctypes.CDLL(None, use_errno=True).prctl(pr_set_pdeathsig, int(signal.SIGKILL))


def _arm_cpu_limit(cpu_seconds: int) -> None:
    # RLIMIT_CPU counts the process's lifetime; re-arm it per request so the cap means
    # "CPU seconds for this request". The hard limit stays where it was, so this can only
    # be raised up to what the parent allowed.
    if cpu_seconds <= 0:
        return
    used = resource.getrusage(resource.RUSAGE_SELF)
    soft = int(used.ru_utime + used.ru_stime) + cpu_seconds
    _, hard = resource.getrlimit(resource.RLIMIT_CPU)
    if hard != resource.RLIM_INFINITY:
        soft = min(soft, hard)
    resource.setrlimit(resource.RLIMIT_CPU, (soft, hard))


def _classify(exc: BaseException) -> str:
    # onnxruntime reports bad feeds as InvalidArgument / INVALID_ARGUMENT; those are the
    # caller's fault, not the model's.
    name = type(exc).__name__
    if name in ("InvalidArgument", "InvalidGraph") or "INVALID_ARGUMENT" in str(exc)[:200]:
        return _INVALID
    # onnxruntime turns std::bad_alloc into a RuntimeException mentioning the allocation.
    text = str(exc)[:500].lower()
    if "bad_alloc" in text or "failed to allocate" in text:
        return _MEMORY
    return _ERROR


def _describe(exc: BaseException) -> str:
    # The message goes back to a client: keep the type and a bounded, single-line text.
    text = " ".join(str(exc).split())[:300]
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


# --------------------------------------------------------------------------- parent side

_CHILD_CMD = "from infershield.backends.sandbox import _child_entry; _child_entry()"


@dataclass(eq=False)
class _Job:
    id: int
    model: str
    inputs: Mapping[str, Any]
    deadline: float  # monotonic
    future: asyncio.Future[Mapping[str, Any]]


class _Worker:
    """One worker process and the parent's end of its pipe."""

    def __init__(
        self, proc: subprocess.Popen[bytes], conn: multiprocessing.connection.Connection
    ) -> None:
        self.proc = proc
        self.conn = conn
        self.pid: int = proc.pid
        self.served = 0
        #: The job this worker is running (diagnostics, and tests that kill a busy worker).
        self.busy_with: _Job | None = None

    async def recv(self, timeout: float | None) -> tuple[Any, ...] | None:
        """The next reply, or None on timeout. Raises EOFError when the worker died."""
        loop = asyncio.get_running_loop()
        ready: asyncio.Future[None] = loop.create_future()
        fd = self.conn.fileno()

        def on_readable() -> None:
            if not ready.done():
                ready.set_result(None)

        loop.add_reader(fd, on_readable)
        try:
            # Not asyncio.wait_for: before Python 3.12 it swallows a cancellation that arrives
            # as the reply does, and a pool shutting down would then wait on a live driver.
            done, _ = await asyncio.wait({ready}, timeout=timeout)
        finally:
            loop.remove_reader(fd)
        if not done:
            return None
        raw = self.conn.recv_bytes()  # EOFError when the worker is gone
        reply: tuple[Any, ...] = pickle.loads(raw)
        return reply

    def kill(self) -> None:
        with contextlib.suppress(ProcessLookupError, AttributeError, OSError):
            self.proc.kill()

    @property
    def exitcode(self) -> int | None:
        """The exit status (negative: killed by that signal), None while it runs."""
        return self.proc.poll()

    async def reap(self, timeout: float = 5.0) -> int | None:
        """Wait for the process to exit (without blocking the loop); returns its exit code.

        Past ``timeout``, or if the waiting task is cancelled (pool shutdown), the worker is
        SIGKILLed and waited for synchronously (brief after SIGKILL), so no worker is left
        running or unreaped.
        """
        try:
            end = time.monotonic() + timeout
            while self.exitcode is None and time.monotonic() < end:
                await asyncio.sleep(0.005)
        finally:
            if self.exitcode is None:
                self.kill()
                with contextlib.suppress(subprocess.TimeoutExpired):
                    self.proc.wait(2.0)
            with contextlib.suppress(Exception):
                self.conn.close()
        return self.exitcode


async def _cancel_all(tasks: list[asyncio.Task[None]], bound_s: float = 10.0) -> None:
    """Cancel ``tasks`` and wait for them, cancelling again any that caught a cancellation.

    A task can survive one ``cancel()`` (library code that swallows it), and a shutdown that
    waited on it would hang; this one re-cancels every 0.2 s and gives up after ``bound_s``.
    """
    pending = {t for t in tasks if not t.done()}
    end = time.monotonic() + bound_s
    while pending and time.monotonic() < end:
        for t in pending:
            t.cancel()
        _, pending = await asyncio.wait(pending, timeout=0.2)
    for t in pending:
        log.error("sandbox driver %s did not stop on cancellation; abandoned", t.get_name())
    for t in tasks:
        if t.done() and not t.cancelled():
            t.exception()  # retrieved, so asyncio does not log it as never retrieved


def _exit_reason(code: int | None) -> tuple[str, str]:
    """(limit-or-'', description) for a worker's exit code."""
    if code is None:
        return "", "did not exit"
    if code < 0:
        sig = -code
        try:
            name = signal.Signals(sig).name
        except ValueError:
            name = f"signal {sig}"
        if sig == signal.SIGXCPU:
            return "worker_cpu_seconds", f"killed by {name} (CPU time limit)"
        return "", f"killed by {name}"
    return "", f"exited with status {code}"


@dataclass
class PoolStats:
    """Counters for tests, metrics and logs."""

    served: int = 0
    timeouts: int = 0
    crashes: int = 0
    memory_errors: int = 0
    cancelled: int = 0
    restarts: int = 0


class WorkerPool:
    """``workers`` sandboxed processes serving ``models``; use ``await pool.run(...)``.

    Create it, ``await pool.start()`` inside the event loop that will use it, and
    ``await pool.close()`` at shutdown. A job's ``timeout`` covers both its wait for a free
    worker and its forward pass.
    """

    def __init__(
        self,
        models: Mapping[str, ModelSpec],
        *,
        workers: int = 1,
        memory_mb: int = 2048,
        cpu_seconds: int = 3600,
        timeout_s: float = 30.0,
        max_pending: int = 1024,
        start_timeout_s: float = 120.0,
        cancel_grace_s: float = 0.25,
    ) -> None:
        if workers < 1:
            raise ValueError("workers must be >= 1")
        self.models = dict(models)
        self.n_workers = workers
        self.memory_bytes = max(0, memory_mb) * 1024 * 1024
        self.memory_mb = memory_mb
        self.cpu_seconds = cpu_seconds
        self.timeout_s = timeout_s
        self.max_pending = max_pending
        self.start_timeout_s = start_timeout_s
        self.cancel_grace_s = cancel_grace_s
        self._queue: asyncio.Queue[_Job] | None = None
        self._drivers: list[asyncio.Task[None]] = []
        self._workers: list[_Worker | None] = [None] * workers
        self._ids = itertools.count(1)
        self._inflight: set[_Job] = set()
        self._closed = False
        self.stats = PoolStats()

    @classmethod
    def from_config(cls, backend: BackendConfig, models: Mapping[str, ModelSpec]) -> WorkerPool:
        return cls(
            models,
            workers=backend.workers,
            memory_mb=backend.worker_memory_mb,
            cpu_seconds=backend.worker_cpu_seconds,
            timeout_s=backend.timeout_s,
        )

    # ------------------------------------------------------------------ lifecycle

    async def start(self) -> None:
        """Start every worker and wait until each has built its models.

        Raises BackendUnavailable if a worker cannot start (a model fails to load).
        """
        self._queue = asyncio.Queue()
        try:
            started = await asyncio.gather(*(self._spawn() for _ in range(self.n_workers)))
        except BaseException:
            await self.close()
            raise
        self._workers = list(started)
        self._drivers = [
            asyncio.create_task(self._drive(i), name=f"sandbox-worker-{i}")
            for i in range(self.n_workers)
        ]

    async def close(self) -> None:
        """Stop the workers; queued requests fail with BackendUnavailable."""
        self._closed = True
        await _cancel_all(self._drivers)
        self._drivers = []
        closing = list(self._inflight)
        self._inflight.clear()
        if self._queue is not None:
            while not self._queue.empty():
                closing.append(self._queue.get_nowait())
        for job in closing:
            _set_exc(job, BackendUnavailable("the model worker pool is shutting down"))
        for i, w in enumerate(self._workers):
            if w is None:
                continue
            with contextlib.suppress(Exception):
                w.conn.close()  # EOF: the worker exits on its own
            self._workers[i] = None
            code = await w.reap(timeout=2.0)
            log.debug("worker %d exited (%s)", w.pid, code)

    async def __aenter__(self) -> WorkerPool:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    @property
    def pids(self) -> list[int]:
        """Pids of the live workers (for tests and diagnostics)."""
        return [w.pid for w in self._workers if w is not None]

    @property
    def pending(self) -> int:
        return self._queue.qsize() if self._queue is not None else 0

    async def _spawn(self) -> _Worker:
        parent_sock, child_sock = socket.socketpair()
        try:
            proc = subprocess.Popen(
                [sys.executable, "-c", _CHILD_CMD, str(child_sock.fileno())],
                pass_fds=(child_sock.fileno(),),
                stdin=subprocess.DEVNULL,
                close_fds=True,
            )
        except OSError as exc:
            parent_sock.close()
            raise BackendUnavailable(f"cannot start a model worker: {exc.strerror}") from None
        finally:
            # Only the worker may hold the child end: then its death reads as EOF here.
            child_sock.close()
        w = _Worker(proc, multiprocessing.connection.Connection(parent_sock.detach()))
        try:
            w.conn.send_bytes(pickle.dumps(list(sys.path)))
            w.conn.send_bytes(pickle.dumps((self.models, self.memory_bytes, self.cpu_seconds)))
            reply = await w.recv(self.start_timeout_s)
        except (EOFError, OSError):
            code = await w.reap()
            raise BackendUnavailable(
                f"model worker failed to start ({_exit_reason(code)[1]})"
            ) from None
        except BaseException:
            w.kill()
            await w.reap()
            raise
        if reply is None or reply[1] != _READY:
            w.kill()
            await w.reap()
            why = "timed out loading models" if reply is None else str(reply[2])
            raise BackendUnavailable(f"model worker failed to start: {why}")
        log.info("sandbox worker %d ready (models: %s)", w.pid, ", ".join(self.models) or "none")
        return w

    async def _respawn(self, slot: int) -> _Worker:
        """Start a replacement worker, retrying with backoff until it comes up."""
        delay = 0.1
        while True:
            try:
                w = await self._spawn()
            except BackendUnavailable as exc:
                log.error(
                    "cannot replace sandbox worker %d: %s; retrying in %.1fs",
                    slot,
                    exc.message,
                    delay,
                )
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)
                continue
            self.stats.restarts += 1
            # Imported here: worker processes import this module and need no telemetry.
            from infershield.telemetry.metrics import active

            if (m := active()) is not None:
                m.worker_restarts.inc()
            self._workers[slot] = w
            return w

    # ------------------------------------------------------------------ requests

    async def run(
        self, model: str, inputs: Mapping[str, Any], *, timeout: float | None = None
    ) -> Mapping[str, Any]:
        """Run ``model`` on ``inputs`` in a worker; returns its outputs.

        Raises DeadlineExceeded(stage="forward") past ``timeout`` (default
        ``backend.timeout_s``), LimitExceeded naming ``worker_memory_mb`` or
        ``worker_cpu_seconds``, BackendUnavailable when the worker crashed, InvalidRequest
        when the model rejects the inputs, ModelError when the model raised. Cancelling the
        awaiting task cancels the job.
        """
        if self._queue is None or self._closed:
            raise BackendUnavailable("the model worker pool is not running")
        if model not in self.models:
            raise InvalidRequest(f"unknown model {model!r}")
        if self._queue.qsize() >= self.max_pending:
            raise LimitExceeded(
                f"{self._queue.qsize()} forward passes already queued", limit="max_queue"
            )
        t = self.timeout_s if timeout is None else timeout
        loop = asyncio.get_running_loop()
        job = _Job(
            next(self._ids), model, inputs, time.monotonic() + max(0.0, t), loop.create_future()
        )
        self._queue.put_nowait(job)
        try:
            try:
                return await asyncio.wait_for(asyncio.shield(job.future), timeout=t)
            except asyncio.TimeoutError:
                if job not in self._inflight and not job.future.done():
                    # Still queued: every worker was busy for the whole budget.
                    job.future.cancel()
                    self.stats.timeouts += 1
                    raise DeadlineExceeded(
                        f"deadline exceeded waiting for a free worker for model {model!r}",
                        stage="forward",
                    ) from None
                # Running: its driver enforces the same deadline and answers at once.
                return await job.future
        except asyncio.CancelledError:
            # The driver sees the cancelled future and drops or stops the job.
            job.future.cancel()
            raise

    async def _drive(self, slot: int) -> None:
        """One loop per worker slot: take a job, run it, replace the worker when needed."""
        assert self._queue is not None
        while True:
            w = self._workers[slot]
            if w is None:
                w = await self._respawn(slot)
            job = await self._queue.get()
            if job.future.done():  # cancelled while queued
                self.stats.cancelled += 1
                continue
            remaining = job.deadline - time.monotonic()
            if remaining <= 0:
                self.stats.timeouts += 1
                job.future.set_exception(
                    DeadlineExceeded(
                        f"deadline exceeded waiting for a free worker for model {job.model!r}",
                        stage="forward",
                    )
                )
                continue
            self._inflight.add(job)
            w.busy_with = job
            try:
                replace = await self._run_job(w, job, remaining)
            except asyncio.CancelledError:
                raise
            except Exception:  # never let one job kill the driver: fail it, reset the worker
                log.exception("sandbox driver %d: unexpected error", slot)
                _set_exc(
                    job, BackendUnavailable("model worker failed unexpectedly; worker replaced")
                )
                replace = True
            finally:
                self._inflight.discard(job)
                w.busy_with = None
            if replace:
                self._workers[slot] = None
                w.kill()
                code = await w.reap()
                log.warning("sandbox worker %d replaced (exit %s)", w.pid, code)

    async def _run_job(self, w: _Worker, job: _Job, remaining: float) -> bool:
        """Run one job on ``w``; returns True when the worker must be replaced."""
        try:
            w.conn.send_bytes(
                pickle.dumps((job.id, job.model, job.inputs), protocol=pickle.HIGHEST_PROTOCOL)
            )
        except (BrokenPipeError, OSError, EOFError):
            return self._fail_crashed(w, job, await self._exit_of(w))
        except Exception as exc:  # unpicklable inputs: the caller's fault, the worker is fine
            _set_exc(
                job,
                InvalidRequest(f"inputs cannot be sent to the model worker: {type(exc).__name__}"),
            )
            return False
        recv = asyncio.ensure_future(w.recv(None))
        try:
            waiting: set[asyncio.Future[Any]] = {recv, job.future}
            done, _ = await asyncio.wait(
                waiting, timeout=remaining, return_when=asyncio.FIRST_COMPLETED
            )
            if recv not in done and job.future.done():
                # The caller went away: give the worker a moment, then stop the work.
                self.stats.cancelled += 1
                grace = min(self.cancel_grace_s, max(0.0, job.deadline - time.monotonic()))
                done, _ = await asyncio.wait(waiting - {job.future}, timeout=grace)
                if recv not in done:
                    log.info("sandbox worker %d killed: its caller went away", w.pid)
                    return True
            if recv not in done:
                self.stats.timeouts += 1
                _set_exc(
                    job,
                    DeadlineExceeded(
                        f"model {job.model!r} forward pass exceeded its deadline; worker killed",
                        stage="forward",
                    ),
                )
                return True
            try:
                reply = recv.result()
            except (EOFError, OSError):
                return self._fail_crashed(w, job, await self._exit_of(w))
        finally:
            if not recv.done():
                recv.cancel()
                with contextlib.suppress(BaseException):
                    await recv
        assert reply is not None
        return self._deliver(w, job, reply)

    async def _exit_of(self, w: _Worker) -> int | None:
        end = time.monotonic() + 2.0
        while w.exitcode is None and time.monotonic() < end:
            await asyncio.sleep(0.005)
        return w.exitcode

    def _fail_crashed(self, w: _Worker, job: _Job, code: int | None) -> bool:
        limit, why = _exit_reason(code)
        if limit:
            self.stats.crashes += 1
            _set_exc(
                job,
                LimitExceeded(
                    f"model {job.model!r} worker {why}; worker_cpu_seconds is {self.cpu_seconds}",
                    limit=limit,
                ),
            )
        elif code == -signal.SIGKILL:
            # SIGKILL is also how the kernel's OOM killer ends a process.
            self.stats.crashes += 1
            _set_exc(
                job,
                BackendUnavailable(
                    f"model {job.model!r} worker crashed ({why}; out of memory or killed); "
                    "worker replaced"
                ),
            )
        else:
            self.stats.crashes += 1
            _set_exc(
                job,
                BackendUnavailable(f"model {job.model!r} worker crashed ({why}); worker replaced"),
            )
        log.warning("sandbox worker %d died running %r: %s", w.pid, job.model, why)
        return True

    def _deliver(self, w: _Worker, job: _Job, reply: tuple[Any, ...]) -> bool:
        job_id, kind, payload = reply
        if job_id not in (job.id, -1):
            # A reply for another job means the pipe is out of step: trust nothing, replace.
            _set_exc(job, BackendUnavailable("model worker protocol error; worker replaced"))
            return True
        w.served += 1
        if kind == _OK:
            self.stats.served += 1
            if not job.future.done():
                job.future.set_result(payload)
            return False
        if kind == _MEMORY:
            self.stats.memory_errors += 1
            _set_exc(
                job,
                LimitExceeded(
                    f"model {job.model!r} ran out of memory in its worker "
                    f"(worker_memory_mb is {self.memory_mb}); worker replaced",
                    limit="worker_memory_mb",
                ),
            )
            return True
        if kind == _INVALID:
            _set_exc(job, InvalidRequest(f"model {job.model!r} rejected the inputs: {payload}"))
            return False
        # The model's own message may quote its input: log it, tell the caller the type only.
        log.warning("model %r raised in sandbox worker %d: %s", job.model, w.pid, payload)
        _set_exc(job, ModelError(f"model {job.model!r} failed ({str(payload).split(':')[0]})"))
        return False


def _set_exc(job: _Job, exc: BaseException) -> None:
    if not job.future.done():
        job.future.set_exception(exc)
