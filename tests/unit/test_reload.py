"""Hot reload: atomic swap, deferred close, rejection of invalid policies, SIGHUP, file watch."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from infershield.checks.base import Check, CheckContext, register
from infershield.config import Config, load_config
from infershield.policy import Policy
from infershield.reload import PolicyHolder, PolicyWatcher
from infershield.verdict import Verdict


@dataclass(frozen=True, kw_only=True)
class ProbeOptions:
    marker: str = ""


@register("reload_probe")
class ProbeCheck(Check):
    """Allows everything and reports its marker; fails loudly if used after close."""

    Options = ProbeOptions
    closed: list[str] = []  # shared across instances on purpose

    def __init__(self, name: str, options: ProbeOptions) -> None:
        super().__init__(name, options)
        self.is_closed = False

    def check(self, ctx: CheckContext) -> Verdict:
        if self.is_closed:
            raise RuntimeError("used after close")
        return self.allow(reason=self.options.marker)

    def close(self) -> None:
        self.is_closed = True
        ProbeCheck.closed.append(self.options.marker)


def write_policy(path: Path, marker: str) -> None:
    path.write_text(
        f"policy:\n  input:\n    - type: reload_probe\n      options: {{marker: {marker}}}\n",
        encoding="utf-8",
    )


def marker_of(policy: Policy) -> str:
    return policy.input.run(CheckContext("hi")).verdicts[0].reason


@pytest.fixture
def policy_file(tmp_path: Path) -> Path:
    p = tmp_path / "policy.yaml"
    write_policy(p, "v1")
    return p


def make_holder(path: Path) -> PolicyHolder:
    def loader() -> Config:
        return load_config(path, env={})

    return PolicyHolder(Policy.from_config(loader()), loader=loader)


def test_reload_swaps_and_closes_old_after_inflight_requests(policy_file: Path) -> None:
    holder = make_holder(policy_file)
    ProbeCheck.closed.clear()
    with holder.acquire() as pinned:
        write_policy(policy_file, "v2")
        result = holder.reload()
        assert result.ok and result.generation == 2
        # The request that started on v1 still runs on v1, and v1 is still open.
        assert marker_of(pinned) == "v1"
        assert ProbeCheck.closed == []
        assert marker_of(holder.current) == "v2"
    assert ProbeCheck.closed == ["v1"]
    holder.close()
    assert ProbeCheck.closed == ["v1", "v2"]


@pytest.mark.parametrize(
    ("content", "reason"),
    [
        ("policy: [unclosed\n", "invalid YAML"),
        ("policy:\n  input:\n    - type: no_such_check\n", "unknown check type"),
        (
            "policy:\n  input:\n    - type: reload_probe\n      options: {marker: 3}\n",
            "expected a string",
        ),
        ("limits:\n  max_concurrency: 0\n", "must be positive"),
        ("", "empty"),
    ],
)
def test_invalid_reload_keeps_the_old_policy(
    policy_file: Path, content: str, reason: str, caplog: pytest.LogCaptureFixture
) -> None:
    holder = make_holder(policy_file)
    ProbeCheck.closed.clear()
    policy_file.write_text(content, encoding="utf-8")
    with caplog.at_level(logging.ERROR, logger="infershield.reload"):
        result = holder.reload()
    assert not result.ok
    assert reason in result.reason
    assert reason in caplog.text and "keeping generation 1" in caplog.text
    assert holder.generation == 1
    assert marker_of(holder.current) == "v1"
    assert ProbeCheck.closed == []
    assert holder.failed_reloads == 1


def test_builder_crash_is_rejected_too(policy_file: Path) -> None:
    def boom(config: Config) -> Policy:
        raise RuntimeError("onnx session failed")

    holder = PolicyHolder(
        Policy.from_config(load_config(policy_file, env={})),
        loader=lambda: load_config(policy_file, env={}),
        builder=boom,
    )
    result = holder.reload()
    assert not result.ok and "onnx session failed" in result.reason


def test_reload_under_load_never_serves_a_closed_or_partial_policy(policy_file: Path) -> None:
    holder = make_holder(policy_file)
    stop = threading.Event()
    errors: list[BaseException] = []
    served = 0

    def client() -> None:
        nonlocal served
        while not stop.is_set():
            try:
                with holder.acquire() as policy:
                    for _ in range(3):  # one request: several uses of one pinned policy
                        assert marker_of(policy).startswith("v")
                served += 1
            except BaseException as exc:
                errors.append(exc)
                return

    threads = [threading.Thread(target=client) for _ in range(4)]
    for t in threads:
        t.start()
    try:
        for i in range(2, 40):
            write_policy(policy_file, f"v{i}")
            assert holder.reload().ok
    finally:
        stop.set()
        for t in threads:
            t.join(10)
    assert errors == []
    assert served > 0
    assert holder.generation == 39


def test_watcher_reloads_on_change_only(policy_file: Path) -> None:
    holder = make_holder(policy_file)

    async def main() -> None:
        watcher = PolicyWatcher(holder, policy_file, interval_s=0.01)
        assert await watcher.poll_once() is None  # unchanged
        os.utime(policy_file, None)
        assert await watcher.poll_once() is None  # touched, same content
        write_policy(policy_file, "v2")
        result = await watcher.poll_once()
        assert result is not None and result.ok
        policy_file.write_text("policy: [broken\n", encoding="utf-8")
        bad = await watcher.poll_once()
        assert bad is not None and not bad.ok
        assert await watcher.poll_once() is None  # the same bad content is not retried
        write_policy(policy_file, "v3")
        # The background task picks the fix up by itself.
        task = asyncio.create_task(watcher.run())
        end = time.monotonic() + 5
        while holder.generation < 3 and time.monotonic() < end:
            await asyncio.sleep(0.01)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert marker_of(holder.current) == "v3"
        policy_file.unlink()
        assert await watcher.poll_once() is None  # a missing file keeps the live policy

    asyncio.run(main())


def test_sighup_reloads(policy_file: Path) -> None:
    holder = make_holder(policy_file)

    async def main() -> None:
        watcher = PolicyWatcher(holder, policy_file)
        watcher.install_sighup()
        try:
            write_policy(policy_file, "v2")
            os.kill(os.getpid(), signal.SIGHUP)
            end = time.monotonic() + 5
            while holder.generation < 2 and time.monotonic() < end:
                await asyncio.sleep(0.01)
        finally:
            watcher.remove_sighup()
        assert marker_of(holder.current) == "v2"
        assert watcher.last_result is not None and watcher.last_result.ok

    asyncio.run(main())


def test_restart_only_sections_are_logged(
    policy_file: Path, caplog: pytest.LogCaptureFixture
) -> None:
    holder = make_holder(policy_file)
    policy_file.write_text(policy_file.read_text() + "server:\n  listen: 127.0.0.1:9009\n")
    with caplog.at_level(logging.WARNING, logger="infershield.reload"):
        assert holder.reload().ok
    assert "'server'" in caplog.text and "restart" in caplog.text
