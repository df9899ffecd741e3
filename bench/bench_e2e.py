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

The ``auth`` row compares two firewalls in front of the same Triton at concurrency 1, one
without keys and one with ``auth.keys_file`` (every call carries ``authorization: Bearer``),
requests alternating one by one between them and a second firewall without keys (whose
difference from the first is the run's noise floor); it reports the added p50 per request,
the median of the paired differences, and the in-process cost of one
``AccessControl.authenticate`` (perimeter + key lookup + HMAC) for scale.

A benchmark measures; it never asserts a timing.

The ``processes`` rows (``--processes-only``) compare ``server.processes: 2`` with 1,
rules only, the firewall pinned with ``taskset`` to ``--fw-cpus`` and this process (the client
threads and Triton, which inherits the mask) to ``--other-cpus``; each count gets the same
load, and the ratio is through-throughput of 2 over 1.

``--hops`` picks the hops (``raw_proxy``, ``rules_only``, ``full``) and ``--concurrency`` the
levels, and then the rate limiter and auth rows are left out (a quick data-plane A/B).
``--compare-src DIR`` (repeatable) adds the hop ``rules_only@NAME`` (``NAME``: the directory
above ``DIR``): the rules-only firewall run from the Python sources in ``DIR`` (for example
``git archive`` of an earlier commit, with this install's native module and generated ``v1``
package copied beside them), measured in the same run, so each change's effect on CPU per
request is read against the same load.

Run alone: ``python -m bench.bench_e2e [--quick] [--auth-only] [--hops H,..] [--concurrency C,..]
[--compare-src DIR] [--processes-only] [--fw-cpus L] [--other-cpus L]
[--json OUT]``.
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
    auth: dict[str, Any] | None = None,
    name: str = "",
    extra: dict[str, Any] | None = None,
    cpus: str = "",
) -> Iterator[tuple[str, ProcStats]]:
    """``infershield serve`` as a separate process; yields ``(host:port, its stats)`` once ready.

    ``limits`` replaces the bench's admission limits (``{}``: the defaults); ``python_args``
    replaces ``-m infershield`` (a bench that patches the server before running the CLI);
    ``auth`` is the config's ``auth`` section (a keys file), off by default; ``name`` names
    the config and log files (default: the policy).
    ``extra`` adds config sections (the rate limiter rows); ``cpus`` pins the firewall
    (and its children, with ``server.processes``) with ``taskset -c``.
    """

    port = _free_port()
    name = name or policy
    cfg = workdir / f"{name}.yaml"
    data: dict[str, Any] = {
        "server": {"listen": f"127.0.0.1:{port}", "grace_period_s": 1.0},
        "backend": {"kind": "triton", "upstream": f"triton://{upstream}"},
        "policy": _policy(policy),
        # The bench measures screening cost, not the admission limits.
        "limits": {"max_concurrency": 256, "max_queue": 1024} if limits is None else limits,
        "telemetry": {"log_level": "WARNING"},
    }
    if auth:
        data["auth"] = auth
    for section, values in (extra or {}).items():
        if isinstance(values, dict) and isinstance(data.get(section), dict):
            data[section] = {**data[section], **values}
        else:
            data[section] = values
    cfg.write_text(yaml.safe_dump(data))
    url = f"127.0.0.1:{port}"
    pin = ["taskset", "-c", cpus] if cpus else []
    with _serving(
        [*pin, sys.executable, *python_args, "serve", "--config", str(cfg)],
        url,
        workdir / f"{name}.log",
        what="infershield serve",
        ready_s=180,
        poll_s=0.5,
    ) as proc:
        yield url, ProcStats(proc.pid)


