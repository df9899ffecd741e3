"""Size budgets of one request: bytes, batch elements, input and output tokens.

Every rejection is a :class:`~infershield.errors.LimitExceeded` that names the limit
(``LimitExceeded.limit``).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING

from infershield.errors import LimitExceeded

if TYPE_CHECKING:
    from infershield.config import LimitsConfig
    from infershield.tokens import TokenCounter


def check_request_bytes(nbytes: int, limits: LimitsConfig) -> None:
    """The whole request (all tensors) against ``limits.max_request_bytes``: ``nbytes`` is
    what arrived where the caller's bytes are at hand (and go upstream as they are), else
    the parsed message's size."""
    if nbytes > limits.max_request_bytes:
        raise LimitExceeded(
            f"request is {nbytes} bytes; max_request_bytes is {limits.max_request_bytes}",
            limit="max_request_bytes",
        )


def check_batch_elements(n: int, limits: LimitsConfig) -> None:
    """The number of texts (batch elements) in one request."""
    if n > limits.max_batch_elements:
        raise LimitExceeded(
            f"request has {n} batch elements; max_batch_elements is {limits.max_batch_elements}",
            limit="max_batch_elements",
        )


def check_input_text(
    text: str | bytes, limits: LimitsConfig, counter: TokenCounter | None = None, *, index: int = 0
) -> int:
    """One input sequence: bytes first (cheap, bounds the tokenizer's work), then tokens.

    Returns the token count (0 when no counter is given). ``index`` is the batch element,
    named in the error so a caller can find the offending input.
    """
    nbytes = len(text) if isinstance(text, bytes) else _utf8_len(text)
    if nbytes > limits.max_text_bytes:
        raise LimitExceeded(
            f"input {index} is {nbytes} bytes; max_text_bytes is {limits.max_text_bytes}",
            limit="max_text_bytes",
        )
    if counter is None:
        return 0
    n = counter.count(text if isinstance(text, str) else text.decode("utf-8", "replace"))
    if n > limits.max_input_tokens:
        raise LimitExceeded(
            f"input {index} is {n} tokens; max_input_tokens is {limits.max_input_tokens}",
            limit="max_input_tokens",
        )
    return n


def check_inputs(
    texts: Iterable[str | bytes], limits: LimitsConfig, counter: TokenCounter | None = None
) -> list[int]:
    """Batch size, then every element's bytes and tokens. Returns per-element token counts."""
    items = list(texts)
    check_batch_elements(len(items), limits)
    return [check_input_text(t, limits, counter, index=i) for i, t in enumerate(items)]


def _utf8_len(text: str) -> int:
    # Lone surrogates (possible in str built from untrusted JSON) must not crash the count.
    return len(text.encode("utf-8", "surrogatepass"))


class OutputTokenMeter:
    """Counts output tokens cumulatively, across all chunks of a streamed response."""

    def __init__(self, limit: int, counter: TokenCounter) -> None:
        self.limit = limit
        self.counter = counter
        self.total = 0

    def add(self, text: str) -> int:
        """Count ``text`` into the running total; raise once it passes ``max_output_tokens``."""
        self.total += self.counter.count(text)
        if self.total > self.limit:
            raise LimitExceeded(
                f"response reached {self.total} tokens; max_output_tokens is {self.limit}",
                limit="max_output_tokens",
            )
        return self.total


def check_output_texts(
    texts: Iterable[str],
    limits: LimitsConfig,
    counter: TokenCounter,
    meter: OutputTokenMeter | None = None,
) -> int:
    """Each output element within ``max_output_tokens``; with a ``meter`` (one per streamed
    request) the count is cumulative across all the responses of that request. Returns the
    tokens counted in this call (what the per-caller token bucket is charged)."""
    total = 0
    for text in texts:
        if meter is not None:
            before = meter.total
            meter.add(text)
            total += meter.total - before
            continue
        n = counter.count(text)
        total += n
        if n > limits.max_output_tokens:
            raise LimitExceeded(
                f"response is {n} tokens; max_output_tokens is {limits.max_output_tokens}",
                limit="max_output_tokens",
            )
    return total
