"""Size budgets: request bytes, batch elements, input and output tokens, each naming its limit."""

from __future__ import annotations

import pytest

from infershield.config import LimitsConfig
from infershield.errors import LimitExceeded
from infershield.limits.budgets import OutputTokenMeter, check_inputs, check_request_bytes
from infershield.tokens import HFTokenCounter

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
