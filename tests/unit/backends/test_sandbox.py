"""The sandboxed worker pool: misbehaving models fail only their own request."""

from __future__ import annotations

import asyncio
import contextlib
import multiprocessing.connection
import os
import pickle
import signal
import socket
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

from infershield.backends.local_model import onnx_model
from infershield.backends.sandbox import ModelSpec, WorkerPool, _Worker
from infershield.config import BackendConfig
from infershield.errors import (
    BackendUnavailable,
    DeadlineExceeded,
    InvalidRequest,
    LimitExceeded,
    ModelError,
)

TESTS = str(Path(__file__).resolve().parents[2])
NAMES = ("echo", "sleepy", "hog", "spin", "suicide", "raises", "rejects")
SPECS = {n: ModelSpec(factory=f"sandbox_models:{n}", sys_path=(TESTS,)) for n in NAMES}


def run_pool(body: Callable[[WorkerPool], Awaitable[Any]], **kw: Any) -> Any:
    """Run ``body(pool)`` against a fresh pool in a fresh event loop."""
    kw.setdefault("workers", 1)
    kw.setdefault("memory_mb", 768)
    kw.setdefault("timeout_s", 10.0)

    async def main() -> Any:
        async with WorkerPool(SPECS, **kw) as pool:
            return await body(pool)

    return asyncio.run(main())


async def wait_for_pids(pool: WorkerPool, n: int, exclude: set[int] = frozenset()) -> list[int]:  # type: ignore[assignment]
    """Pids once ``n`` workers are up again, none of them in ``exclude``."""
    end = time.monotonic() + 20
    while time.monotonic() < end:
        pids = pool.pids
        if len(pids) == n and not exclude & set(pids):
            return pids
        await asyncio.sleep(0.02)
    raise AssertionError(f"workers not replaced: {pool.pids}")


def test_round_trip_and_worker_is_another_process() -> None:
    async def body(pool: WorkerPool) -> None:
        out = await pool.run("echo", {"x": [1, 2, 3]})
        assert out["out"] == [1, 2, 3]
        assert out["pid"] != os.getpid()
        assert out["pid"] in pool.pids

    run_pool(body)


def test_model_sleeping_past_deadline_is_killed_and_replaced() -> None:
    async def body(pool: WorkerPool) -> None:
        old = pool.pids
        t0 = time.monotonic()
        with pytest.raises(DeadlineExceeded) as ei:
            await pool.run("sleepy", {"seconds": 30}, timeout=0.3)
        assert ei.value.stage == "forward"
        assert time.monotonic() - t0 < 2.0
        await wait_for_pids(pool, 1, exclude=set(old))
        assert (await pool.run("echo", {"x": 1}))["out"] == 1
        assert pool.stats.timeouts == 1

    run_pool(body)


def test_allocation_past_memory_cap_names_the_limit() -> None:
    async def body(pool: WorkerPool) -> None:
        old = pool.pids
        with pytest.raises(LimitExceeded) as ei:
            await pool.run("hog", {"mb": 2048})
        assert ei.value.limit == "worker_memory_mb"
        assert "worker_memory_mb" in ei.value.message
        # A worker that hit MemoryError is replaced; the next request is served.
        await wait_for_pids(pool, 1, exclude=set(old))
        assert (await pool.run("hog", {"mb": 16}))["allocated"] == 16 * 1024 * 1024

    run_pool(body, memory_mb=512)


def test_cpu_time_cap_kills_a_spinning_worker() -> None:
    async def body(pool: WorkerPool) -> None:
        with pytest.raises(LimitExceeded) as ei:
            await pool.run("spin", {"seconds": 20})
        assert ei.value.limit == "worker_cpu_seconds"
        # The limit is per request: a short spin on the replacement is fine.
        assert (await pool.run("spin", {"seconds": 0.05}))["n"] > 0

    run_pool(body, cpu_seconds=1)


@pytest.mark.parametrize("sig", [signal.SIGSEGV, signal.SIGKILL, signal.SIGABRT])
def test_worker_crash_fails_only_that_request(sig: signal.Signals) -> None:
    async def body(pool: WorkerPool) -> None:
        with pytest.raises(BackendUnavailable) as ei:
            await pool.run("suicide", {"signal": int(sig)})
        assert "worker crashed" in ei.value.message
        assert sig.name in ei.value.message
        assert (await pool.run("echo", {"x": "after"}))["out"] == "after"

    run_pool(body)


