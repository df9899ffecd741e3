"""End to end: the same tritonclient load sent directly to Triton and through InferShield.

A real Triton (pytriton, CPU) serves ``echo`` (TEXT -> "echo: " + TEXT); InferShield runs as
its own process (``infershield serve --upstream``) in front of it. For each policy
(``rules_only``: the native checks; ``full``: the rules plus the ONNX injection classifier)
and each concurrency (1, 8, 64, 256 client threads, each with its own ``tritonclient.grpc``
client), a bounded number of benign ~200-byte prompts is sent first directly, then through
the firewall, and we report the added p50/p99 latency and the throughput ratio
(through / direct), plus the firewall process's own CPU per request and its resident memory
(from /proc) as load grows. Blocked prompts are excluded (they never reach Triton).
The ``raw_proxy`` rows are the floor: ``bench.raw_proxy``, a Python grpc.aio hop that forwards
raw bytes and screens nothing, measured the same way.

A benchmark measures; it never asserts a timing.

Run alone: ``python -m bench.bench_e2e [--quick] [--json OUT]``.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from bench.common import (
    REPO_ROOT,
    RESULTS_DIR,
    finish,
    make_prompts,
    ratio,
    suite_result,
    summarize,
)

SUITE = "e2e"
CONCURRENCY = (1, 8, 64, 256)
#: Requests per concurrency level (bounded: the machine may be shared).
REQUESTS = {1: 300, 8: 800, 64: 1600, 256: 2048}
QUICK_REQUESTS = {1: 60, 8: 160, 64: 320, 256: 512}
_CLK_TCK = os.sysconf("SC_CLK_TCK")


class ProcStats:
    """CPU seconds and resident memory of one process, read from /proc (Linux)."""

    def __init__(self, pid: int) -> None:
        self.pid = pid

    def cpu_s(self) -> float:
        fields = Path(f"/proc/{self.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / _CLK_TCK  # utime + stime

    def rss_mb(self) -> float:
        for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024.0
        return 0.0

    def peak_rss_mb(self) -> float:
        for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024.0
        return 0.0


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextlib.contextmanager
def triton_echo() -> Iterator[str]:
    """pytriton's Triton on loopback with the ``echo`` model; yields ``host:port``."""
    import sysconfig

    from pytriton.decorators import batch
    from pytriton.model_config import ModelConfig, Tensor
    from pytriton.triton import Triton, TritonConfig

    libdir = sysconfig.get_config_var("LIBDIR") or ""
    os.environ["LD_LIBRARY_PATH"] = f"{libdir}:{os.environ.get('LD_LIBRARY_PATH', '')}"

    @batch
    def echo(TEXT: np.ndarray) -> dict[str, np.ndarray]:
        return {"OUTPUT": np.array([[b"echo: " + r[0]] for r in TEXT], dtype=object)}

    port = _free_port()
    cfg = TritonConfig(
        grpc_address="127.0.0.1",
        grpc_port=port,
        http_address="127.0.0.1",
        http_port=_free_port(),
        allow_metrics=False,
        exit_timeout_secs=5,
    )
    with tempfile.TemporaryDirectory(prefix="bench-triton-") as ws:
        t = Triton(config=cfg, workspace=str(Path(ws) / "ws"))
        t.bind(
            model_name="echo",
            infer_func=echo,
            inputs=[Tensor(name="TEXT", dtype=bytes, shape=(1,))],
            outputs=[Tensor(name="OUTPUT", dtype=bytes, shape=(1,))],
            config=ModelConfig(max_batch_size=64),
        )
        t.run()
        try:
            yield f"127.0.0.1:{port}"
        finally:
            t.stop()


def _policy(name: str) -> dict[str, Any]:
    path = REPO_ROOT / "python" / "infershield" / "policies" / "rules_only.yaml"
    policy: dict[str, Any] = yaml.safe_load(path.read_text())["policy"]
    if name == "full":
        policy = {**policy, "input": [*policy["input"], {"type": "classifier"}]}
    return policy


