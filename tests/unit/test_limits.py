"""Deadlines, size/token limits, load shedding, rate limiting and the circuit breaker."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest

from infershield.checks.base import Check, CheckContext
from infershield.config import LimitsConfig
from infershield.errors import BackendUnavailable, DeadlineExceeded, InvalidRequest, LimitExceeded
from infershield.limits.breaker import BreakerState, CircuitBreaker
from infershield.limits.budgets import OutputTokenMeter, check_inputs, check_request_bytes
from infershield.limits.concurrency import ConcurrencyLimiter
from infershield.limits.deadline import CheckBudget, Deadline
from infershield.limits.quarantine import Quarantine
from infershield.pipeline import Pipeline, Step
from infershield.tokens import ByteTokenCounter, HFTokenCounter, TokenCounters, find_tokenizer
from infershield.verdict import Verdict


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


# --------------------------------------------------------------------------- deadlines


@pytest.mark.parametrize(
    ("policy_s", "client_s", "expected"),
    [(30.0, None, 30.0), (30.0, 2.0, 2.0), (1.0, 5.0, 1.0), (30.0, float("nan"), 30.0)],
)
def test_effective_deadline_is_the_smaller(
    policy_s: float, client_s: float | None, expected: float
) -> None:
    clock = FakeClock()
    d = Deadline.effective(policy_s, client_s, clock=clock)
    assert d.remaining() == pytest.approx(expected)


def test_stage_budget_never_outlives_the_request() -> None:
    clock = FakeClock()
    req = Deadline.after(1.0, clock=clock)
    assert req.budget("check:signatures", 0.2).remaining() == pytest.approx(0.2)
    assert req.budget("upstream", 30.0).remaining() == pytest.approx(1.0)
    clock.now += 2
    with pytest.raises(DeadlineExceeded) as ei:
        req.budget("upstream", 30.0).check()
    assert ei.value.stage == "upstream"


def test_deadline_run_cancels_overrunning_work() -> None:
    cancelled = asyncio.Event()

    async def slow() -> None:
        try:
            await asyncio.sleep(10)
        except asyncio.CancelledError:
            cancelled.set()
            raise

    async def main() -> None:
        with pytest.raises(DeadlineExceeded) as ei:
            await Deadline.after(0.05).run(slow(), stage="upstream")
        assert ei.value.stage == "upstream"
        assert cancelled.is_set()
        assert await Deadline.after(1).run(asyncio.sleep(0, "done")) == "done"

    asyncio.run(main())


def test_nan_deadline_is_refused() -> None:
    with pytest.raises(ValueError):
        Deadline.after(float("nan"))


# --------------------------------------------------------------------------- sequence limits

LIMITS = LimitsConfig(
    max_request_bytes=1000, max_text_bytes=100, max_batch_elements=3, max_input_tokens=10
)


@pytest.mark.parametrize(
    ("texts", "limit"),
    [
        (["a"] * 4, "max_batch_elements"),
        (["ok", "x" * 101], "max_text_bytes"),
        (["ä" * 51], "max_text_bytes"),  # 102 UTF-8 bytes in 51 characters
        (["one two three four five six seven eight nine ten eleven"], "max_input_tokens"),
    ],
)
def test_input_limits_name_the_limit(
    texts: list[str], limit: str, tokenizer: HFTokenCounter
) -> None:
    with pytest.raises(LimitExceeded) as ei:
        check_inputs(texts, LIMITS, tokenizer)
    assert ei.value.limit == limit
    assert limit in ei.value.message
    assert ("infershield-limit", limit) in ei.value.trailing_metadata()


def test_inputs_within_limits_return_token_counts(tokenizer: HFTokenCounter) -> None:
    assert check_inputs(["hello world", "one two three"], LIMITS, tokenizer) == [2, 3]
    assert check_inputs([b"hi there"], LIMITS, None) == [0]
    # Lone surrogates (from untrusted JSON) are counted, not a crash.
    assert check_inputs(["a\ud800b"], LIMITS, tokenizer)[0] >= 1


def test_request_bytes() -> None:
    check_request_bytes(1000, LIMITS)
    with pytest.raises(LimitExceeded) as ei:
        check_request_bytes(1001, LIMITS)
    assert ei.value.limit == "max_request_bytes"


def test_output_tokens_are_counted_across_stream_chunks(tokenizer: HFTokenCounter) -> None:
    meter = OutputTokenMeter(5, tokenizer)
    assert meter.add("one two") == 2
    assert meter.add("three four") == 4
    with pytest.raises(LimitExceeded) as ei:
        meter.add("five six")
    assert ei.value.limit == "max_output_tokens"


# --------------------------------------------------------------------------- tokens


@pytest.fixture(scope="module")
def tokenizer_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A real word-level ``tokenizer.json`` built offline with ``tokenizers``."""
    from tokenizers import Tokenizer, models, pre_tokenizers

    vocab = {w: i for i, w in enumerate(["[UNK]", "hello", "world", "one", "two", "three"])}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.enable_truncation(4)  # must be disabled by the counter, or it would hide length
    d = tmp_path_factory.mktemp("model") / "1"
    d.mkdir()
    tok.save(str(d / "tokenizer.json"))
    return d / "tokenizer.json"