def test_sigkill_from_outside_mid_request_spares_other_requests() -> None:
    async def body(pool: WorkerPool) -> None:
        # Two workers: one runs a long request, the other is killed mid-request; requests
        # queued behind the killed one go to its replacement.
        long_run = asyncio.create_task(pool.run("sleepy", {"seconds": 1.0}))
        victim = asyncio.create_task(pool.run("sleepy", {"seconds": 10}))
        await asyncio.sleep(0.3)
        queued = [asyncio.create_task(pool.run("echo", {"x": i})) for i in range(8)]
        victim_pid = _busy_pid(pool, seconds=10)
        os.kill(victim_pid, signal.SIGKILL)
        with pytest.raises(BackendUnavailable) as ei:
            await victim
        assert "SIGKILL" in ei.value.message
        assert (await long_run)["slept"] == 1.0
        assert [(await q)["out"] for q in queued] == list(range(8))
        assert victim_pid not in pool.pids

    run_pool(body, workers=2)


def _busy_pid(pool: WorkerPool, *, seconds: float) -> int:
    for w in pool._workers:
        if (
            w is not None
            and w.busy_with is not None
            and w.busy_with.inputs.get("seconds") == seconds
        ):
            return w.pid
    raise AssertionError("no worker runs that job")


def test_cancelled_running_request_stops_the_work() -> None:
    async def body(pool: WorkerPool) -> None:
        old = pool.pids
        task = asyncio.create_task(pool.run("sleepy", {"seconds": 30}))
        await asyncio.sleep(0.3)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        # The worker is killed after the grace period instead of sleeping on.
        await wait_for_pids(pool, 1, exclude=set(old))
        assert pool.stats.cancelled == 1
        assert (await pool.run("echo", {"x": 1}))["out"] == 1

    run_pool(body, cancel_grace_s=0.1)


def test_cancelled_queued_request_never_runs() -> None:
    async def body(pool: WorkerPool) -> None:
        old = pool.pids
        busy = asyncio.create_task(pool.run("sleepy", {"seconds": 0.4}))
        await asyncio.sleep(0.1)
        queued = asyncio.create_task(pool.run("suicide", {"signal": int(signal.SIGKILL)}))
        await asyncio.sleep(0.05)
        queued.cancel()
        assert (await busy)["slept"] == 0.4
        await asyncio.sleep(0.05)
        # The queued job was dropped: it never ran (it would have killed the worker).
        assert pool.pids == old
        assert pool.stats.cancelled == 1

    run_pool(body)


def test_deadline_while_queued_answers_on_time() -> None:
    async def body(pool: WorkerPool) -> None:
        busy = asyncio.create_task(pool.run("sleepy", {"seconds": 1.0}))
        await asyncio.sleep(0.1)
        t0 = time.monotonic()
        with pytest.raises(DeadlineExceeded) as ei:
            await pool.run("echo", {"x": 1}, timeout=0.2)
        assert ei.value.stage == "forward"
        assert "free worker" in ei.value.message
        assert time.monotonic() - t0 < 0.6
        await busy

    run_pool(body)


def test_model_errors_keep_the_worker() -> None:
    async def body(pool: WorkerPool) -> None:
        old = pool.pids
        with pytest.raises(ModelError) as e1:
            await pool.run("raises", {})
        # The client sees the exception type only, never the model's text.
        assert "ValueError" in e1.value.message
        assert "unhappy" not in e1.value.message
        with pytest.raises(InvalidRequest, match="must be a string"):
            await pool.run("rejects", {})
        with pytest.raises(InvalidRequest, match="unknown model"):
            await pool.run("nope", {})
        assert pool.pids == old

    run_pool(body)


def test_broken_model_fails_start_clearly() -> None:
    async def main() -> None:
        pool = WorkerPool(
            {"bad": ModelSpec(factory="sandbox_models:broken_loader", sys_path=(TESTS,))},
            workers=1,
        )
        with pytest.raises(BackendUnavailable, match="weights file is corrupt"):
            await pool.start()

    asyncio.run(main())


