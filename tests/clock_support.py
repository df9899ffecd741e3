"""A settable clock for tests of time-based limits.

Importable from tests as ``clock_support``.
"""

from __future__ import annotations


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now
