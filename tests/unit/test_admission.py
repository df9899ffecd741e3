"""The admission interceptor on a real grpc.aio server: shedding, health bypass, pinning."""

from __future__ import annotations

import asyncio
from typing import Any

import grpc
import pytest

from infershield.config import Config, LimitsConfig
from infershield.limits.concurrency import ConcurrencyLimiter
from infershield.reload import PolicyHolder, pinned_policy
from infershield.server.admission import AdmissionInterceptor
from infershield.server.interceptor import ErrorInterceptor

SCAN = "/infershield.v1.Firewall/Scan"
LIVE = "/inference.GRPCInferenceService/ServerLive"


class FakePolicy:
    """Stands in for a Policy: the interceptor only reads ``config`` and closes it."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.config = Config(limits=LimitsConfig(deadline_s=5.0))
        self.closed = False

    def close(self) -> None:
        self.closed = True


async def start_server(interceptor: AdmissionInterceptor, gate: asyncio.Event) -> tuple[Any, int]:
    async def scan(request: bytes, context: Any) -> bytes:
        policy = pinned_policy()
        await gate.wait()
        # The policy seen at the end is the one pinned at the start, whatever was reloaded.
        assert pinned_policy() is policy
        return (policy.name if policy is not None else "none").encode()  # type: ignore[attr-defined]

    async def live(request: bytes, context: Any) -> bytes:
        return b"live"

    handlers = {
        "Scan": grpc.unary_unary_rpc_method_handler(scan),
    }
    triton = {"ServerLive": grpc.unary_unary_rpc_method_handler(live)}
    server = grpc.aio.server(interceptors=[ErrorInterceptor(), interceptor])
    server.add_generic_rpc_handlers(
        (
            grpc.method_handlers_generic_handler("infershield.v1.Firewall", handlers),
            grpc.method_handlers_generic_handler("inference.GRPCInferenceService", triton),
        )
    )
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    return server, port



async def _stream_server(abuse: Any, stream: Any, infer: Any = None) -> tuple[Any, int]:
    """A started server with the error and admission interceptors (abuse control ``abuse``)
    in front of a ``ModelStreamInfer`` handler and, if given, a raw ``ModelInfer`` one."""
    from tritonclient.grpc import service_pb2 as pb

    handlers: dict[str, Any] = {
        "ModelStreamInfer": grpc.stream_stream_rpc_method_handler(
            stream,
            request_deserializer=pb.ModelInferRequest.FromString,
            response_serializer=pb.ModelStreamInferResponse.SerializeToString),
    }
    if infer is not None:
        handlers["ModelInfer"] = grpc.unary_unary_rpc_method_handler(infer)
    server = grpc.aio.server(interceptors=[
        ErrorInterceptor(), AdmissionInterceptor(ConcurrencyLimiter(4, 4), abuse=abuse)])
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(
        "inference.GRPCInferenceService", handlers),))
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    return server, port


def _echo_stream(handled: list[str]) -> Any:
    """A ModelStreamInfer handler that answers each request with its id and notes the id."""
    from tritonclient.grpc import service_pb2 as pb

    async def stream(requests: Any, context: Any) -> Any:
        async for req in requests:
            handled.append(req.id)
            yield pb.ModelStreamInferResponse(
                infer_response=pb.ModelInferResponse(id=req.id, model_name="m"))

    return stream


def _open_stream(ch: grpc.aio.Channel, *, timeout: float) -> Any:
    """A ModelStreamInfer call on ``ch``, open for writing."""
    from tritonclient.grpc import service_pb2 as pb

    return ch.stream_stream(
        "/inference.GRPCInferenceService/ModelStreamInfer",
        request_serializer=pb.ModelInferRequest.SerializeToString,
        response_deserializer=pb.ModelStreamInferResponse.FromString)(timeout=timeout)



async def _refused_as_quarantined(call: Any, request_id: str) -> None:
    """Send one more request on the open stream ``call``: the stream must end
    PERMISSION_DENIED for a quarantined caller."""
    from tritonclient.grpc import service_pb2 as pb

    await call.write(pb.ModelInferRequest(id=request_id, model_name="m"))
    await call.done_writing()
    with pytest.raises(grpc.aio.AioRpcError) as ei:
        while (await call.read()) is not grpc.aio.EOF:
            pass
    assert ei.value.code() is grpc.StatusCode.PERMISSION_DENIED
    assert "quarantined after anomalous behaviour" in (ei.value.details() or "")


def test_sheds_past_queue_keeps_health_and_pins_policy() -> None:
    async def main() -> None:
        old = FakePolicy("old")
        holder = PolicyHolder(old, loader=Config)  # type: ignore[arg-type]
        limiter = ConcurrencyLimiter(max_concurrency=2, max_queue=2)
        gate = asyncio.Event()
        server, port = await start_server(AdmissionInterceptor(limiter, holder), gate)
        try:
            async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as ch:
                scan = ch.unary_unary(SCAN)
                live = ch.unary_unary(LIVE)
                calls = [asyncio.ensure_future(scan(b"", timeout=10)) for _ in range(10)]
                while limiter.active + limiter.queued < 4:
                    await asyncio.sleep(0.01)
                await asyncio.sleep(0.1)
                # Saturated: health still answers at once.
                assert await live(b"", timeout=2) == b"live"
                # A reload while requests run: they keep the old policy, which stays open.
                holder.swap(FakePolicy("new"))  # type: ignore[arg-type]
                assert not old.closed
                gate.set()
                results = await asyncio.gather(*calls, return_exceptions=True)
            ok = [r for r in results if isinstance(r, bytes)]
            shed = [r for r in results if isinstance(r, grpc.aio.AioRpcError)]
            assert len(ok) == 4 and len(shed) == 6
            # The two running pinned "old"; the two queued started after the swap.
            assert sorted(ok) == [b"new", b"new", b"old", b"old"]
            for e in shed:
                assert e.code() is grpc.StatusCode.RESOURCE_EXHAUSTED
                assert ("infershield-limit", "max_queue") in tuple(e.trailing_metadata() or ())
            assert old.closed  # closed once its last request finished
            assert (limiter.active, limiter.queued) == (0, 0)
        finally:
            await server.stop(0)

    asyncio.run(main())


def test_queued_call_past_its_deadline_leaves_the_queue() -> None:
    async def main() -> None:
        limiter = ConcurrencyLimiter(max_concurrency=1, max_queue=5)
        gate = asyncio.Event()
        server, port = await start_server(AdmissionInterceptor(limiter), gate)
        try:
            async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as ch:
                scan = ch.unary_unary(SCAN)
                first = asyncio.ensure_future(scan(b"", timeout=10))
                while limiter.active < 1:
                    await asyncio.sleep(0.01)
                with pytest.raises(grpc.aio.AioRpcError) as ei:
                    await scan(b"", timeout=0.3)
                assert ei.value.code() is grpc.StatusCode.DEADLINE_EXCEEDED
                gate.set()
                assert await first == b"none"
            assert limiter.queued == 0
        finally:
            await server.stop(0)

    asyncio.run(main())


@pytest.mark.parametrize(
    ("peer", "key"),
    [
        ("ipv4:10.0.0.1:5555", "ipv4:10.0.0.1"),
        ("ipv6:[::1]:5555", "ipv6:[::1]"),
        ("unix:/tmp/sock", "unix:/tmp/sock"),
    ],
)
def test_caller_key_drops_the_port(peer: str, key: str) -> None:
    from infershield.server.admission import caller_key

    assert caller_key(peer) == key


def test_server_wires_limiter_and_queue_metric() -> None:
    """FirewallServer puts the admission interceptor in front and exports the queue depth."""
    from infershield.config import ServerConfig
    from infershield.policy import Policy
    from infershield.server.app import FirewallServer
    from infershield.telemetry import metrics
    from infershield.telemetry.metrics import Metrics

    class NoBackend:
        kind = "none"

        async def start(self) -> None: ...

        async def close(self) -> None: ...

        def tokenizer_files(self) -> dict[str, Any]:
            return {}

    m = Metrics()
    old = metrics.install(m)

    async def main() -> None:
        cfg = Config(
            server=ServerConfig(listen="127.0.0.1:0"),
            limits=LimitsConfig(max_concurrency=1, max_queue=3, rate_per_s=5),
        )
        app = FirewallServer(cfg, policy=Policy.from_config(cfg), backend=NoBackend())  # type: ignore[arg-type]
        await app.start()
        try:
            # The deprecated limits.rate_per_s maps onto ratelimit.default.requests_per_s.
            assert app.abuse is not None
            bucket = app.abuse.limits.buckets("ipv4:10.0.0.1", "m").requests
            assert bucket is not None and (bucket.rate, bucket.burst) == (5, 5)
            await app.limiter.acquire()
            waiters = [asyncio.ensure_future(app.limiter.acquire()) for _ in range(2)]
            await asyncio.sleep(0)
            assert m.registry.get_sample_value("infershield_queue_depth") == 2
            for w in waiters:
                w.cancel()
            await asyncio.gather(*waiters, return_exceptions=True)
            assert m.registry.get_sample_value("infershield_queue_depth") == 0
            assert app.holder is not None and app.holder.generation == 1
        finally:
            await app.stop(0)

    try:
        asyncio.run(main())
    finally:
        metrics.install(old)


def test_repeated_blocks_quarantine_the_caller() -> None:
    """Automated incident response: after N blocked requests the caller is shut out."""
    from infershield.errors import Blocked
    from infershield.limits.quarantine import Quarantine

    async def main() -> None:
        limiter = ConcurrencyLimiter(max_concurrency=8, max_queue=8)
        quarantine = Quarantine(2, window_s=60.0, duration_s=60.0)
        interceptor = AdmissionInterceptor(limiter, None, quarantine)

        async def infer(request: bytes, context: Any) -> bytes:
            if request == b"attack":
                raise Blocked(check="signatures", reason="injection.override", stage="input")
            return b"ok"

        server = grpc.aio.server(interceptors=[ErrorInterceptor(), interceptor])
        server.add_generic_rpc_handlers(
            (
                grpc.method_handlers_generic_handler(
                    "infershield.v1.Firewall",
                    {"Infer": grpc.unary_unary_rpc_method_handler(infer)},
                ),
            )
        )
        port = server.add_insecure_port("127.0.0.1:0")
        await server.start()
        try:
            async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as ch:
                call = ch.unary_unary("/infershield.v1.Firewall/Infer")
                assert await call(b"benign", timeout=5) == b"ok"
                for _ in range(2):
                    with pytest.raises(grpc.aio.AioRpcError) as ei:
                        await call(b"attack", timeout=5)
                    assert ei.value.code() is grpc.StatusCode.PERMISSION_DENIED
                    assert "blocked on input" in (ei.value.details() or "")
                # Now even a benign request from this caller is refused, and says why.
                with pytest.raises(grpc.aio.AioRpcError) as ei:
                    await call(b"benign", timeout=5)
                assert ei.value.code() is grpc.StatusCode.PERMISSION_DENIED
                assert "quarantined" in (ei.value.details() or "")
                trailers = dict(ei.value.trailing_metadata() or ())
                assert "infershield-quarantined" in trailers
        finally:
            await server.stop(0)

    asyncio.run(main())


def test_a_block_inside_a_stream_counts_for_the_anomaly_detector_like_any_other() -> None:
    """Abuse control's detector sees each call once, as it ends. A request blocked inside
    ModelStreamInfer is told in band (the stream goes on), so nothing is raised through the
    call: the stream must still count as a blocked call with the block's score, as a blocked
    unary call does, and an in-stream invalid request as an error."""
    from tritonclient.grpc import service_pb2 as pb

    from infershield.abuse.anomaly import AnomalyDetector, AnomalyEvent
    from infershield.abuse.control import AbuseControl
    from infershield.config import AnomalyConfig
    from infershield.errors import Blocked, InvalidRequest
    from infershield.firewall import StreamError

    seen: list[dict[str, Any]] = []

    class Recording(AnomalyDetector):
        def observe(self, caller: str, **kw: Any) -> list[AnomalyEvent]:
            seen.append(kw)
            return super().observe(caller, **kw)

    abuse = AbuseControl.from_config(Config(anomaly=AnomalyConfig(enabled=True)))
    abuse.detector = Recording(AnomalyConfig(enabled=True))

    def block() -> Blocked:
        return Blocked(check="signatures", reason="r", categories=("injection",), score=0.875)

    async def stream(requests: Any, context: Any) -> Any:
        async for req in requests:
            if req.id.startswith("bad"):
                yield StreamError(req.id, "m", "", block())
            elif req.id == "invalid":
                yield StreamError(req.id, "m", "", InvalidRequest("no such tensor"))
            else:
                yield pb.ModelStreamInferResponse(
                    infer_response=pb.ModelInferResponse(id=req.id, model_name="m"))

    async def infer(request: bytes, context: Any) -> bytes:
        raise block()

    async def main() -> None:
        server, port = await _stream_server(abuse, stream, infer)
        try:
            async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as ch:
                with pytest.raises(grpc.aio.AioRpcError):
                    await ch.unary_unary("/inference.GRPCInferenceService/ModelInfer")(
                        b"", timeout=5)
                call = ch.stream_stream(
                    "/inference.GRPCInferenceService/ModelStreamInfer",
                    request_serializer=pb.ModelInferRequest.SerializeToString,
                    response_deserializer=pb.ModelStreamInferResponse.FromString)
                for ids in (("ok1", "bad", "ok2", "bad2"), ("ok",), ("invalid", "ok")):
                    reqs = [pb.ModelInferRequest(id=i, model_name="m") for i in ids]
                    got = [r async for r in call(iter(reqs), timeout=5)]
                    assert [r.infer_response.id for r in got] == list(ids)
        finally:
            await server.stop(0)
            await abuse.close()

    asyncio.run(main())
    outcomes = [(o["blocked"], o["error"], o["score"]) for o in seen]
    assert outcomes == [
        (True, False, 0.875),  # the blocked unary call
        (True, False, 0.875),  # the stream with blocks in it: a blocked call too
        (False, False, None),  # a clean stream
        (False, True, None),  # a stream with an invalid request: an error, as unary
    ]


def test_an_open_stream_ends_once_abuse_control_quarantines_its_caller() -> None:
    """Abuse control's quarantine (set by the anomaly responder, possibly on another replica)
    is read as a stream opens; a stream already open must read it again for each request it
    takes, and end PERMISSION_DENIED before the request reaches the handler."""
    from tritonclient.grpc import service_pb2 as pb

    from infershield.abuse.control import AbuseControl

    abuse = AbuseControl.from_config(Config())
    handled: list[str] = []

    stream = _echo_stream(handled)

    async def main() -> None:
        server, port = await _stream_server(abuse, stream)
        try:
            async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as ch:
                call = _open_stream(ch, timeout=5)
                await call.write(pb.ModelInferRequest(id="before", model_name="m"))
                assert (await call.read()).infer_response.id == "before"
                await abuse.limits.quarantine("ipv4:127.0.0.1", 60.0)
                await _refused_as_quarantined(call, "after")
        finally:
            await server.stop(0)
            await abuse.close()

    asyncio.run(main())
    assert handled == ["before"]


def test_an_open_stream_reads_a_quarantine_set_by_another_replica_through_redis(
        redis_server: Any) -> None:
    """Two replicas share a real Redis: a quarantine that replica B sets ends the stream the
    caller holds open on replica A, and A asks Redis about it at most once a second, not
    once per message."""
    import dataclasses
    import time

    from tritonclient.grpc import service_pb2 as pb

    from infershield.abuse.control import AbuseControl
    from infershield.abuse.limiter import REMOTE_RECHECK_S
    from infershield.config import RateLimitConfig

    cfg = Config(ratelimit=RateLimitConfig(backend="redis", redis_url=redis_server.url,
                                           redis_timeout_s=1.0))
    replica_a = AbuseControl.from_config(cfg, replica="a")
    replica_b = AbuseControl.from_config(dataclasses.replace(cfg), replica="b")
    asked: list[float] = []
    store = replica_a.limits.store
    real = store.quarantined_for

    async def counted(caller: str) -> float:
        asked.append(time.monotonic())
        left: float = await real(caller)
        return left

    store.quarantined_for = counted  # type: ignore[method-assign]
    handled: list[str] = []

    stream = _echo_stream(handled)

    async def main() -> float:
        server, port = await _stream_server(replica_a, stream)
        try:
            async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as ch:
                call = _open_stream(ch, timeout=20)
                opened = time.monotonic()
                for i in range(40):  # a busy stream: 40 messages, Redis asked a few times
                    await call.write(pb.ModelInferRequest(id=f"m{i}", model_name="m"))
                    assert (await call.read()).infer_response.id == f"m{i}"
                busy_s = time.monotonic() - opened
                n_busy = len(asked)
                await replica_b.limits.quarantine("ipv4:127.0.0.1", 60.0)
                await asyncio.sleep(REMOTE_RECHECK_S + 0.2)
                await _refused_as_quarantined(call, "after")
                # Admission asks once as the stream opens; the watch at most once a second.
                assert n_busy <= 1 + int(busy_s / REMOTE_RECHECK_S) + 1, (n_busy, busy_s)
                return busy_s
        finally:
            await server.stop(0)
            await replica_a.close()
            await replica_b.close()

    asyncio.run(main())
    assert "after" not in handled and len(handled) == 40