def test_closed_pool_refuses() -> None:
    async def main() -> None:
        pool = WorkerPool(SPECS)
        with pytest.raises(BackendUnavailable, match="not running"):
            await pool.run("echo", {})

    asyncio.run(main())


def test_close_finishes_when_a_driver_swallows_its_cancellation() -> None:
    """Before Python 3.12, ``asyncio.wait_for`` could swallow a cancellation that arrived as
    its future completed; a driver that survived one ``cancel()`` used to hang ``close()``."""

    async def stubborn() -> None:
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.sleep(3600)
        await asyncio.sleep(3600)  # only a second cancel stops it

    async def main() -> None:
        pool = WorkerPool(SPECS, workers=1)
        await pool.start()
        task = asyncio.create_task(stubborn())
        pool._drivers.append(task)
        await asyncio.sleep(0)
        t0 = time.monotonic()
        await asyncio.wait_for(pool.close(), timeout=5)
        assert task.cancelled()
        assert time.monotonic() - t0 < 2
        assert pool.pids == []

    asyncio.run(main())


def test_worker_reply_wait_keeps_a_cancellation_that_races_the_reply() -> None:
    """The reply and the cancellation arrive in the same loop turn: the cancellation wins."""

    async def main() -> None:
        ours, theirs = socket.socketpair()
        w = _Worker.__new__(_Worker)
        w.conn = multiprocessing.connection.Connection(ours.detach())
        peer = multiprocessing.connection.Connection(theirs.detach())
        peer.send_bytes(pickle.dumps((1, "ok", None)))
        loop = asyncio.get_running_loop()
        real_add_reader = loop.add_reader

        def add_reader(fd: int, callback: Callable[[], None]) -> None:
            real_add_reader(fd, callback)
            loop.call_soon(lambda: (callback(), task.cancel()))

        loop.add_reader = add_reader  # type: ignore[method-assign]
        try:
            task = asyncio.create_task(w.recv(30.0))
            with pytest.raises(asyncio.CancelledError):
                await task
        finally:
            del loop.add_reader
            w.conn.close()
            peer.close()

    asyncio.run(main())


def test_workers_do_not_outlive_a_killed_parent(tmp_path: Path) -> None:
    """A server killed with SIGKILL must not leave model workers running, even busy ones
    (an idle worker sees EOF and exits; a busy one is killed by PR_SET_PDEATHSIG)."""
    import subprocess
    import sys

    script = tmp_path / "parent.py"
    # No ``if __name__ == "__main__"`` guard on purpose: the pool must not need one.
    script.write_text(
        "import asyncio, sys, time\n"
        "from infershield.backends.sandbox import ModelSpec, WorkerPool\n"
        f"specs = {{'sleepy': ModelSpec(factory='sandbox_models:sleepy', sys_path=({TESTS!r},))}}\n"
        "async def main():\n"
        "    pool = WorkerPool(specs, workers=2)\n"
        "    await pool.start()\n"
        "    busy = [asyncio.create_task(pool.run('sleepy', {'seconds': 60})) for _ in range(2)]\n"
        "    await asyncio.sleep(0.5)\n"
        "    print(*pool.pids, flush=True)\n"
        "    await asyncio.sleep(60)\n"
        "asyncio.run(main())\n"
    )
    with subprocess.Popen(
        [sys.executable, str(script)], stdout=subprocess.PIPE, text=True
    ) as parent:
        try:
            assert parent.stdout is not None
            pids = [int(p) for p in parent.stdout.readline().split()]
            assert len(pids) == 2
        finally:
            parent.kill()
    end = time.monotonic() + 5
    while any(_alive(p) for p in pids) and time.monotonic() < end:
        time.sleep(0.02)
    assert not any(_alive(p) for p in pids)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie is dead for our purposes (its parent has not reaped it yet).
    with open(f"/proc/{pid}/stat", encoding="ascii") as f:
        return f.read().split(") ")[1][0] != "Z"


def test_from_config_uses_backend_limits() -> None:
    pool = WorkerPool.from_config(
        BackendConfig(workers=3, worker_memory_mb=300, worker_cpu_seconds=7, timeout_s=2.5), SPECS
    )
    assert (pool.n_workers, pool.memory_mb, pool.cpu_seconds, pool.timeout_s) == (3, 300, 7, 2.5)