@pytest.fixture(scope="module")
def tokenizer(tokenizer_path: Path) -> HFTokenCounter:
    return HFTokenCounter(tokenizer_path)


def test_hf_counter_ignores_truncation_and_batches(tokenizer: HFTokenCounter) -> None:
    text = " ".join(["hello"] * 50)
    assert tokenizer.count(text) == 50
    assert tokenizer.count_batch([text, "one two", ""]) == [50, 2, 0]


def test_byte_fallback_never_undercounts() -> None:
    c = ByteTokenCounter()
    assert c.count("abc") == 3
    assert c.count("日本") == 6
    assert ByteTokenCounter(4).count("abcde") == 2
    with pytest.raises(ValueError):
        ByteTokenCounter(0)


def test_counters_per_model(tokenizer_path: Path, tmp_path: Path) -> None:
    model_dir = tokenizer_path.parent.parent
    assert find_tokenizer(model_dir) == tokenizer_path
    assert find_tokenizer(tmp_path) is None
    counters = TokenCounters()
    assert isinstance(counters.register_dir("m", model_dir), HFTokenCounter)
    assert counters.register_dir("plain", tmp_path) is counters.fallback
    assert counters.for_model("m").count("hello world") == 2
    assert counters.for_model("unknown").count("hello world") == 11
    assert counters.get("unknown") is None
    assert counters.get("m") is counters.for_model("m")


def test_bad_tokenizer_file_is_a_config_error(tmp_path: Path) -> None:
    from infershield.errors import ConfigError

    bad = tmp_path / "tokenizer.json"
    bad.write_text("{not json")
    with pytest.raises(ConfigError, match="cannot load tokenizer"):
        HFTokenCounter(bad)


# --------------------------------------------------------------------------- load shedding


def test_limiter_runs_n_queues_m_and_sheds_the_rest() -> None:
    async def main() -> None:
        lim = ConcurrencyLimiter(2, 3)
        gate = asyncio.Event()
        running = 0
        peak = 0

        async def request() -> str:
            nonlocal running, peak
            async with lim.slot():
                running += 1
                peak = max(peak, running)
                await gate.wait()
                running -= 1
                return "ok"

        tasks = [asyncio.create_task(request()) for _ in range(10)]
        await asyncio.sleep(0.01)
        assert (lim.active, lim.queued) == (2, 3)
        shed = [t for t in tasks if t.done()]
        assert len(shed) == 5  # rejected at once, without waiting for a slot
        for t in shed:
            exc = t.exception()
            assert isinstance(exc, LimitExceeded) and exc.limit == "max_queue"
        gate.set()
        results = [await t for t in tasks if t not in shed]
        assert results == ["ok"] * 5
        assert peak == 2
        assert (lim.active, lim.queued, lim.shed) == (0, 0, 5)

    asyncio.run(main())


