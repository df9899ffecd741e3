"""The generic ONNX runtime against a tiny in-test classifier."""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
import pytest

from infershield.checks.base import CheckContext
from infershield.checks.input.classifier import ClassifierCheck, ClassifierOptions
from infershield.config import CheckSpec, Config
from infershield.detectors.runtime import CPU, MicroBatcher, RuntimeOptions, SequenceClassifier
from infershield.errors import ConfigError, LimitExceeded
from infershield.policy import build_pipeline
from infershield.verdict import Decision
from tiny_model import build_tiny_classifier, filler  # type: ignore[import-not-found]


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_classifier(tmp_path_factory.mktemp("tiny"))


@pytest.fixture(scope="module")
def model(tiny_dir: Path) -> SequenceClassifier:
    return SequenceClassifier(tiny_dir, RuntimeOptions(max_batch=4))


@pytest.mark.parametrize(
    ("text", "attack_labels", "blocked"),
    [
        ("w1 w2 inject w3", (), True),
        ("w1 jailbreak w2", (), True),
        ("w1 w2 w3", (), False),
        ("w1 jailbreak w2", ("INJECTION",), False),
        ("w1 inject w2", ("INJECTION",), True),
        ("w1 inject w2", ("JAILBREAK",), False),
    ],
)
def test_label_mapping(
    tiny_dir: Path, text: str, attack_labels: tuple[str, ...], blocked: bool
) -> None:
    m = SequenceClassifier(tiny_dir, RuntimeOptions(attack_labels=attack_labels))
    assert bool(m.score([text])[0] >= 0.5) is blocked


def test_default_attack_labels_skip_benign(model: SequenceClassifier) -> None:
    assert model.labels == ("BENIGN", "INJECTION", "JAILBREAK")
    assert model.attack_labels == ("INJECTION", "JAILBREAK")


def test_unknown_attack_label_is_config_error(tiny_dir: Path) -> None:
    with pytest.raises(ConfigError, match="not in the model's labels"):
        SequenceClassifier(tiny_dir, RuntimeOptions(attack_labels=("NOPE",)))


def test_missing_file_is_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"model\.onnx"):
        SequenceClassifier(tmp_path)


@pytest.mark.parametrize("position", [0, 7, 20, 55, 99])
def test_attack_anywhere_in_long_input_is_caught(model: SequenceClassifier, position: int) -> None:
    words = filler(100).split()
    words[position] = "inject"
    text = " ".join(words)
    assert len(model.windows(text)) > 1  # really longer than one window (16 tokens)
    assert model.score([text])[0] > 0.99
    # A plain single-window run (what truncation would do) misses it when it is late.
    first = model.windows(text)[0]
    if position > 20:
        assert model._attack_prob(model.forward([first]))[0] < 0.5


def test_windows_cover_every_token(model: SequenceClassifier) -> None:
    text = filler(57)
    ids = model.tokenizer.encode(text, add_special_tokens=False).ids
    seen: set[int] = set()
    for w in model.windows(text):
        assert len(w) <= model.window and w[0] == 2 and w[-1] == 3
    # Recover positions: windows start every `stride` tokens, the last one ends at the tail.
    starts = list(range(0, len(ids) - model._body + 1, model.stride))
    for s in starts:
        seen.update(range(s, s + model._body))
    seen.update(range(len(ids) - model._body, len(ids)))
    assert seen == set(range(len(ids)))


@pytest.mark.parametrize("n", [0, 1, 5, 13, 14, 15, 57, 100])
def test_training_cuts_the_windows_the_runtime_scores(model: SequenceClassifier, n: int) -> None:
    # One windowing rule for both sides: a train/serve skew here would train the model on
    # windows it never sees when serving.
    from infershield.detectors.runtime import special_tokens, window_starts
    from infershield.training.training import window_ids

    text = filler(n)
    ids = model.tokenizer.encode(text, add_special_tokens=False).ids
    prefix, suffix = special_tokens(model.tokenizer)
    assert window_ids(ids, model._body, prefix, suffix, max_windows=1000) == model.windows(text)
    assert len(model.windows(text)) == len(window_starts(len(ids), model._body, model.stride))