@contextlib.contextmanager
def firewall(
    upstream: str,
    policy: str,
    workdir: Path,
    *,
    limits: dict[str, Any] | None = None,
    python_args: Sequence[str] = ("-m", "infershield"),
) -> Iterator[tuple[str, ProcStats]]:
    """``infershield serve`` as a separate process; yields ``(host:port, its stats)`` once ready.

    ``limits`` replaces the bench's admission limits (``{}``: the defaults); ``python_args``
    replaces ``-m infershield`` (a bench that patches the server before running the CLI).
    """
    import tritonclient.grpc as tg

    port = _free_port()
    cfg = workdir / f"{policy}.yaml"
    cfg.write_text(
        yaml.safe_dump(
            {
                "server": {"listen": f"127.0.0.1:{port}", "grace_period_s": 1.0},
                "backend": {"kind": "triton", "upstream": f"triton://{upstream}"},
                "policy": _policy(policy),
                # The bench measures screening cost, not the admission limits.
                "limits": {"max_concurrency": 256, "max_queue": 1024}
                if limits is None
                else limits,
                "telemetry": {"log_level": "WARNING"},
            }
        )
    )
    log = (workdir / f"{policy}.log").open("w")
    proc = subprocess.Popen(
        [sys.executable, *python_args, "serve", "--config", str(cfg)],
        stdout=log,
        stderr=subprocess.STDOUT,
        cwd=REPO_ROOT,
    )
    url = f"127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 180
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"infershield serve exited {proc.returncode}; see {log.name}")
            with contextlib.suppress(Exception), tg.InferenceServerClient(url) as c:
                if c.is_server_ready():
                    break
            if time.monotonic() > deadline:
                raise RuntimeError("infershield serve did not become ready in 180 s")
            time.sleep(0.5)
        yield url, ProcStats(proc.pid)
    finally:
        proc.terminate()
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()


@contextlib.contextmanager
def raw_proxy(upstream: str, workdir: Path) -> Iterator[tuple[str, ProcStats]]:
    """``bench.raw_proxy`` (a Python grpc.aio hop that screens nothing) as a separate process:
    the floor of what a second hop in Python costs."""
    import tritonclient.grpc as tg

    url = f"127.0.0.1:{_free_port()}"
    log = (workdir / "raw_proxy.log").open("w")
    proc = subprocess.Popen(
        [sys.executable, "-m", "bench.raw_proxy", url, upstream],
        stdout=log,
        stderr=subprocess.STDOUT,
        cwd=REPO_ROOT,
    )
    try:
        deadline = time.monotonic() + 60
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"bench.raw_proxy exited {proc.returncode}; see {log.name}")
            with contextlib.suppress(Exception), tg.InferenceServerClient(url) as c:
                if c.is_server_ready():
                    break
            if time.monotonic() > deadline:
                raise RuntimeError("bench.raw_proxy did not become ready in 60 s")
            time.sleep(0.2)
        yield url, ProcStats(proc.pid)
    finally:
        proc.terminate()
        proc.wait(15)
        log.close()


