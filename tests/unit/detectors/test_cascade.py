"""The prefilter cascade: a fast model clears what it can, the main model scores the rest."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import numpy.typing as npt
import pytest

from infershield.checks.base import CheckContext
from infershield.checks.input.classifier import ClassifierCheck, ClassifierOptions
from infershield.config import CheckSpec, Config
from infershield.detectors.runtime import Cascade, RuntimeOptions, SequenceClassifier
from infershield.errors import ConfigError, LimitExceeded
from infershield.policy import build_pipeline
from infershield.verdict import Decision
from tiny_model import WORDS, build_tiny_classifier, filler  # type: ignore[import-not-found]

TEXTS = ["w1 w2", "w1 inject w3", "w4 jailbreak", filler(30), filler(30) + " inject", "w9"]


@pytest.fixture(scope="module")
def main_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_classifier(tmp_path_factory.mktemp("main"))


@pytest.fixture(scope="module")
def fast_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    # Blind to "jailbreak": what it clears, the main model never sees.
    return build_tiny_classifier(tmp_path_factory.mktemp("fast"), jailbreak=False,
                                 meta={"clear_below": 0.5})


@pytest.fixture(scope="module")
def main(main_dir: Path) -> SequenceClassifier:
    return SequenceClassifier(main_dir, RuntimeOptions(max_batch=4))


@pytest.fixture(scope="module")
def fast(fast_dir: Path) -> SequenceClassifier:
    return SequenceClassifier(fast_dir, RuntimeOptions(max_batch=4))


def test_cleared_texts_keep_the_fast_score_and_the_rest_get_the_main_score(
    fast: SequenceClassifier, main: SequenceClassifier
) -> None:
    cascade = Cascade(fast, main, clear_below=0.5)
    assert cascade.shared_windows
    got = cascade.score(TEXTS)
    f, m = fast.score(TEXTS), main.score(TEXTS)
    escalated = f >= 0.5
    assert escalated.tolist() == [False, True, False, False, True, False]
    np.testing.assert_allclose(got[escalated], m[escalated], rtol=1e-6)
    np.testing.assert_allclose(got[~escalated], f[~escalated], rtol=1e-6)
    assert (cascade.cleared, cascade.escalated) == (4, 2)
    # The jailbreak text is the price of a weak prefilter: cleared, though main would block.
    assert got[2] < 0.5 < m[2]


def test_a_zero_cut_escalates_everything(fast: SequenceClassifier,
                                         main: SequenceClassifier) -> None:
    cascade = Cascade(fast, main, clear_below=0.0)
    np.testing.assert_allclose(cascade.score(TEXTS), main.score(TEXTS), rtol=1e-6)
    assert cascade.cleared == 0


def test_never_blocks_what_the_main_model_allows(fast: SequenceClassifier,
                                                 main: SequenceClassifier) -> None:
    threshold = 0.5
    cascade = Cascade(fast, main, clear_below=threshold)
    texts = [filler(n, offset=n) + (" inject" if n % 3 == 0 else "") for n in range(1, 40)]
    got, m = cascade.score(texts), main.score(texts)
    assert not np.any((got >= threshold) & (m < threshold))


def test_only_the_windows_the_fast_model_flags_reach_the_main_model(
        fast: SequenceClassifier, main: SequenceClassifier) -> None:
    cascade = Cascade(fast, main, clear_below=0.5)
    text = filler(40) + " inject " + filler(40, offset=7)  # one odd paragraph in a document
    (ws,) = cascade.windows_each([text])
    assert not isinstance(ws, LimitExceeded)
    n = len(ws.main)
    assert n >= 6
    got = cascade.score([text])[0]
    assert got == pytest.approx(main.score([text])[0], rel=1e-6)  # the max window is the same
    assert 0 < cascade.windows_escalated < n  # only the windows holding "inject"
    assert (cascade.cleared, cascade.escalated) == (0, 1)


def test_models_with_different_windows_each_tokenise(tmp_path: Path,
                                                     main: SequenceClassifier) -> None:
    fast = SequenceClassifier(build_tiny_classifier(tmp_path / "f", max_positions=10,
                                                    jailbreak=False))
    cascade = Cascade(fast, main, clear_below=0.5)
    assert not cascade.shared_windows
    text = filler(60) + " inject " + filler(5)  # past the first window of both models
    (ws,) = cascade.windows_each([text])
    assert not isinstance(ws, LimitExceeded)
    assert len(ws.fast) > len(ws.main) > 1
    assert cascade.score([text])[0] > 0.99


def test_too_long_for_either_model_is_limit_exceeded(tmp_path: Path,
                                                     main: SequenceClassifier) -> None:
    fast = SequenceClassifier(build_tiny_classifier(tmp_path / "f", max_positions=8),
                              RuntimeOptions(max_windows=3))
    cascade = Cascade(fast, main, clear_below=0.5)
    short, long_ = cascade.windows_each(["w1 w2", filler(20)])
    assert not isinstance(short, LimitExceeded)
    assert isinstance(long_, LimitExceeded)
    with pytest.raises(LimitExceeded):
        cascade.score([filler(20)])


@pytest.mark.parametrize("cut", [-0.1, 1.0])
def test_cut_out_of_range_is_config_error(fast: SequenceClassifier, main: SequenceClassifier,
                                          cut: float) -> None:
    with pytest.raises(ConfigError, match="clear_below"):
        Cascade(fast, main, clear_below=cut)


def test_check_reads_the_cut_from_the_fast_model(main_dir: Path, fast_dir: Path) -> None:
    chk = ClassifierCheck("clf", ClassifierOptions(threshold=0.6), main_dir, fast_dir)
    try:
        assert chk.cascade is not None and chk.cascade.clear_below == 0.5
        verdicts = chk.check_batch([CheckContext(text=t) for t in TEXTS])
        assert [v.decision is Decision.BLOCK for v in verdicts] == [
            False, True, False, False, True, False]
        assert chk.check(CheckContext(text="w2 inject")).decision is Decision.BLOCK

        async def run() -> list[bool]:
            vs = await asyncio.gather(*(chk.acheck(CheckContext(text=t)) for t in TEXTS))
            return [v.decision is Decision.BLOCK for v in vs]

        assert asyncio.run(run()) == [False, True, False, False, True, False]
    finally:
        chk.close()


def test_check_cut_must_not_exceed_the_threshold(main_dir: Path, fast_dir: Path) -> None:
    with pytest.raises(ConfigError, match="prefilter_clear"):
        ClassifierCheck("clf", ClassifierOptions(threshold=0.4), main_dir, fast_dir)
    with pytest.raises(ConfigError, match="prefilter_clear"):
        ClassifierCheck("clf", ClassifierOptions(threshold=0.6, prefilter_clear=0.7),
                        main_dir, fast_dir)


def test_check_needs_a_cut(main_dir: Path, tmp_path: Path) -> None:
    no_cut = build_tiny_classifier(tmp_path / "nocut")
    with pytest.raises(ConfigError, match="clear_below"):
        ClassifierCheck("clf", ClassifierOptions(threshold=0.6), main_dir, no_cut)
    chk = ClassifierCheck("clf", ClassifierOptions(threshold=0.6, prefilter_clear=0.2),
                          main_dir, no_cut)
    try:
        assert chk.cascade is not None and chk.cascade.clear_below == 0.2
        assert chk.check(CheckContext(text="w1 jailbreak")).decision is Decision.BLOCK
    finally:
        chk.close()


def test_policy_prefilter_option(main_dir: Path, fast_dir: Path, tmp_path: Path) -> None:
    cfg = Config(cache_dir=str(tmp_path))
    texts = [CheckContext(text=t) for t in ["w1 w2", "w3 inject", "w4 jailbreak", filler(300)]]
    for prefilter, blocked in [(str(fast_dir), [False, True, False, True]),
                               ("none", [False, True, True, True]),
                               ("auto", [False, True, True, True])]:  # auto: shipped model only
        spec = CheckSpec(type="classifier", options={
            "model": str(main_dir), "prefilter": prefilter, "threshold": 0.6, "max_windows": 4})
        pipe = build_pipeline([spec], "input", cfg, fail_fast=False)
        try:
            assert [r.blocked for r in pipe.run_batch(texts)] == blocked, prefilter
        finally:
            pipe.close()


def test_policy_missing_prefilter_is_config_error(main_dir: Path, tmp_path: Path) -> None:
    spec = CheckSpec(type="classifier", options={"model": str(main_dir), "prefilter": "nope"})
    with pytest.raises(ConfigError, match="not found"):
        build_pipeline([spec], "input", Config(cache_dir=str(tmp_path)), fail_fast=False)


def test_calibrate_prefilter_cli_writes_the_cut_into_the_head(
        main_dir: Path, fast_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import json

    from infershield.cli import main as cli
    from infershield.detectors.head import Head

    rows = [("w1 inject w2", "injection"), ("w3 w4 inject", "injection"),
            ("w5 jailbreak", "jailbreak"), ("w1 w2", "benign"), ("w30 w31", "benign"),
            ("w9 w10 w11", "benign")]
    data = tmp_path / "rows.jsonl"
    data.write_text("".join(json.dumps({"text": t, "label": lab}) + "\n" for t, lab in rows),
                    encoding="utf-8")
    head_path = tmp_path / "head.npz"
    z = np.zeros
    Head(z((4, 2), np.float32), z(2, np.float32), z((2, 2), np.float32), z(2, np.float32),
         ("benign", "injection"), 0.5, {"note": "kept"}).save(head_path)
    rc = cli(["models", "calibrate-prefilter", "--data", str(data), "--split", "all",
              "--main", str(main_dir), "--fast", str(fast_dir), "--max-loss", "0",
              "--head", str(head_path)])
    assert rc == 0
    out = json.loads(capsys.readouterr().out)
    fast = SequenceClassifier(fast_dir).score([t for t, _ in rows])
    assert out["caught"] == 3 and out["lost"] == 0
    assert out["clear_below"] == pytest.approx(float(fast[:3].min()), rel=1e-5)
    assert Head.load(head_path).meta == {"note": "kept", "clear_below": f"{out['clear_below']:.6g}"}


# ---------------------------------------------------------------- pieces of long windows


class _Diluting(SequenceClassifier):
    """A fast model whose score padding dilutes, like the real small one: four times the
    share of ``inject`` among a window's tokens. It records the body length it scored."""

    def __init__(self, model_dir: Path) -> None:
        self.seen: list[int] = []  # the constructor's warm-up scores a window too
        super().__init__(model_dir)

    def window_probs(self, windows: Sequence[list[int]]) -> npt.NDArray[np.float32]:
        inj = WORDS.index("inject")
        out = []
        for w in windows:
            body = w[len(self._prefix) : len(w) - len(self._suffix)]
            self.seen.append(len(body))
            out.append(min(1.0, 4.0 * body.count(inj) / max(len(body), 1)))
        return np.asarray(out, np.float32)