@contextlib.contextmanager
def _serving(
    cmd: list[str], url: str, log_path: Path, *, what: str, ready_s: float, poll_s: float
) -> Iterator[subprocess.Popen[bytes]]:
    """Run ``cmd`` (a gRPC server at ``url``, output to ``log_path``) until it is ready;
    stop it (terminate, then kill after 15 s) when the block ends."""
    import tritonclient.grpc as tg

    log = log_path.open("w")
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, cwd=REPO_ROOT)
    try:
        deadline = time.monotonic() + ready_s
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"{what} exited {proc.returncode}; see {log.name}")
            with contextlib.suppress(Exception), tg.InferenceServerClient(url) as c:
                if c.is_server_ready():
                    break
            if time.monotonic() > deadline:
                raise RuntimeError(f"{what} did not become ready in {ready_s:g} s")
            time.sleep(poll_s)
        yield proc
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

    url = f"127.0.0.1:{_free_port()}"
    with _serving(
        [sys.executable, "-m", "bench.raw_proxy", url, upstream],
        url,
        workdir / "raw_proxy.log",
        what="bench.raw_proxy",
        ready_s=60,
        poll_s=0.2,
    ) as proc:
        yield url, ProcStats(proc.pid)


def _from_source(src: Path) -> tuple[str, ...]:
    """``python_args`` that run the CLI from the sources in ``src`` instead of this install."""
    code = (
        "import sys; "
        "sys.meta_path = [f for f in sys.meta_path "
        "if type(f).__name__ != 'ScikitBuildRedirectingFinder']; "
        f"sys.path.insert(0, {str(src)!r}); "
        "from infershield.cli import main; sys.exit(main())"
    )
    return ("-c", code)


def load(
    url: str,
    prompts: list[bytes],
    concurrency: int,
    total: int,
    headers: dict[str, str] | None = None,
) -> dict[str, Any]:
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
                    c.infer("echo", [inp], client_timeout=30, headers=headers)
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
                c.infer("echo", [inp], headers=headers)
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


AUTH_ROUNDS = 5


def _authenticate_us(keys_file: str, secret_file: str, key: str, n: int = 20000) -> float:
    """Microseconds for one in-process ``AccessControl.authenticate`` with a valid key."""
    from infershield.auth.access import AccessControl
    from infershield.config import AuthConfig, Config

    ac = AccessControl(Config(auth=AuthConfig(keys_file=keys_file, secret_file=secret_file)))
    md = [("authorization", f"Bearer {key}"), ("user-agent", "bench")]
    method = "/inference.GRPCInferenceService/ModelInfer"
    ac.authenticate(method, "ipv4:127.0.0.1:5000", md)
    t0 = time.perf_counter()
    for _ in range(n):
        ac.authenticate(method, "ipv4:127.0.0.1:5000", md)
    return (time.perf_counter() - t0) / n * 1e6


def _alternating(
    targets: list[tuple[str, dict[str, str] | None]], prompts: list[bytes], n: int
) -> list[list[float]]:
    """``n`` requests to each ``(url, headers)`` target, one by one in turn from one thread,
    so every target sees the same machine load (this VM is shared); latencies in ms."""
    import tritonclient.grpc as tg

    out: list[list[float]] = [[] for _ in targets]
    clients = [tg.InferenceServerClient(url) for url, _ in targets]
    try:
        inp = tg.InferInput("TEXT", [1, 1], "BYTES")
        for i in range(n + 20):
            inp.set_data_from_numpy(np.array([[prompts[i % len(prompts)]]], dtype=object))
            for client, (_, hdr), sink in zip(clients, targets, out, strict=True):
                t0 = time.perf_counter()
                client.infer("echo", [inp], client_timeout=30, headers=hdr)
                if i >= 20:  # the first 20 of each warm up connections and caches
                    sink.append((time.perf_counter() - t0) * 1000.0)
    finally:
        for c in clients:
            c.close()
    return out