def load(url: str, prompts: list[bytes], concurrency: int, total: int) -> dict[str, Any]:
    """``total`` ModelInfer calls from ``concurrency`` threads; latencies and throughput."""
    import tritonclient.grpc as tg

    lat: list[float] = []
    errors = 0
    lock = threading.Lock()
    per = max(1, total // concurrency)

    def worker(k: int) -> None:
        nonlocal errors
        mine: list[float] = []
        bad = 0
        with tg.InferenceServerClient(url) as c:
            inp = tg.InferInput("TEXT", [1, 1], "BYTES")
            for i in range(per):
                inp.set_data_from_numpy(
                    np.array([[prompts[(k * per + i) % len(prompts)]]], dtype=object)
                )
                t0 = time.perf_counter()
                try:
                    c.infer("echo", [inp], client_timeout=30)
                except Exception:
                    bad += 1
                    continue
                mine.append((time.perf_counter() - t0) * 1000.0)
        with lock:
            lat.extend(mine)
            errors += bad

    # Warm-up: connections, schema cache, ONNX session.
    load_once = min(len(prompts), 20)
    with tg.InferenceServerClient(url) as c:
        inp = tg.InferInput("TEXT", [1, 1], "BYTES")
        for p in prompts[:load_once]:
            inp.set_data_from_numpy(np.array([[p]], dtype=object))
            with contextlib.suppress(Exception):
                c.infer("echo", [inp])
    t0 = time.perf_counter()
    with ThreadPoolExecutor(concurrency) as pool:
        list(pool.map(worker, range(concurrency)))
    wall = time.perf_counter() - t0
    stats = summarize(lat)
    return {**stats, "errors": errors, "rps": round(len(lat) / wall, 2) if wall else 0.0}


def _benign_prompts(n: int) -> list[bytes]:
    """Benign ~200-byte prompts that the rules let through (so every call reaches Triton)."""
    from infershield.checks.base import CheckContext
    from infershield.config import Config, build
    from infershield.policy import Policy

    cfg = build(Config, {"policy": _policy("rules_only")})
    policy = Policy.from_config(cfg)
    try:
        out = [
            p
            for p in make_prompts(200, n * 2, attack_rate=0.0, seed=11)
            if not policy.input.run(CheckContext(text=p)).blocked
        ]
    finally:
        policy.close()
    return [p.encode("utf-8") for p in out[:n]]


def _unbuildable(name: str) -> str:
    """Why policy ``name`` cannot be built here (e.g. the classifier model is missing), or ""."""
    from infershield.config import Config, build
    from infershield.errors import FirewallError
    from infershield.policy import Policy

    try:
        Policy.from_config(build(Config, {"policy": _policy(name)})).close()
    except FirewallError as exc:
        return exc.message
    return ""


def run(*, quick: bool = False, out_dir: Path | None = None, **_: Any) -> dict[str, Any]:
    try:
        import pytriton  # noqa: F401
        import tritonclient.grpc  # noqa: F401
    except ImportError as exc:
        return suite_result(SUITE, status="skipped", reason=f"needs pytriton: {exc}")
    counts = QUICK_REQUESTS if quick else REQUESTS
    prompts = _benign_prompts(200)
    rows: list[dict[str, Any]] = []
    headline: dict[str, Any] = {}
    notes: list[str] = []
    policies = []
    for name in ("rules_only", "full"):
        why = _unbuildable(name)
        if why:
            notes.append(f"{name} policy not measured: {why}")
        else:
            policies.append(name)
    with tempfile.TemporaryDirectory(prefix="bench-e2e-") as tmp, triton_echo() as triton:
        for policy in ("raw_proxy", *policies):
            hop = (
                raw_proxy(triton, Path(tmp))
                if policy == "raw_proxy"
                else firewall(triton, policy, Path(tmp))
            )
            with hop as (shield, stats):
                for c in CONCURRENCY:
                    direct = load(triton, prompts, c, counts[c])
                    cpu0, t0 = stats.cpu_s(), time.perf_counter()
                    via = load(shield, prompts, c, counts[c])
                    cpu_used, wall = stats.cpu_s() - cpu0, time.perf_counter() - t0
                    row = {
                        "policy": policy,
                        "concurrency": c,
                        "requests": via["n"],
                        "direct_p50_ms": direct["p50_ms"],
                        "direct_p99_ms": direct["p99_ms"],
                        "via_p50_ms": via["p50_ms"],
                        "via_p99_ms": via["p99_ms"],
                        "added_p50_ms": round(via["p50_ms"] - direct["p50_ms"], 3),
                        "added_p99_ms": round(via["p99_ms"] - direct["p99_ms"], 3),
                        "direct_rps": direct["rps"],
                        "via_rps": via["rps"],
                        "throughput_ratio": ratio(via["rps"], direct["rps"]),
                        "errors": direct["errors"] + via["errors"],
                        # The firewall process alone: CPU per request and cores busy.
                        "fw_cpu_ms_per_req": round(1000.0 * cpu_used / max(via["n"], 1), 3),
                        "fw_cpu_cores": round(cpu_used / wall, 2) if wall else 0.0,
                        "fw_rss_mb": round(stats.rss_mb(), 1),
                        "fw_peak_rss_mb": round(stats.peak_rss_mb(), 1),
                    }
                    rows.append(row)
                    print(json.dumps(row), flush=True)
    for r in rows:
        # Headline: concurrency 1 for latency (no queueing), 64 for throughput.
        if r["concurrency"] == 1:
            headline[f"added_p50_ms_{r['policy']}"] = r["added_p50_ms"]
            headline[f"added_p99_ms_{r['policy']}"] = r["added_p99_ms"]
        if r["concurrency"] == 64:
            headline[f"throughput_ratio_{r['policy']}"] = r["throughput_ratio"]
            headline[f"fw_cpu_ms_per_req_{r['policy']}"] = r["fw_cpu_ms_per_req"]
    return suite_result(
        SUITE,
        baseline="the same tritonclient load sent directly to Triton, in the same run",
        rows=rows,
        headline=headline,
        notes=[
            "client, Triton (pytriton echo model) and InferShield share this machine's CPUs",
            "full = rules + the ONNX injection classifier (CPU)",
            *notes,
        ],
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer requests (a smoke run)")
    parser.add_argument("--json", type=Path, help="write the result here")
    args = parser.parse_args(argv)
    out = args.json or RESULTS_DIR / "e2e.json"
    res = run(quick=args.quick, out_dir=out.parent)
    return finish(res, out)


if __name__ == "__main__":
    sys.exit(main())