def test_onnx_session_runs_inside_the_worker(tmp_path: Path) -> None:
    import onnx
    from onnx import TensorProto, helper

    graph = helper.make_graph(
        [helper.make_node("Add", ["a", "b"], ["c"])],
        "add",
        [
            helper.make_tensor_value_info("a", TensorProto.FLOAT, [None]),
            helper.make_tensor_value_info("b", TensorProto.FLOAT, [None]),
        ],
        [helper.make_tensor_value_info("c", TensorProto.FLOAT, [None])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    path = tmp_path / "add.onnx"
    onnx.save(model, str(path))
    import numpy as np

    factory = "infershield.backends.local_model:onnx_model"
    specs = {"add": ModelSpec(factory=factory, args=(str(path),))}
    assert callable(onnx_model)

    async def main() -> None:
        async with WorkerPool(specs, workers=1, memory_mb=2048) as pool:
            out = await pool.run(
                "add", {"a": np.array([1.0, 2.0], np.float32), "b": np.ones(2, np.float32)}
            )
            assert out["c"].tolist() == [2.0, 3.0]
            with pytest.raises(InvalidRequest, match="rejected the inputs"):
                await pool.run("add", {"a": np.array([1.0], np.float32)})

    asyncio.run(main())


def test_flood_past_the_limiter_sheds_and_serves_the_rest() -> None:
    from infershield.limits.concurrency import ConcurrencyLimiter

    async def body(pool: WorkerPool) -> None:
        limiter = ConcurrencyLimiter(max_concurrency=2, max_queue=4)

        async def request(i: int) -> Any:
            async with limiter.slot():
                return (await pool.run("sleepy", {"seconds": 0.05}))["slept"]

        results = await asyncio.gather(*(request(i) for i in range(60)), return_exceptions=True)
        ok = [r for r in results if r == 0.05]
        shed = [r for r in results if isinstance(r, LimitExceeded) and r.limit == "max_queue"]
        assert len(ok) == 6  # 2 running + 4 queued: every accepted request succeeds
        assert len(shed) == 54  # the rest are refused at once
        assert (limiter.active, limiter.queued, pool.pending) == (0, 0, 0)

    run_pool(body, workers=2)


@pytest.mark.slow
def test_soak_mixed_misbehaviour_loses_no_request() -> None:
    """Hundreds of requests, one in five misbehaving: each gets its own, right answer."""
    import random

    rng = random.Random(5)
    kinds = ["echo"] * 12 + ["deadline", "memory", "segv", "kill", "raise"]
    plan = [rng.choice(kinds) for _ in range(400)]

    async def one(pool: WorkerPool, i: int, kind: str) -> str:
        try:
            if kind == "echo":
                assert (await pool.run("echo", {"x": i}))["out"] == i
            elif kind == "deadline":
                await pool.run("sleepy", {"seconds": 5}, timeout=0.2)
            elif kind == "memory":
                await pool.run("hog", {"mb": 4096})
            elif kind == "segv":
                await pool.run("suicide", {"signal": int(signal.SIGSEGV)})
            elif kind == "kill":
                await pool.run("suicide", {"signal": int(signal.SIGKILL)})
            else:
                await pool.run("raises", {})
        except DeadlineExceeded:
            return "deadline"
        except LimitExceeded:
            return "memory"
        except BackendUnavailable as exc:
            return "segv" if "SIGSEGV" in exc.message else "kill"
        except ModelError:
            return "raise"
        return "echo"

    async def body(pool: WorkerPool) -> None:
        sem = asyncio.Semaphore(6)

        async def bounded(i: int, kind: str) -> str:
            async with sem:
                return await one(pool, i, kind)

        got = await asyncio.wait_for(
            asyncio.gather(*(bounded(i, k) for i, k in enumerate(plan))), timeout=240
        )
        # A queued request can time out behind crashes only if its own deadline is short;
        # echo has the default 10 s, so every answer matches its request's own behaviour.
        assert got == plan
        assert len(pool.pids) >= 1

    run_pool(body, workers=2, memory_mb=512)