def auth_row(triton: str, prompts: list[bytes], total: int, tmp: Path) -> dict[str, Any]:
    """Added p50 of API-key auth at concurrency 1: three firewalls in front of the same
    Triton, two without keys and one with a keys file, requests alternating between them.
    The two without keys give the noise floor (an A/A difference) of the same run."""
    from infershield.auth.keys import create_key
    from infershield.config import AuthConfig

    auth = AuthConfig(keys_file=str(tmp / "keys.json"), secret_file=str(tmp / "keys.secret"))
    for i in range(20):  # a keys file with more than one entry
        create_key(auth, tenant=f"t{i}", roles=["infer"], models=["echo"])
    _, key = create_key(auth, tenant="bench", roles=["infer"], models=["echo"])
    section = {"keys_file": auth.keys_file, "secret_file": auth.secret_file}
    headers = {"authorization": f"Bearer {key}"}
    n = total * AUTH_ROUNDS
    with (
        firewall(triton, "rules_only", tmp, name="auth_off") as (plain, _),
        firewall(triton, "rules_only", tmp, name="auth_off_2") as (plain2, _),
        firewall(triton, "rules_only", tmp, auth=section, name="auth_on") as (keyed, _),
    ):
        off, off2, on = _alternating([(plain, None), (plain2, None), (keyed, headers)], prompts, n)
    p50 = {k: float(np.median(v)) for k, v in (("off", off), ("off2", off2), ("on", on))}
    return {
        "policy": "rules_only",
        "auth": "api_key",
        "concurrency": 1,
        "requests_each": n,
        "auth_off_p50_ms": round(p50["off"], 4),
        "auth_on_p50_ms": round(p50["on"], 4),
        "added_p50_ms": round(p50["on"] - p50["off"], 4),
        "noise_aa_p50_ms": round(p50["off2"] - p50["off"], 4),
        "paired_median_diff_ms": round(float(np.median(np.subtract(on, off))), 4),
        "auth_off_p99_ms": round(float(np.percentile(off, 99)), 4),
        "auth_on_p99_ms": round(float(np.percentile(on, 99)), 4),
        "authenticate_us": round(_authenticate_us(auth.keys_file, auth.secret_file, key), 2),
    }