def test_fp16_on_a_cpu_only_machine_logs_nothing(
    tiny_dir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # fp16 is the classifier's default: on the CPU EP it quietly means float32.
    with caplog.at_level(logging.INFO, logger="infershield"):
        m = SequenceClassifier(tiny_dir, RuntimeOptions(providers=("cpu",), fp16=True))
    assert m.model_path.name == "model.onnx"
    assert [r.getMessage() for r in caplog.records] == []


def test_max_windows_limit(tiny_dir: Path) -> None:
    m = SequenceClassifier(tiny_dir, RuntimeOptions(max_windows=3))
    with pytest.raises(LimitExceeded) as err:
        m.score([filler(200)])
    assert err.value.limit == "classifier.max_windows"


def test_batched_scores_equal_unbatched(model: SequenceClassifier) -> None:
    rng = np.random.default_rng(0)
    texts = [filler(int(n), offset=int(n)) for n in rng.integers(1, 60, 25)]
    texts[3] += " inject"
    texts[11] = "jailbreak " + texts[11]
    single = np.array([model.score([t])[0] for t in texts])
    batched = model.score(texts)
    np.testing.assert_allclose(batched, single, rtol=1e-5, atol=1e-6)
    assert len(set(np.round(single, 4))) > 5  # the scores really vary with content

    batcher = MicroBatcher(model, max_batch=64, max_wait_ms=30.0)
    try:
        results: dict[int, float] = {}
        barrier = threading.Barrier(len(texts))

        def call(i: int) -> None:
            barrier.wait()
            results[i] = batcher.submit(texts[i]).result(timeout=10)

        threads = [threading.Thread(target=call, args=(i,)) for i in range(len(texts))]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        np.testing.assert_allclose([results[i] for i in range(len(texts))], single, rtol=1e-5,
                                   atol=1e-6)
        assert batcher.batches_run < len(texts)  # concurrent callers were batched together
    finally:
        batcher.close()


def test_batcher_propagates_errors(tiny_dir: Path) -> None:
    m = SequenceClassifier(tiny_dir, RuntimeOptions(max_windows=2))
    b = MicroBatcher(m)
    try:
        with pytest.raises(LimitExceeded):
            b.submit(filler(300)).result(timeout=5)
    finally:
        b.close()
    with pytest.raises(RuntimeError, match="closed"):
        b.submit("w1").result(timeout=5)


def test_close_answers_every_caller(model: SequenceClassifier) -> None:
    b = MicroBatcher(model, max_batch=4, max_wait_ms=5.0)
    futures = []

    def spam() -> None:
        for _ in range(50):
            futures.append(b.submit("w1 inject w2"))

    threads = [threading.Thread(target=spam) for _ in range(4)]
    for t in threads:
        t.start()
    b.close()
    for t in threads:
        t.join()
    for f in futures:  # each one is either scored or refused, never left hanging
        exc = f.exception(timeout=10)
        assert (exc is None and f.result() > 0.99) or isinstance(exc, RuntimeError)


def test_cuda_request_falls_back_to_cpu(tiny_dir: Path, caplog: pytest.LogCaptureFixture) -> None:
    if "CUDAExecutionProvider" in ort.get_available_providers() and Path("/dev/nvidia0").exists():
        pytest.skip("a GPU is present; fallback is not exercised")
    with caplog.at_level(logging.WARNING, logger="infershield.detectors.runtime"):
        m = SequenceClassifier(tiny_dir, RuntimeOptions(providers=("cuda",)))
    assert m.active_providers == (CPU,)
    assert "CUDA execution provider requested but unavailable" in caplog.text
    assert m.score(["w1 inject"])[0] > 0.99


def test_unknown_provider_is_config_error(tiny_dir: Path) -> None:
    with pytest.raises(ConfigError, match="execution provider"):
        SequenceClassifier(tiny_dir, RuntimeOptions(providers=("NoSuchExecutionProvider",)))


def test_check_through_policy(tiny_dir: Path, tmp_path: Path) -> None:
    cfg = Config(cache_dir=str(tmp_path))
    spec = CheckSpec(type="classifier", options={"model": str(tiny_dir), "max_windows": 4})
    pipe = build_pipeline([spec], "input", cfg, fail_fast=False)
    try:
        res = pipe.run_batch([CheckContext(text=t) for t in
                              ["w1 w2", "w1 inject", "w3 jailbreak", filler(300)]])
        assert [r.blocked for r in res] == [False, True, True, True]
        assert res[1].verdicts[0].categories == ("injection", "jailbreak")
        assert res[3].verdicts[0].reason == ClassifierCheck.REASON_TOO_LONG
        single = pipe.run(CheckContext(text="w5 inject w6"))
        assert single.blocked and single.verdicts[0].reason.startswith("classifier: attack")
    finally:
        pipe.close()


def test_check_async_path(tiny_dir: Path) -> None:
    chk = ClassifierCheck("clf", ClassifierOptions(threshold=0.5), tiny_dir)
    try:
        async def main() -> list[bool]:
            vs = await asyncio.gather(*(chk.acheck(CheckContext(text=t))
                                        for t in ["w1 inject", "w2 w3", "jailbreak"]))
            return [v.decision is Decision.BLOCK for v in vs]

        assert asyncio.run(main()) == [True, False, True]
    finally:
        chk.close()


def test_missing_named_model_is_config_error(tmp_path: Path) -> None:
    cfg = Config(cache_dir=str(tmp_path))
    spec = CheckSpec(type="classifier", options={"model": "nope"})
    with pytest.raises(ConfigError, match="not found"):
        build_pipeline([spec], "input", cfg, fail_fast=False)


class _GatedModel:
    """Stands in for a SequenceClassifier: its first forward pass waits for a gate."""

    model_dir = Path("gated")

    def __init__(self) -> None:
        self.gate = threading.Event()
        self.running = threading.Event()
        self.batches: list[int] = []

    def windows_each(self, texts: Sequence[str]) -> list[list[list[int]]]:
        return [[[len(text)]] for text in texts]

    def score_windows(self, per_text: Sequence[Any]) -> np.ndarray:  # type: ignore[type-arg]
        if not self.batches:
            self.running.set()
            self.gate.wait(10)
        self.batches.append(len(per_text))
        return np.array([ws[0][0] / 100 for ws in per_text], np.float32)


def test_greedy_batcher_answers_a_lone_request_and_batches_the_backlog() -> None:
    m = _GatedModel()
    b = MicroBatcher(m, max_batch=64)  # default: never waits
    try:
        first = b.submit("x" * 5)
        assert m.running.wait(5)  # the lone request went straight to a forward pass
        rest = [b.submit("x" * n) for n in range(10, 19)]  # queue up behind the forward pass
        m.gate.set()
        assert first.result(timeout=5) == pytest.approx(0.05)
        want = [n / 100 for n in range(10, 19)]
        assert [f.result(timeout=5) for f in rest] == pytest.approx(want)
        assert m.batches == [1, 9]  # no waiting for company; the backlog went as one batch
    finally:
        b.close()



def test_blocking_score_runs_inline_when_idle_and_queues_when_busy() -> None:
    m = _GatedModel()
    b = MicroBatcher(m, max_batch=64)
    try:
        first = b.submit("x" * 5)  # holds the batching thread at the gate
        assert m.running.wait(5)
        got: dict[int, float] = {}
        threads = [threading.Thread(target=lambda n=n: got.__setitem__(n, b.score("x" * n)))
                   for n in range(10, 14)]
        for t in threads:
            t.start()
        deadline = time.monotonic() + 5
        while b._q.qsize() < 4 and time.monotonic() < deadline:  # busy: they queue
            time.sleep(0.001)
        assert b.inline_run == 0
        m.gate.set()
        for t in threads:
            t.join(5)
        assert first.result(timeout=5) == pytest.approx(0.05)
        assert got == pytest.approx({n: n / 100 for n in range(10, 14)})
        assert m.batches == [1, 4]  # the waiting callers were batched together
        # Idle now: a lone blocking call runs in the caller's thread, not the batcher's.
        assert b.score("x" * 7) == pytest.approx(0.07)
        assert b.inline_run == 1 and b.batches_run == 2
    finally:
        b.close()
    with pytest.raises(RuntimeError, match="closed"):
        b.score("x")


def test_blocking_score_raises_limit_exceeded(tiny_dir: Path) -> None:
    m = SequenceClassifier(tiny_dir, RuntimeOptions(max_windows=2))
    b = MicroBatcher(m)
    try:
        with pytest.raises(LimitExceeded):
            b.score(filler(300))
        assert b.score("w1 inject w2") > 0.99
    finally:
        b.close()

def test_windows_each_marks_only_the_long_text(tiny_dir: Path) -> None:
    m = SequenceClassifier(tiny_dir, RuntimeOptions(max_windows=3))
    out = m.windows_each(["w1 inject", filler(200), "w2"])
    assert isinstance(out[1], LimitExceeded)
    assert out[0] == m.windows("w1 inject") and out[2] == m.windows("w2")
    with pytest.raises(LimitExceeded):
        m.windows_batch(["w1", filler(200)])


def test_check_batch_blocks_only_the_too_long_text(tiny_dir: Path) -> None:
    chk = ClassifierCheck("clf", ClassifierOptions(max_windows=3), tiny_dir)
    try:
        texts = ["w1 w2", filler(200), "w1 inject"]
        v = chk.check_batch([CheckContext(text=t) for t in texts])
        assert [x.decision for x in v] == [Decision.ALLOW, Decision.BLOCK, Decision.BLOCK]
        assert v[1].reason == ClassifierCheck.REASON_TOO_LONG
        assert [x.decision for x in v] == [chk.check(CheckContext(text=t)).decision for t in texts]
    finally:
        chk.close()


def test_fp16_twin_is_used_only_on_the_cuda_ep(
    tiny_dir: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    import shutil

    d = tmp_path / "m"
    shutil.copytree(tiny_dir, d)
    shutil.copyfile(d / "model.onnx", d / "model_fp16.onnx")
    with caplog.at_level(logging.DEBUG, logger="infershield.detectors.runtime"):
        m = SequenceClassifier(d, RuntimeOptions(providers=("cpu",), fp16=True))
    assert m.model_path.name == "model.onnx"
    assert [r.levelno for r in caplog.records
            if "fp16 applies to the CUDA EP only" in r.getMessage()] == [logging.DEBUG]


def test_cuda_expected_only_with_a_usable_gpu() -> None:
    from infershield.detectors.runtime import cuda_expected

    gpu = "CUDAExecutionProvider" in ort.get_available_providers() and Path("/dev/nvidia0").exists()
    assert cuda_expected(("auto",)) is gpu
    assert cuda_expected(("cpu",)) is False  # never when the config asks for the CPU
