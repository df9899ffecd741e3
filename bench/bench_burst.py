"""A burst of concurrent ModelInfer calls: straight to Triton, then through InferShield.

One ``grpc.aio`` client (one channel, as ``tritonclient.grpc.aio`` uses) fires ``--burst``
calls at once, each with a 30 s timeout, at a real Triton (pytriton ``echo``) and then at
``infershield serve`` (rules-only policy, default limits) in front of it, and counts the
status of every call. Three firewall runs:

* ``fixed``: the server as shipped;
* ``fixed + SIGHUP``: the same, with the policy file changed and SIGHUP sent once a third of
  the answers are in (a hot reload in the middle of the burst);
* ``core default backlog``: the server with gRPC core's own backlog limits (1,000 soft,
  3,000 hard), i.e. before issue 18's fix: shows where CANCELLED came from.

A caller may only ever see OK, RESOURCE_EXHAUSTED (shed, with a retry-after) or UNAVAILABLE.
A benchmark measures; it never asserts.

Run alone: ``python -m bench.bench_burst [--quick] [--json OUT]``.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import os
import signal
import struct
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml

from bench.bench_e2e import firewall, triton_echo
from bench.common import RESULTS_DIR, finish, suite_result

SUITE = "burst"
BURST = 3000
QUICK_BURST = 1000
#: Runs the CLI with gRPC core's default backlog (the behaviour before the fix).
_CORE_DEFAULT = (
    "-c",
    "import sys, infershield.server.app as a; a.BACKLOG_OPTIONS = (); "
    "from infershield.cli import main; sys.exit(main(sys.argv[1:]))",
)
CODES = ("OK", "RESOURCE_EXHAUSTED", "UNAVAILABLE", "CANCELLED", "INTERNAL", "UNKNOWN", "other")


async def burst(
    url: str, n: int, *, midway: Callable[[], None] | None = None
) -> tuple[collections.Counter[str], float, int]:
    """``n`` concurrent calls; (status counts, seconds, shed calls without a retry-after)."""
    import grpc
    from tritonclient.grpc import service_pb2 as pb
    from tritonclient.grpc import service_pb2_grpc as pb_grpc

    done = 0
    no_retry_after = 0
    text = b"Summarise the meeting notes, please."
    request = pb.ModelInferRequest(model_name="echo")
    request.inputs.add(name="TEXT", datatype="BYTES", shape=[1, 1])
    request.raw_input_contents.append(struct.pack("<I", len(text)) + text)
    async with grpc.aio.insecure_channel(url) as ch:
        stub = pb_grpc.GRPCInferenceServiceStub(ch)  # type: ignore[no-untyped-call]

        async def one() -> str:
            nonlocal done, no_retry_after
            try:
                await stub.ModelInfer(request, timeout=30)
                code = "OK"
            except grpc.aio.AioRpcError as exc:
                code = exc.code().name if exc.code().name in CODES else "other"
                trailers = dict(exc.trailing_metadata() or ())  # type: ignore[arg-type]
                if code == "RESOURCE_EXHAUSTED" and "retry-after" not in trailers:
                    no_retry_after += 1
            done += 1
            if midway is not None and done == n // 3:
                midway()
            return code

        t0 = time.perf_counter()
        codes = await asyncio.gather(*(one() for _ in range(n)))
        wall = time.perf_counter() - t0
    return collections.Counter(codes), wall, no_retry_after


def _row(case: str, counts: collections.Counter[str], wall: float, n: int) -> dict[str, Any]:
    row: dict[str, Any] = {"case": case, "calls": n}
    row.update({c: counts.get(c, 0) for c in CODES})
    row["seconds"] = round(wall, 2)
    return row


def run(*, quick: bool = False, out_dir: Path | None = None, **_: Any) -> dict[str, Any]:
    """Run the suite; returns the shape ``bench.run`` expects."""
    del out_dir
    try:
        import pytriton  # noqa: F401
    except ImportError:
        return suite_result(SUITE, status="skipped", reason="pytriton is not installed")
    n = QUICK_BURST if quick else BURST
    rows: list[dict[str, Any]] = []
    notes: list[str] = []
    headline: dict[str, Any] = {}
    with triton_echo() as upstream, tempfile.TemporaryDirectory(prefix="bench-burst-") as wd:
        counts, wall, _ = asyncio.run(burst(upstream, n))
        rows.append(_row("direct to Triton", counts, wall, n))
        for case, args in (
            ("firewall", None),
            ("firewall + SIGHUP midway", None),
            ("firewall, gRPC core default backlog", _CORE_DEFAULT),
        ):
            kwargs: dict[str, Any] = {"limits": {}}
            if args is not None:
                kwargs["python_args"] = args
            with firewall(upstream, "rules_only", Path(wd), **kwargs) as (url, stats):
                midway = None
                if "SIGHUP" in case:
                    cfg = Path(wd) / "rules_only.yaml"

                    def midway(cfg: Path = cfg, pid: int = stats.pid) -> None:
                        data = yaml.safe_load(cfg.read_text())
                        data["policy"]["fail_fast"] = not data["policy"].get("fail_fast", False)
                        cfg.write_text(yaml.safe_dump(data))
                        os.kill(pid, signal.SIGHUP)

                counts, wall, no_retry = asyncio.run(burst(url, n, midway=midway))
            rows.append(_row(case, counts, wall, n))
            bad = sum(counts.get(c, 0) for c in ("CANCELLED", "INTERNAL", "UNKNOWN", "other"))
            if args is None:
                key = "sighup" if midway is not None else "plain"
                headline[f"unexpected_statuses_{key}"] = bad
                headline[f"shed_without_retry_after_{key}"] = no_retry
            else:
                headline["unexpected_statuses_core_default_backlog"] = bad
    notes.append(
        "target: 0 CANCELLED and 0 INTERNAL/UNKNOWN through the firewall, reload included"
    )
    return suite_result(
        SUITE,
        baseline="the same burst straight to Triton",
        rows=rows,
        headline=headline,
        notes=notes,
        raw={"burst": n},
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--quick", action="store_true", help=f"{QUICK_BURST} calls, not {BURST}")
    parser.add_argument("--json", type=Path, help="write the result here")
    args = parser.parse_args(argv)
    out = args.json or RESULTS_DIR / "burst.json"
    return finish(run(quick=args.quick), out)


if __name__ == "__main__":
    sys.exit(main())