@pytest.fixture(scope="module")
def wide_dirs(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("wide")
    return (build_tiny_classifier(root / "main", max_positions=64),
            build_tiny_classifier(root / "fast", max_positions=64,
                                  meta={"clear_below": 0.3, "piece_tokens": 16,
                                        "piece_clear_below": 0.2}))


def _wide(dirs: tuple[Path, Path]) -> tuple[_Diluting, SequenceClassifier]:
    fast = _Diluting(dirs[1])
    fast.seen.clear()
    return fast, SequenceClassifier(dirs[0])


PADDED = filler(20) + " inject " + filler(30)  # one window of 51 tokens


def test_pieces_catch_an_attack_the_fast_model_dilutes(wide_dirs: tuple[Path, Path]) -> None:
    fast, main = _wide(wide_dirs)
    whole = Cascade(fast, main, clear_below=0.3)
    assert whole.score([PADDED])[0] < 0.3  # 4/51 of the window: cleared, main never asked
    assert fast.seen == [51]
    fast.seen.clear()
    pieces = Cascade(fast, main, clear_below=0.3, piece_tokens=16, piece_clear=0.2)
    got = pieces.score([PADDED])[0]
    assert got == pytest.approx(main.score([PADDED])[0], rel=1e-6) and got > 0.99
    # The fast model saw pieces of at most 16 tokens covering the window, never the window.
    assert max(fast.seen) == 16 and sum(fast.seen) >= 51 and 51 not in fast.seen
    assert (pieces.cleared, pieces.escalated) == (0, 1)


def test_short_windows_are_screened_whole(wide_dirs: tuple[Path, Path]) -> None:
    fast, main = _wide(wide_dirs)
    cascade = Cascade(fast, main, clear_below=0.3, piece_tokens=16, piece_clear=0.2)
    got = cascade.score(["w1 inject w2", "w1 w2 w3"])
    assert fast.seen == [3, 3]
    assert got[0] > 0.99 and got[1] < 0.3


def test_a_cleared_long_window_stays_below_the_cut(wide_dirs: tuple[Path, Path]) -> None:
    fast, main = _wide(wide_dirs)
    # Pieces score 4/16 = 0.25: above clear_below, below piece_clear, so cleared; the score
    # it keeps must still read as cleared (below clear_below), never as an attack.
    cascade = Cascade(fast, main, clear_below=0.1, piece_tokens=16, piece_clear=0.5)
    got = cascade.score([PADDED])[0]
    assert got < 0.1
    assert (cascade.cleared, cascade.escalated) == (1, 0)


@pytest.fixture(scope="module")
def sentence_dirs(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("sentences")
    return (build_tiny_classifier(root / "main", max_positions=64, punctuation=True),
            build_tiny_classifier(root / "fast", max_positions=64, punctuation=True,
                                  meta={"clear_below": 0.3, "piece_tokens": 16,
                                        "piece_clear_below": 0.2}))


def test_a_short_window_is_also_screened_by_its_sentences(
        sentence_dirs: tuple[Path, Path]) -> None:
    fast, main = _wide(sentence_dirs)
    lead_in = filler(7) + " . inject " + filler(4) + " ."  # 14 tokens: 4/14 whole
    benign = filler(7) + " . " + filler(5) + " ."
    cascade = Cascade(fast, main, clear_below=0.3, piece_tokens=16, piece_clear=0.2,
                      sentence_clear=0.5)
    got = cascade.score([lead_in, benign])
    # Both windows whole (14 tokens each), then their sentences (8 and 6 tokens): the
    # attack's, 4/6, escalates its window; one pass of the fast model for all of them.
    assert fast.seen == [14, 14, 8, 6, 8, 6]
    assert got[0] == pytest.approx(main.score([lead_in])[0], rel=1e-6) and got[0] > 0.99
    assert got[1] < 0.3 and (cascade.cleared, cascade.escalated) == (1, 1)
    # Without sentences the lead-in hides the attack from the fast model.
    fast.seen.clear()
    plain = Cascade(fast, main, clear_below=0.3, piece_tokens=16, piece_clear=0.2)
    assert plain.score([lead_in])[0] < 0.3 and fast.seen == [14]


def test_pieces_are_cut_at_sentence_ends(sentence_dirs: tuple[Path, Path]) -> None:
    fast, main = _wide(sentence_dirs)
    attack = "inject " + filler(1) + " inject " + filler(2, 3) + " ."  # 6 tokens, 2 attacks
    text = filler(14) + " . " + attack + " " + filler(30, 5) + " ."  # 52 tokens
    cascade = Cascade(fast, main, clear_below=0.3, piece_tokens=16, piece_clear=0.3)
    assert cascade.score([text])[0] > 0.99
    # The 15-token sentence, the attack sentence whole (8/6 -> 1.0), and the 31-token tail
    # in pieces of 16 (the last ends at the end). Fixed 16-token pieces would have cut the
    # attack in two, one "inject" in each (4/16 = 0.25, under the cut): cleared.
    assert fast.seen == [15, 6, 16, 16]


def test_sentences_of_long_windows_with_scope_all(sentence_dirs: tuple[Path, Path]) -> None:
    fast, main = _wide(sentence_dirs)
    # Two 8-token sentences fill one piece: the attack's 4/16 = 0.25 is under the cut.
    text = filler(7) + " . " + filler(6, 3) + " inject . " + filler(30, 5)  # 46 tokens
    short = Cascade(fast, main, clear_below=0.3, piece_tokens=16, piece_clear=0.3,
                    sentence_clear=0.3)
    assert short.sentence_scope == "short"
    assert short.score([text])[0] < 0.3
    assert fast.seen == [16, 16, 16]  # a long window: pieces only
    fast.seen.clear()
    every = Cascade(fast, main, clear_below=0.3, piece_tokens=16, piece_clear=0.3,
                    sentence_clear=0.3, sentence_scope="all")
    assert every.score([text])[0] > 0.99
    # The pieces, then the sentences: the attack's own (4/8 = 0.5) escalates the window.
    assert fast.seen == [16, 16, 16, 8, 8, 16, 16]
    with pytest.raises(ConfigError, match="sentence_scope"):
        Cascade(fast, main, clear_below=0.3, piece_tokens=16, sentence_clear=0.3,
                sentence_scope="long")  # type: ignore[arg-type]


def test_sentence_settings(sentence_dirs: tuple[Path, Path], wide_dirs: tuple[Path, Path],
                           tmp_path: Path) -> None:
    fast, main = _wide(sentence_dirs)
    with pytest.raises(ConfigError, match="sentences need pieces"):
        Cascade(fast, main, clear_below=0.3, sentence_clear=0.5)
    with pytest.raises(ConfigError, match="sentence_clear"):
        Cascade(fast, main, clear_below=0.3, piece_tokens=16, sentence_clear=1.0)
    meta_fast = SequenceClassifier(build_tiny_classifier(
        tmp_path / "f", max_positions=64, punctuation=True,
        meta={"clear_below": 0.3, "piece_tokens": 16, "sentence_clear_below": 0.6}))
    assert Cascade.from_meta(meta_fast, main).sentence_clear == 0.6
    assert Cascade.from_meta(meta_fast, main, sentence_clear=0.7).sentence_clear == 0.7
    assert Cascade.from_meta(meta_fast, main, sentences=False).sentence_clear is None
    assert Cascade.from_meta(meta_fast, main, piece_tokens=0).sentence_clear is None
    # A fast model that recommends none screens no sentences.
    assert Cascade.from_meta(SequenceClassifier(wide_dirs[1]), main).sentence_clear is None


def test_sentence_pieces() -> None:
    from infershield.detectors.runtime import sentence_pieces

    ends = frozenset({9})
    body = [1, 2, 9, 1, 1, 1, 1, 1, 1, 9, 1, 1, 1, 1, 1, 1, 1, 9, 1]
    # "1 2 ." is under the minimum and joins the next; the one-token tail joins the last.
    assert sentence_pieces(body, ends, 16, min_tokens=4) == [(0, 10), (10, 19)]
    assert sentence_pieces(body, frozenset(), 8, min_tokens=4) == [(0, 8), (8, 16), (11, 19)]
    assert sentence_pieces([], ends, 8) == []
    assert sentence_pieces([9, 9, 9], ends, 8, min_tokens=4) == [(0, 3)]


def test_packed_pieces() -> None:
    from infershield.detectors.runtime import packed_pieces

    ends = frozenset({9})
    six = [1, 1, 1, 1, 1, 9]
    # Sentences of 6 tokens, packed while they fit: two per 12-token piece.
    assert packed_pieces(six * 5, ends, 12) == [(0, 12), (12, 24), (24, 30)]
    # A sentence longer than a piece is cut as fixed pieces, never packed with a neighbour.
    long_ = [1] * 12 + [9]
    assert packed_pieces(six + long_ + six, ends, 12) == [(0, 6), (6, 18), (7, 19), (19, 25)]
    # No sentence ends: fixed pieces, the last ending at the end.
    assert packed_pieces([1] * 25, frozenset(), 10) == [(0, 10), (10, 20), (15, 25)]
    assert packed_pieces([], ends, 10) == []


def test_sentence_ends_are_real_punctuation_tokens(wide_dirs: tuple[Path, Path],
                                                   sentence_dirs: tuple[Path, Path]) -> None:
    from infershield.detectors.runtime import sentence_end_ids

    # The plain tiny tokenizer reads "." as [UNK]: no sentence ends, never [UNK] as one.
    assert sentence_end_ids(SequenceClassifier(wide_dirs[1]).tokenizer) == frozenset()
    assert sentence_end_ids(SequenceClassifier(sentence_dirs[1]).tokenizer) == {len(WORDS)}


@pytest.mark.parametrize(("tokens", "clear", "match"), [
    (8, 0.2, "piece_tokens"), (64, 0.2, "piece_tokens"), (16, 1.0, "piece_clear"),
    (16, -0.1, "piece_clear")])
def test_piece_settings_out_of_range_are_config_errors(
        wide_dirs: tuple[Path, Path], tokens: int, clear: float, match: str) -> None:
    fast, main = _wide(wide_dirs)
    with pytest.raises(ConfigError, match=match):
        Cascade(fast, main, clear_below=0.3, piece_tokens=tokens, piece_clear=clear)


def test_check_reads_the_piece_settings_from_the_fast_model(
        wide_dirs: tuple[Path, Path], tmp_path: Path) -> None:
    main_dir, fast_dir = wide_dirs
    for opts, want in [(ClassifierOptions(threshold=0.6), (16, 0.2)),
                       (ClassifierOptions(threshold=0.6, prefilter_pieces=0), (0, 0.2)),
                       (ClassifierOptions(threshold=0.6, prefilter_piece_clear=0.4), (16, 0.4))]:
        chk = ClassifierCheck("clf", opts, main_dir, fast_dir)
        try:
            assert chk.cascade is not None
            assert (chk.cascade.piece_tokens, chk.cascade.piece_clear) == want
            assert chk.check(CheckContext(text=PADDED)).decision is Decision.BLOCK
        finally:
            chk.close()
    with pytest.raises(ConfigError, match="prefilter_piece_clear"):
        ClassifierCheck("clf", ClassifierOptions(threshold=0.6, prefilter_piece_clear=0.7),
                        main_dir, fast_dir)
    # Sentences: the option's cut, never above the threshold; off when asked.
    for opts, want in [(ClassifierOptions(threshold=0.6, prefilter_sentence_clear=0.5), 0.5),
                       (ClassifierOptions(threshold=0.6, prefilter_sentence_clear=0.5,
                                          prefilter_sentences=False), None),
                       (ClassifierOptions(threshold=0.6), None)]:  # the model recommends none
        chk = ClassifierCheck("clf", opts, main_dir, fast_dir)
        try:
            assert chk.cascade is not None and chk.cascade.sentence_clear == want
        finally:
            chk.close()
    with pytest.raises(ConfigError, match="prefilter_sentence_clear"):
        ClassifierCheck("clf", ClassifierOptions(threshold=0.6, prefilter_sentence_clear=0.7),
                        main_dir, fast_dir)
    bad = build_tiny_classifier(tmp_path / "bad", max_positions=64,
                                meta={"clear_below": 0.3, "piece_tokens": "many"})
    with pytest.raises(ConfigError, match="piece_tokens"):
        ClassifierCheck("clf", ClassifierOptions(threshold=0.6), main_dir, bad)


def test_pieces_need_shared_windows(tmp_path: Path, wide_dirs: tuple[Path, Path]) -> None:
    main = SequenceClassifier(wide_dirs[0])
    other = SequenceClassifier(build_tiny_classifier(
        tmp_path / "f", max_positions=10, meta={"clear_below": 0.5, "piece_tokens": 16}))
    with pytest.raises(ConfigError, match="same windows"):
        Cascade(other, main, clear_below=0.5, piece_tokens=16)
    # Recommended by the fast model only: not applicable, so whole texts are screened.
    assert Cascade.from_meta(other, main).piece_tokens == 0
