"""In-process quarantine of callers that keep getting blocked."""

from __future__ import annotations

import pytest

from infershield.limits.quarantine import Quarantine


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