def test_queued_request_times_out_or_cancels_without_leaking_a_slot() -> None:
    async def main() -> None:
        lim = ConcurrencyLimiter(1, 5)
        await lim.acquire()
        with pytest.raises(DeadlineExceeded) as ei:
            await lim.acquire(Deadline.after(0.02))
        assert ei.value.stage == "queue"
        waiter = asyncio.create_task(lim.acquire())
        await asyncio.sleep(0)
        waiter.cancel()
        with pytest.raises(asyncio.CancelledError):
            await waiter
        assert lim.queued == 0
        # A slot handed over at the moment the waiter gives up is passed on, not lost.
        w2 = asyncio.create_task(lim.acquire())
        await asyncio.sleep(0)
        lim.release()  # hands the slot to w2 ...
        w2.cancel()  # ... which is cancelled before it resumes
        with pytest.raises(asyncio.CancelledError):
            await w2
        assert lim.active == 0
        await asyncio.wait_for(lim.acquire(), 0.1)
        assert lim.active == 1

    asyncio.run(main())


def test_shed_says_when_to_retry() -> None:
    async def main() -> None:
        lim = ConcurrencyLimiter(2, 2)
        for _ in range(4):  # each request held its slot for ~20 ms
            async with lim.slot():
                await asyncio.sleep(0.02)
        assert 0.0 < lim.hold_s < 0.1
        gate = asyncio.Event()

        async def hold() -> None:
            async with lim.slot():
                await gate.wait()

        tasks = [asyncio.create_task(hold()) for _ in range(4)]
        await asyncio.sleep(0.01)
        with pytest.raises(LimitExceeded) as ei:
            await lim.acquire()
        # Two rounds ahead (2 queued + 2 running, 2 at a time), each ~hold_s long.
        assert ei.value.retry_after_s == pytest.approx(2 * lim.hold_s)
        assert dict(ei.value.trailing_metadata()) == {
            "infershield-limit": "max_queue",
            "retry-after": f"{2 * lim.hold_s:.3f}",
        }
        gate.set()
        await asyncio.gather(*tasks)

    asyncio.run(main())


def test_limiter_rejects_bad_sizes() -> None:
    with pytest.raises(ValueError):
        ConcurrencyLimiter(0, 1)
    assert ConcurrencyLimiter.from_limits(LimitsConfig()).max_queue == LimitsConfig().max_queue


# --------------------------------------------------------------------------- rate limit


# --------------------------------------------------------------------------- breaker


def test_breaker_opens_fails_fast_probes_and_closes() -> None:
    clock = FakeClock()
    seen: list[str] = []
    br = CircuitBreaker(
        "triton",
        failure_threshold=3,
        reset_timeout_s=5,
        clock=clock,
        on_state_change=lambda s: seen.append(s.value),
    )
    calls = 0

    async def failing() -> None:
        nonlocal calls
        calls += 1
        raise BackendUnavailable("upstream down")

    async def ok() -> str:
        nonlocal calls
        calls += 1
        return "ok"

    async def main() -> None:
        for _ in range(3):
            with pytest.raises(BackendUnavailable, match="upstream down"):
                await br.call(failing)
        assert br.state is BreakerState.OPEN
        with pytest.raises(BackendUnavailable, match="circuit breaker is open"):
            await br.call(ok)
        assert calls == 3  # open: the upstream is not called at all
        clock.now += 5
        assert br.state is BreakerState.HALF_OPEN
        with pytest.raises(BackendUnavailable, match="upstream down"):
            await br.call(failing)  # the probe fails: open again
        assert br.state is BreakerState.OPEN
        clock.now += 5
        assert await br.call(ok) == "ok"
        assert br.state is BreakerState.CLOSED
        assert seen == ["open", "half_open", "open", "half_open", "closed"]

    asyncio.run(main())


def test_breaker_ignores_caller_errors_and_limits_probes() -> None:
    clock = FakeClock()
    br = CircuitBreaker(failure_threshold=2, reset_timeout_s=1, clock=clock)

    async def bad_request() -> None:
        raise InvalidRequest("bad tensor")

    async def main() -> None:
        for _ in range(5):
            with pytest.raises(InvalidRequest):
                await br.call(bad_request)
        assert br.state is BreakerState.CLOSED
        br.on_failure()
        br.on_failure()
        clock.now += 1
        br.before_call()  # the single probe
        with pytest.raises(BackendUnavailable):
            br.before_call()  # a second concurrent probe is refused
        br.on_cancel()  # the probe's caller went away: the probe slot is returned
        br.before_call()
        br.on_success()
        assert br.state is BreakerState.CLOSED

    asyncio.run(main())


