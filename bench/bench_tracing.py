"""Cost of tracing on the hot path: throughput with tracing off vs the default sampling.

Two paths, each measured in the same run with the modes interleaved round by round (so
drift and noisy neighbours hit every mode alike), the median round per mode reported:

- ``pipeline``: a shipped policy's input and output pipelines inside an RPC scope (server
  span + request metrics), in-process, one thread: the instrumentation's own cost, with no
  transport to hide it.
- ``server``: unary ``Scan`` RPCs against a real firewall (``infershield.server``, local
  backend) on a loopback port, driven by a client in a separate process.

Each path runs under the ``rules_only`` policy (the fastest, so tracing's worst case in
relative terms) and the ``default`` one (which adds the ONNX classifier).

Modes: ``off`` (no tracing; metrics on, as in production), ``default`` (tracing at
``TelemetryConfig().sample_ratio``, parent-based, exporting over OTLP/gRPC to a receiver in
another process), and ``full`` (ratio 1.0, for reference). The budget is ``default`` costing
under 5% of ``off`` throughput.

Each window records the wall rate and the firewall process's CPU time per request (all its
threads, the span exporter's included; the load client and the receiver are other
processes). The cost is taken from CPU per request, paired within a round: on a shared,
busy machine the wall rate swings by tens of percent between windows, CPU per request far
less, and a CPU-bound server's throughput is the inverse of its CPU per request.

Run alone: ``python -m bench.bench_tracing [--quick] [--json OUT] [--default-ratio R]``.
"""

from __future__ import annotations

import argparse
import logging
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from bench.common import (
    RESULTS_DIR,
    finish,
    make_prompts,
    python_executable,
    suite_result,
)

SUITE = "tracing"
#: ``--default-ratio`` overrides the config default (to explore other ratios); empty = config.
_DEFAULT_RATIO: list[float] = []
MODES = ("off", "default", "full")
#: Shipped policies measured: rules_only is the fastest path (tracing's worst case in
#: relative terms); default adds the ONNX classifier.
POLICIES = ("rules_only", "default")

_RECEIVER = """
import sys
from infershield.telemetry.testing import OtlpReceiver
rx = OtlpReceiver()
print(rx.port, flush=True)
sys.stdin.read()  # until the parent closes our stdin
rx.close()
"""