@contextlib.contextmanager
def redis_server(workdir: Path) -> Iterator[str]:
    """A throwaway ``redis-server`` on a free loopback port; yields its URL."""
    import shutil
    import socket

    binary = shutil.which("redis-server")
    if binary is None:
        raise RuntimeError("redis-server is not installed (Debian package redis-server)")
    port = _free_port()
    (workdir / "redis").mkdir(exist_ok=True)
    proc = subprocess.Popen(
        [binary, "--port", str(port), "--bind", "127.0.0.1", "--dir", str(workdir / "redis"),
         "--save", "", "--appendonly", "no"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 10
        while True:
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.2):
                break
            if time.monotonic() > deadline or proc.poll() is not None:
                raise RuntimeError("redis-server did not start")
            time.sleep(0.05)
        yield f"redis://127.0.0.1:{port}/0"
    finally:
        proc.terminate()
        proc.wait(10)


#: Per-caller buckets on both axes, far above the bench's load: every call pays the
#: check-and-take (requests at admission, tokens after tokenizing) and none is refused.
_LIMITS = {
    "default": {"requests_per_s": 1e6, "tokens_per_s": 1e9},
}


def ratelimit_rows(
    triton: str, prompts: list[bytes], workdir: Path, *, quick: bool = False
) -> list[dict[str, Any]]:
    """The rate limiter's added latency: rules_only without a limiter, with the in-memory
    buckets, with the Redis buckets (both axes: two round trips per call, the output-token
    debit off the reply path) and with a Redis request bucket only (one round trip), at
    concurrency 1 (rounds interleaved against drift)."""
    n, rounds = (100, 2) if quick else (300, 3)
    rows: list[dict[str, Any]] = []
    with redis_server(workdir) as url:
        modes: dict[str, dict[str, Any]] = {
            "off": {},
            "memory": {"ratelimit": {"backend": "memory", **_LIMITS}},
            "redis": {"ratelimit": {"backend": "redis", "redis_url": url, **_LIMITS}},
            # One round trip per call (quarantine + request bucket) instead of two.
            "redis_requests_only": {
                "ratelimit": {
                    "backend": "redis",
                    "redis_url": url,
                    "default": {"requests_per_s": 1e6},
                }
            },
        }
        with contextlib.ExitStack() as stack:
            urls: dict[str, str] = {}
            for m, extra in modes.items():
                fw = firewall(triton, "rules_only", workdir, extra=extra, name=f"rules_only-rl-{m}")
                urls[m] = stack.enter_context(fw)[0]
            lat: dict[str, list[float]] = {m: [] for m in modes}
            for _ in range(rounds):
                for m, u in urls.items():
                    lat[m].extend(load_latencies(u, prompts, n))
        takes = {m: store_take_latencies(m, url, n * rounds) for m in ("memory", "redis")}
    for m, samples in takes.items():
        st = summarize(samples)
        rows.append(
            {
                "policy": "n/a (one check-and-take, in process)",
                "limiter": f"{m}_store_take",
                "concurrency": 1,
                "requests": st["n"],
                "on_p50_ms": st["p50_ms"],
                "on_p99_ms": st["p99_ms"],
                "added_p50_ms": st["p50_ms"],
            }
        )
        print(json.dumps(rows[-1]), flush=True)
    base = summarize(lat["off"])
    for m in ("memory", "redis", "redis_requests_only"):
        st = summarize(lat[m])
        rows.append(
            {
                "policy": "rules_only",
                "limiter": m,
                "concurrency": 1,
                "requests": st["n"],
                "off_p50_ms": base["p50_ms"],
                "on_p50_ms": st["p50_ms"],
                "added_p50_ms": round(st["p50_ms"] - base["p50_ms"], 3),
                "off_p99_ms": base["p99_ms"],
                "on_p99_ms": st["p99_ms"],
            }
        )
        print(json.dumps(rows[-1]), flush=True)
    return rows


def store_take_latencies(backend: str, url: str, n: int) -> list[float]:
    """``n`` sequential check-and-takes (quarantine + request bucket) on one store, in ms:
    the limiter's own cost without the firewall's other noise."""
    import asyncio

    from infershield.abuse.redis_store import RedisStore
    from infershield.abuse.store import Bucket, MemoryStore, Store

    async def go() -> list[float]:
        store: Store = MemoryStore() if backend == "memory" else RedisStore(url, timeout_s=1.0)
        bucket = Bucket(1e6, 1e6)
        out: list[float] = []
        try:
            for i in range(n + 50):
                t0 = time.perf_counter()
                await store.take("bench|req|*", bucket, 1, quarantine_key="bench")
                if i >= 50:
                    out.append((time.perf_counter() - t0) * 1000.0)
        finally:
            await store.close()
        return out

    return asyncio.run(go())


def load_latencies(url: str, prompts: list[bytes], n: int) -> list[float]:
    """``n`` sequential ModelInfer calls (one client); their latencies in ms."""
    import tritonclient.grpc as tg

    out: list[float] = []
    with tg.InferenceServerClient(url) as c:
        inp = tg.InferInput("TEXT", [1, 1], "BYTES")
        for i in range(n + 10):
            inp.set_data_from_numpy(np.array([[prompts[i % len(prompts)]]], dtype=object))
            t0 = time.perf_counter()
            c.infer("echo", [inp], client_timeout=30)
            if i >= 10:  # the first calls warm connections and caches
                out.append((time.perf_counter() - t0) * 1000.0)
    return out


class TreeStats(ProcStats):
    """CPU of a process and its children (a ``server.processes`` supervisor and its
    serving processes); children that exited are not counted."""

    def cpu_s(self) -> float:
        total = super().cpu_s()
        with contextlib.suppress(OSError):
            kids = Path(f"/proc/{self.pid}/task/{self.pid}/children").read_text().split()
            total += sum(ProcStats(int(k)).cpu_s() for k in kids)
        return total


def processes_rows(
    triton: str, prompts: list[bytes], workdir: Path, *, quick: bool, fw_cpus: str,
    concurrency: Sequence[int] = (8, 64), rounds: int = 3,
) -> list[dict[str, Any]]:
    """Rules only, ``server.processes`` 1 and 2, both up at once and pinned to ``fw_cpus``;
    the load alternates between them for ``rounds`` rounds per concurrency, so a shift in
    the machine's load (it is shared) hits both arms alike."""
    counts = QUICK_REQUESTS if quick else REQUESTS
    rows: list[dict[str, Any]] = []
    with contextlib.ExitStack() as stack:
        arms = {
            n: stack.enter_context(firewall(
                triton, "rules_only", workdir, name=f"processes{n}", cpus=fw_cpus,
                extra={"server": {"processes": n, "metrics_listen": ""}},
            ))
            for n in (1, 2)
        }
        for c in concurrency:
            acc = {n: {"n": 0, "wall": 0.0, "cpu": 0.0, "errors": 0, "p50": []}
                   for n in arms}
            for url, _ in arms.values():
                load(url, prompts, c, counts[c])  # warm: every child, connections spread
            for _ in range(rounds):
                for n, (url, stats) in arms.items():
                    tree = TreeStats(stats.pid)
                    cpu0, t0 = tree.cpu_s(), time.perf_counter()
                    via = load(url, prompts, c, counts[c])
                    a = acc[n]
                    a["cpu"] += tree.cpu_s() - cpu0
                    a["wall"] += time.perf_counter() - t0
                    a["n"] += via["n"]
                    a["errors"] += via["errors"]
                    a["p50"].append(via["p50_ms"])
            rps = {n: a["n"] / a["wall"] for n, a in acc.items()}
            for n, a in acc.items():
                row = {
                    "processes": n,
                    "concurrency": c,
                    "fw_cpus": fw_cpus or "all",
                    "requests": a["n"],
                    "via_rps": round(rps[n], 2),
                    "via_p50_ms": round(float(np.median(a["p50"])), 3),
                    "errors": a["errors"],
                    "fw_cpu_ms_per_req": round(1000.0 * a["cpu"] / max(a["n"], 1), 3),
                    "fw_cpu_cores": round(a["cpu"] / a["wall"], 2),
                    "load_avg_1m": round(os.getloadavg()[0], 2),
                }
                if n == 2:
                    row["ratio_vs_1"] = ratio(rps[2], rps[1])
                rows.append(row)
                print(json.dumps(row), flush=True)
    return rows


def run(
    *,
    quick: bool = False,
    out_dir: Path | None = None,
    auth_only: bool = False,
    only_ratelimit: bool = False,
    processes_only: bool = False,
    fw_cpus: str = "",
    other_cpus: str = "",
    hops: Sequence[str] | None = None,
    concurrency: Sequence[int] = CONCURRENCY,
    compare_src: Sequence[Path] = (),
    **_: Any,
) -> dict[str, Any]:
    """The suite. ``hops`` (default: the raw proxy and every policy that builds here) and
    ``concurrency`` narrow the grid; with ``hops`` the rate limiter and auth rows are skipped.
    ``compare_src`` adds ``rules_only@NAME`` per directory, the firewall from those sources."""
    try:
        import pytriton  # noqa: F401
        import tritonclient.grpc  # noqa: F401
    except ImportError as exc:
        return suite_result(SUITE, status="skipped", reason=f"needs pytriton: {exc}")
    counts = QUICK_REQUESTS if quick else REQUESTS
    prompts = _benign_prompts(200)
    if processes_only:
        if other_cpus:  # the client threads, and Triton started below, which inherits it
            os.sched_setaffinity(0, {int(c) for c in other_cpus.split(",")})
        with tempfile.TemporaryDirectory(prefix="bench-e2e-") as tmp, triton_echo() as triton:
            prows = processes_rows(triton, prompts, Path(tmp), quick=quick, fw_cpus=fw_cpus)
        return suite_result(
            SUITE,
            baseline="the same firewall with server.processes: 1, same pinning, same run",
            rows=prows,
            headline={f"processes2_ratio_c{r['concurrency']}": r["ratio_vs_1"]
                      for r in prows if "ratio_vs_1" in r},
            notes=[f"firewall pinned to CPUs {fw_cpus or 'all'}, client and Triton to "
                   f"{other_cpus or 'all'}; {os.cpu_count()} CPUs on this machine"],
        )
    if auth_only:
        with tempfile.TemporaryDirectory(prefix="bench-e2e-") as tmp, triton_echo() as triton:
            row = auth_row(triton, prompts, counts[1], Path(tmp))
        print(json.dumps(row), flush=True)
        return suite_result(
            SUITE,
            baseline="the same firewall without a keys file, requests alternating, same run",
            rows=[row],
            headline={"auth_added_p50_ms": row["added_p50_ms"]},
            notes=["client, Triton and the three firewalls share this machine's CPUs"],
        )
    rows: list[dict[str, Any]] = []
    headline: dict[str, Any] = {}
    notes: list[str] = []
    policies = []
    for name in ("rules_only", "full"):
        if hops is not None and name not in hops:
            continue
        why = _unbuildable(name)
        if why:
            notes.append(f"{name} policy not measured: {why}")
        else:
            policies.append(name)
    limiter_rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="bench-e2e-") as tmp, triton_echo() as triton:
        if "rules_only" in policies and hops is None:
            try:
                limiter_rows = ratelimit_rows(triton, prompts, Path(tmp), quick=quick)
            except RuntimeError as exc:
                notes.append(f"rate limiter rows not measured: {exc}")
        grid = [] if only_ratelimit else ["raw_proxy", *policies]
        if hops is not None and "raw_proxy" not in hops:
            grid.remove("raw_proxy")
        sources = {f"rules_only@{src.parent.name}": src for src in compare_src}
        grid.extend(sources)
        for policy in grid:
            if policy == "raw_proxy":
                hop = raw_proxy(triton, Path(tmp))
            elif policy in sources:
                hop = firewall(
                    triton, "rules_only", Path(tmp), name=policy.replace("@", "_"),
                    python_args=_from_source(sources[policy]),
                )
            else:
                hop = firewall(triton, policy, Path(tmp))
            with hop as (shield, stats):
                for c in concurrency:
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
        if hops is None:
            auth = auth_row(triton, prompts, counts[1], Path(tmp))
            print(json.dumps(auth), flush=True)
            headline["auth_added_p50_ms"] = auth["added_p50_ms"]
            rows.append(auth)
    for r in rows:
        # Headline: concurrency 1 for latency (no queueing), 64 for throughput.
        if r["concurrency"] == 1 and "auth" not in r:
            headline[f"added_p50_ms_{r['policy']}"] = r["added_p50_ms"]
            headline[f"added_p99_ms_{r['policy']}"] = r["added_p99_ms"]
        if r["concurrency"] == 64 and "auth" not in r:
            headline[f"throughput_ratio_{r['policy']}"] = r["throughput_ratio"]
            headline[f"fw_cpu_ms_per_req_{r['policy']}"] = r["fw_cpu_ms_per_req"]
    for r in limiter_rows:
        headline[f"ratelimit_{r['limiter']}_added_p50_ms"] = r["added_p50_ms"]
    return suite_result(
        SUITE,
        baseline="the same tritonclient load sent directly to Triton, in the same run; "
        "for the rate limiter rows, the same firewall without a limiter",
        rows=rows + limiter_rows,
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
    parser.add_argument("--auth-only", action="store_true", help="only the API-key auth row")
    parser.add_argument("--json", type=Path, help="write the result here")
    parser.add_argument(
        "--only-ratelimit",
        action="store_true",
        help="only the rate limiter rows (off/memory/redis)",
    )
    parser.add_argument(
        "--processes-only",
        action="store_true",
        help="only the server.processes rows: 2 processes against 1, rules only",
    )
    parser.add_argument("--fw-cpus", default="", help="taskset CPU list for the firewall")
    parser.add_argument(
        "--other-cpus", default="", help="CPU list (0,1,...) for the client and Triton"
    )
    parser.add_argument(
        "--hops",
        help="comma-separated hops to measure (raw_proxy, rules_only, full); "
        "skips the rate limiter and auth rows",
    )
    parser.add_argument(
        "--concurrency", help="comma-separated concurrency levels (default 1,8,64,256)"
    )
    parser.add_argument(
        "--compare-src",
        type=Path,
        action="append",
        default=[],
        help="also measure the rules-only firewall from these Python sources "
        "(rules_only@NAME, NAME the directory above; repeatable)",
    )
    args = parser.parse_args(argv)
    if args.concurrency and not set(args.concurrency.split(",")) <= {str(c) for c in CONCURRENCY}:
        parser.error(f"--concurrency: choose from {', '.join(map(str, CONCURRENCY))}")
    name = "e2e_auth.json" if args.auth_only else (
        "e2e_processes.json" if args.processes_only else "e2e.json")
    out = args.json or RESULTS_DIR / name
    res = run(
        quick=args.quick,
        out_dir=out.parent,
        auth_only=args.auth_only,
        only_ratelimit=args.only_ratelimit,
        processes_only=args.processes_only,
        fw_cpus=args.fw_cpus,
        other_cpus=args.other_cpus,
        hops=args.hops.split(",") if args.hops else None,
        concurrency=(
            tuple(int(c) for c in args.concurrency.split(",")) if args.concurrency else CONCURRENCY
        ),
        compare_src=[p.resolve() for p in args.compare_src],
    )
    return finish(res, out)


if __name__ == "__main__":
    sys.exit(main())