# --------------------------------------------------------------------------- check budgets


class _Sleepy(Check):
    """Allows after sleeping; counts its runs."""

    def __init__(self, name: str, seconds: float) -> None:
        super().__init__(name)
        self.seconds = seconds
        self.runs = 0

    def check(self, ctx: CheckContext) -> Verdict:
        self.runs += 1
        time.sleep(self.seconds)
        return self.allow()


def test_check_over_its_budget_names_the_check() -> None:
    fast, slow, after = _Sleepy("fast", 0), _Sleepy("slow", 0.1), _Sleepy("after", 0)
    pipe = Pipeline([Step(fast), Step(slow), Step(after)])
    with pytest.raises(DeadlineExceeded) as ei:
        pipe.run_batch([CheckContext("x")], budget=CheckBudget(Deadline.after(10), 0.05))
    assert ei.value.stage == "check:slow"
    assert "check_budget_s" in ei.value.message
    assert after.runs == 0  # nothing runs after the overrun
    # Within budget, the same pipeline just runs.
    assert not pipe.run_batch([CheckContext("x")], budget=CheckBudget(Deadline.after(10), 1))[
        0
    ].blocked


def test_expired_or_abandoned_request_runs_no_further_checks() -> None:
    first, second = _Sleepy("first", 0.05), _Sleepy("second", 0)
    pipe = Pipeline([Step(first), Step(second)])
    with pytest.raises(DeadlineExceeded) as ei:
        pipe.run_batch([CheckContext("x")], budget=CheckBudget(Deadline.after(0.02)))
    assert ei.value.stage == "check:second"
    assert (first.runs, second.runs) == (1, 0)
    budget = CheckBudget(Deadline.after(10))
    budget.cancel()  # the caller went away
    with pytest.raises(DeadlineExceeded, match="abandoned"):
        pipe.run_batch([CheckContext("x")], budget=budget)
    assert first.runs == 1


def test_check_budget_must_be_positive() -> None:
    from infershield.config import Config, build, validate
    from infershield.errors import ConfigError

    with pytest.raises(ConfigError, match="check_budget_s"):
        # allow_empty: the empty-pipeline check would otherwise fire first.
        validate(build(Config, {"limits": {"check_budget_s": 0}, "policy": {"allow_empty": True}}))


class TestQuarantine:
    def make(self, clock: list[float]) -> tuple[Quarantine, list[str]]:
        started: list[str] = []
        q = Quarantine(
            3, 10.0, 30.0, clock=lambda: clock[0], on_quarantine=started.append, max_keys=4
        )
        return q, started

    def test_strikes_within_the_window_start_a_quarantine_that_expires(self) -> None:
        from infershield.errors import Quarantined

        clock = [0.0]
        q, started = self.make(clock)
        assert not q.strike("a") and not q.strike("a")
        q.check("a")  # two strikes: still served
        assert q.strike("a")
        assert started == ["a"]
        with pytest.raises(Quarantined) as ei:
            q.check("a")
        assert ei.value.grpc_code.name == "PERMISSION_DENIED"
        q.check("b")  # other callers are unaffected
        clock[0] = 31.0
        q.check("a")
        assert not q.is_quarantined("a")

    def test_strikes_outside_the_window_do_not_add_up(self) -> None:
        clock = [0.0]
        q, started = self.make(clock)
        for t in (0.0, 11.0, 22.0, 33.0):
            clock[0] = t
            assert not q.strike("a")
        assert started == [] and not q.is_quarantined("a")

    def test_memory_is_bounded_under_a_flood_of_callers(self) -> None:
        clock = [0.0]
        q, _ = self.make(clock)
        for i in range(100):
            q.strike(f"caller-{i}")
        assert len(q._strikes) <= 4

    @pytest.mark.parametrize(
        ("after", "window", "duration"), [(0, 1.0, 1.0), (1, 0.0, 1.0), (1, 1.0, -1.0)]
    )
    def test_bad_settings_are_rejected(self, after: int, window: float, duration: float) -> None:
        from infershield.limits.quarantine import Quarantine

        with pytest.raises(ValueError):
            Quarantine(after, window, duration)