@contextmanager
def otlp_receiver() -> Iterator[str]:
    """An OTLP/gRPC trace receiver in a child process (its CPU is not the measured one's)."""
    proc = subprocess.Popen(
        [python_executable(), "-c", _RECEIVER],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        port = int(proc.stdout.readline())
        yield f"http://127.0.0.1:{port}"
    finally:
        if proc.stdin is not None:
            proc.stdin.close()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()


def _set_mode(mode: str, endpoint: str) -> None:
    from infershield.config import TelemetryConfig
    from infershield.telemetry import setup_tracing, shutdown_tracing

    shutdown_tracing()
    if mode == "off":
        return
    ratio_ = (
        (_DEFAULT_RATIO[0] if _DEFAULT_RATIO else TelemetryConfig().sample_ratio)
        if (mode == "default")
        else 1.0
    )
    cfg = TelemetryConfig(traces_exporter="otlp", otlp_endpoint=endpoint, sample_ratio=ratio_)
    setup_tracing(cfg, env={}, set_global=False)


#: One measurement window: (requests per wall second, CPU microseconds per request).
Sample = tuple[float, float]


def _throughput(fn: Callable[[], None], *, n: int, max_seconds: float) -> Sample:
    """Wall rate and CPU cost of ``fn`` over up to ``n`` calls or ``max_seconds``.

    CPU is this process's (all threads: the span exporter's included), so other tenants of
    a shared machine move the wall rate but barely the CPU cost per request.
    """
    for _ in range(min(20, n)):
        fn()
    done = 0
    c0, t0 = time.process_time(), time.perf_counter()
    deadline = t0 + max_seconds
    while done < n:
        fn()
        done += 1
        if time.perf_counter() > deadline:
            break
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    return done / wall, cpu / done * 1e6


def _rounds(run_mode: Callable[[str], Sample], rounds: int) -> dict[str, list[Sample]]:
    per_mode: dict[str, list[Sample]] = {m: [] for m in MODES}
    for r in range(rounds):
        # Rotate the order each round so no mode always runs first (cold) or last.
        order = MODES[r % len(MODES) :] + MODES[: r % len(MODES)]
        for mode in order:
            per_mode[mode].append(run_mode(mode))
    return per_mode


def bench_pipeline(
    endpoint: str, policy_name: str, *, quick: bool, rounds: int
) -> tuple[dict[str, Any] | None, str]:
    """The in-process pipeline path under a shipped policy; returns (row, note)."""
    from infershield.checks.base import CheckContext
    from infershield.config import default_policy_path, load_config
    from infershield.policy import Policy
    from infershield.telemetry import Metrics, metrics, rpc_scope

    try:
        policy = Policy.from_config(load_config(default_policy_path(policy_name), env={}))
    except Exception as exc:
        return None, f"pipeline path skipped: policy {policy_name} does not build here ({exc})"
    prompts = make_prompts(1024, 64)
    meta = [("x-request-id", "bench")]
    i = [0]

    def one() -> None:
        text = prompts[i[0] % len(prompts)]
        i[0] += 1
        with rpc_scope("/infershield.v1.Firewall/Scan", meta):
            policy.input.run(CheckContext(text=text, stage="input", model="bench"))
            policy.output.run(CheckContext(text=text, stage="output", model="bench"))

    old = metrics.install(Metrics())
    try:

        def run_mode(mode: str) -> Sample:
            _set_mode(mode, endpoint)
            return _throughput(one, n=300 if quick else 5000, max_seconds=1.0 if quick else 4.0)

        raw = _rounds(run_mode, rounds)
    finally:
        _set_mode("off", endpoint)
        metrics.install(old)
        policy.close()
    checks = len(policy.input.steps) + len(policy.output.steps)
    return _row(f"pipeline, {policy_name} policy (in-process, 1 KB prompts)", raw, checks), ""


_CLIENT = """
import sys, threading, time
import grpc
from infershield.v1 import firewall_pb2 as fpb, firewall_pb2_grpc as fpb_grpc
target, conc, corpus = sys.argv[1], int(sys.argv[2]), sys.argv[3]
texts = open(corpus, encoding="utf-8").read().split("\\x1e")
ch = grpc.insecure_channel(target)
grpc.channel_ready_future(ch).result(timeout=120)
stub = fpb_grpc.FirewallStub(ch)
print("ready", flush=True)
for line in sys.stdin:  # one measurement window per line: its length in seconds
    stop = time.perf_counter() + float(line)
    counts = [0] * conc
    def worker(k):
        i = k
        while time.perf_counter() < stop:
            stub.Scan(fpb.ScanRequest(texts=[texts[i % len(texts)]]), timeout=30)
            counts[k] += 1
            i += conc
    threads = [threading.Thread(target=worker, args=(k,)) for k in range(conc)]
    t0 = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    print(sum(counts), time.perf_counter() - t0, flush=True)
"""


def bench_server(
    endpoint: str, policy_name: str, *, quick: bool, rounds: int
) -> tuple[dict[str, Any] | None, str]:
    """Scan RPCs against a real firewall (a shipped policy, local backend) on loopback.

    The firewall runs in this process (so the tracing mode can be switched between rounds);
    the load comes from a client process with ``concurrency`` blocking callers.
    """
    import tempfile

    try:
        from infershield.config import default_policy_path, load_config
        from infershield.server.app import ServerThread
        from infershield.telemetry import Metrics, metrics
    except ImportError as exc:
        return None, f"server path skipped: the server is not importable ({exc})"
    try:
        cfg = load_config(
            default_policy_path(policy_name), env={}, overrides={"server.listen": "127.0.0.1:0"}
        )
        server = ServerThread(cfg)
        port = server.start()
    except Exception as exc:
        return None, f"server path skipped: the firewall did not start ({exc})"
    old = metrics.install(Metrics())
    concurrency = 4
    with tempfile.NamedTemporaryFile("w", suffix=".txt", encoding="utf-8", delete=False) as f:
        f.write("\x1e".join(make_prompts(1024, 64)))
        corpus = f.name
    client = subprocess.Popen(
        [python_executable(), "-c", _CLIENT, f"127.0.0.1:{port}", str(concurrency), corpus],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert client.stdin is not None and client.stdout is not None
    cin, cout = client.stdin, client.stdout
    try:
        if cout.readline().strip() != "ready":
            return None, "server path skipped: the load client did not connect"
        window = 1.0 if quick else 4.0

        def run_mode(mode: str) -> Sample:
            _set_mode(mode, endpoint)
            c0 = time.process_time()  # the server's CPU: it runs in this process
            cin.write(f"{window}\n")
            cin.flush()
            count, wall = (float(x) for x in cout.readline().split())
            return count / wall, (time.process_time() - c0) / max(count, 1.0) * 1e6

        run_mode("off")  # warm-up: connections, schema caches, first-call costs
        raw = _rounds(run_mode, rounds)
    finally:
        cin.close()
        client.wait(timeout=30)
        Path(corpus).unlink(missing_ok=True)
        _set_mode("off", endpoint)
        metrics.install(old)
        server.stop(grace=0.5)
    n_checks = len(cfg.policy.input)
    return _row(
        f"server, {policy_name} policy (Scan RPC, {concurrency} callers, 1 KB prompts)",
        raw,
        n_checks,
    ), ""


def _row(path: str, raw: dict[str, list[Sample]], spans: int) -> dict[str, Any]:
    """Medians per mode; the cost is the median over rounds of the paired CPU ratio.

    Modes run back to back within a round, so pairing them cancels most of the drift that
    other tenants of the machine cause between rounds.
    """

    def med(mode: str, k: int) -> float:
        return statistics.median(x[k] for x in raw[mode])

    def cost(mode: str, k: int) -> float:
        # k=1 (CPU per request): throughput ratio = off CPU / mode CPU; k=0: mode / off rate.
        pairs = [
            (o[1] / m[1]) if k == 1 else (m[0] / o[0])
            for o, m in zip(raw["off"], raw[mode], strict=True)
        ]
        return round(100.0 * (1.0 - statistics.median(pairs)), 2)

    return {
        "path": path,
        "spans/request (sampled)": spans + 1,
        "off req/s": round(med("off", 0), 1),
        "default req/s": round(med("default", 0), 1),
        "full req/s": round(med("full", 0), 1),
        "off CPU us/req": round(med("off", 1), 1),
        "default CPU us/req": round(med("default", 1), 1),
        "full CPU us/req": round(med("full", 1), 1),
        "default cost % (CPU)": cost("default", 1),
        "default cost % (wall)": cost("default", 0),
        "full cost % (CPU)": cost("full", 1),
        "rounds": len(raw["off"]),
        "raw": {m: [[round(a, 1), round(b, 1)] for a, b in v] for m, v in raw.items()},
    }


def run(
    *,
    quick: bool = False,
    out_dir: Path | None = None,
    policies: tuple[str, ...] = POLICIES,
    rounds: int | None = None,
    **_: Any,
) -> dict[str, Any]:
    """Measure both paths; returns a suite result (``headline``: the default-sampling cost)."""
    # At ratio 1.0 under full load the SDK drops spans (bounded queue) and says so per span.
    logging.getLogger("opentelemetry").setLevel(logging.ERROR)
    try:
        from infershield.config import TelemetryConfig
    except ImportError as exc:
        return suite_result(SUITE, status="skipped", reason=f"infershield not importable: {exc}")
    default_ratio = _DEFAULT_RATIO[0] if _DEFAULT_RATIO else TelemetryConfig().sample_ratio
    rows: list[dict[str, Any]] = []
    source = "--default-ratio" if _DEFAULT_RATIO else "TelemetryConfig default"
    notes = [f"default sampling: parent-based ratio {default_ratio} ({source})"]
    with otlp_receiver() as endpoint:
        n_rounds = rounds or (2 if quick else 5)
        for policy_name in policies:
            for bench in (bench_pipeline, bench_server):
                row, note = bench(endpoint, policy_name, quick=quick, rounds=n_rounds)
                if row:
                    rows.append(row)
                if note:
                    notes.append(note)
    headline = {}
    for r in rows:
        path = "server" if r["path"].startswith("server") else "pipeline"
        policy_name = "rules_only" if "rules_only" in r["path"] else "default"
        headline[f"tracing_default_cost_pct_{path}_{policy_name}"] = r["default cost % (CPU)"]
    table = [{k: v for k, v in r.items() if k != "raw"} for r in rows]
    return suite_result(
        SUITE,
        status="ok" if rows else "skipped",
        reason="" if rows else "; ".join(notes[1:]),
        baseline="tracing off (metrics on), interleaved with the traced modes in the same run",
        rows=table,
        headline=headline,
        notes=notes,
        raw={"rows": rows},
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="tiny counts (a smoke run)")
    parser.add_argument("--json", type=Path, help="write the result here")
    parser.add_argument(
        "--policies",
        nargs="+",
        choices=POLICIES,
        metavar="P",
        help=f"shipped policies to measure (default: {' '.join(POLICIES)})",
    )
    parser.add_argument("--rounds", type=int, metavar="N", help="rounds per path (default 5)")
    parser.add_argument(
        "--default-ratio",
        type=float,
        metavar="R",
        help="measure this ratio as 'default' instead of the config default",
    )
    args = parser.parse_args(argv)
    if args.default_ratio is not None:
        _DEFAULT_RATIO[:] = [args.default_ratio]
    out = args.json or RESULTS_DIR / "tracing.json"
    res = run(
        quick=args.quick,
        out_dir=out.parent,
        policies=tuple(args.policies or POLICIES),
        rounds=args.rounds,
    )
    return finish(res, out)


if __name__ == "__main__":
    sys.exit(main())
