"""Hot reload of the policy: load, validate, build, then swap atomically.

Requests take the current policy once, at their start, with :meth:`PolicyHolder.acquire`,
and keep using that object to the end: a swap is one reference assignment, so no request
ever sees a half-built policy, and none is dropped. The old policy is closed (ONNX sessions,
scratch spaces released) only once the last request that holds it has finished.

A new policy that fails to load or build is rejected with a logged reason; the old one
stays. Reloads are triggered by SIGHUP (:meth:`PolicyWatcher.install_sighup`) or by the
policy file changing on disk (:meth:`PolicyWatcher.run` polls its mtime, size and hash).
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import hashlib
import logging
import signal
import threading
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from infershield.errors import ConfigError

if TYPE_CHECKING:
    from infershield.config import Config
    from infershield.policy import Policy

log = logging.getLogger(__name__)

#: The policy pinned for the request running in this context (see PolicyHolder.pin).
_PINNED: contextvars.ContextVar[Policy | None] = contextvars.ContextVar(
    "infershield_pinned_policy", default=None
)


def pinned_policy() -> Policy | None:
    """The policy the current request pinned with :meth:`PolicyHolder.pin`, if any.

    Context variables follow ``await`` and ``asyncio.to_thread``, so everything a request
    does sees the policy it started with.
    """
    return _PINNED.get()


@dataclass(frozen=True, slots=True)
class ReloadResult:
    """What one reload attempt did; ``reason`` says why it was rejected."""

    ok: bool
    generation: int
    reason: str = ""


class _Generation:
    __slots__ = ("number", "policy", "refs", "retired")

    def __init__(self, number: int, policy: Policy) -> None:
        self.number = number
        self.policy = policy
        self.refs = 0
        self.retired = False


def _build_policy(config: Config) -> Policy:
    from infershield.policy import Policy

    return Policy.from_config(config)


class PolicyHolder:
    """Holds the live :class:`~infershield.policy.Policy` and swaps it on reload.

    ``loader`` re-reads the configuration (file, env and CLI overrides: the same precedence
    as at start-up); ``builder`` turns it into a policy (``Policy.from_config``). Both run in
    the thread that calls :meth:`reload`; the server calls it through ``asyncio.to_thread``
    so building a policy (compiling rules, loading models) never blocks requests.
    """

    def __init__(
        self,
        policy: Policy,
        *,
        loader: Callable[[], Config],
        builder: Callable[[Config], Policy] = _build_policy,
        on_swap: Callable[[Policy], object] | None = None,
    ) -> None:
        self._loader = loader
        self._builder = builder
        self._on_swap = on_swap
        self._lock = threading.Lock()  # guards refcounts and the current generation
        self._reload_lock = threading.Lock()  # one reload at a time
        self._current = _Generation(1, policy)
        self.failed_reloads = 0

    @property
    def current(self) -> Policy:
        """The live policy (for code that does not span a request; requests use acquire)."""
        return self._current.policy

    @property
    def generation(self) -> int:
        return self._current.number

    @contextlib.contextmanager
    def acquire(self) -> Iterator[Policy]:
        """Pin the current policy for one request: it stays open until the block ends."""
        with self._lock:
            gen = self._current
            gen.refs += 1
        try:
            yield gen.policy
        finally:
            with self._lock:
                gen.refs -= 1
                close = gen.retired and gen.refs == 0
            if close:
                _close(gen)

    @contextlib.contextmanager
    def pin(self) -> Iterator[Policy]:
        """:meth:`acquire`, and make the policy :func:`pinned_policy` for this context."""
        with self.acquire() as policy:
            token = _PINNED.set(policy)
            try:
                yield policy
            finally:
                _PINNED.reset(token)

    def reload(self) -> ReloadResult:
        """Load, validate and build a new policy, then swap it in; the old one stays on error."""
        with self._reload_lock:
            number = self._current.number
            try:
                config = self._loader()
                policy = self._builder(config)
            except ConfigError as exc:
                return self._reject(number, exc.message)
            except Exception as exc:  # anything else while building must not kill the server
                return self._reject(number, f"{type(exc).__name__}: {exc}")
            self._warn_restart_only(config)
            return self.swap(policy)

    def swap(self, policy: Policy) -> ReloadResult:
        """Make ``policy`` live; the previous one closes after its last request."""
        with self._lock:
            old = self._current
            self._current = _Generation(old.number + 1, policy)  # the atomic swap
            old.retired = True
            close = old.refs == 0
            number = self._current.number
            if self._on_swap is not None:
                self._on_swap(policy)  # e.g. the Firewall's own reference, under the same lock
        if close:
            _close(old)
        log.info("policy reloaded: generation %d is live", number)
        _count_reload("ok")
        return ReloadResult(True, number)

    def _reject(self, number: int, reason: str) -> ReloadResult:
        self.failed_reloads += 1
        _count_reload("rejected")
        log.error("policy reload rejected, keeping generation %d: %s", number, reason)
        return ReloadResult(False, number, reason)

    def _warn_restart_only(self, config: Config) -> None:
        old = self._current.policy.config
        for section in ("server", "backend", "auth"):
            if getattr(old, section) != getattr(config, section):
                log.warning(
                    "policy reload: changes to %r take effect only after a restart", section
                )

    def close(self) -> None:
        """Close the live policy (at shutdown, after requests have drained)."""
        with self._lock:
            gen = self._current
            gen.retired = True
            close = gen.refs == 0
        if close:
            _close(gen)


def _count_reload(result: str) -> None:
    from infershield.telemetry import metrics

    m = metrics.active()
    if m is not None:
        m.policy_reloads.labels(result).inc()


def _close(gen: _Generation) -> None:
    try:
        gen.policy.close()
    except Exception:
        log.exception("closing policy generation %d failed", gen.number)


def file_fingerprint(path: Path) -> tuple[int, int, str] | None:
    """(mtime_ns, size, sha256) of a file, or None when it cannot be read right now."""
    try:
        st = path.stat()
        digest = hashlib.sha256(path.read_bytes()).hexdigest()
    except OSError:
        return None
    return (st.st_mtime_ns, st.st_size, digest)


class PolicyWatcher:
    """Reloads a :class:`PolicyHolder` on SIGHUP and when the policy file changes.

    The file is polled every ``interval_s``: a cheap ``stat`` each time, a hash only when
    mtime or size moved, and a reload only when the content hash differs from the last one
    tried. So a half-written file that fails to load is retried once it changes again, and
    an invalid file is not re-reported on every poll. SIGHUP always reloads.
    """

    def __init__(
        self, holder: PolicyHolder, path: str | Path | None, *, interval_s: float = 1.0
    ) -> None:
        self.holder = holder
        self.path = Path(path) if path is not None else None
        self.interval_s = interval_s
        self._last = file_fingerprint(self.path) if self.path is not None else None
        self._lock: asyncio.Lock | None = None
        self._tasks: set[asyncio.Task[object]] = set()
        self._also: Callable[[], Awaitable[None]] | None = None
        self.last_result: ReloadResult | None = None

    async def reload_now(self) -> ReloadResult:
        """Run one reload off the event loop (one at a time)."""
        if self._lock is None:
            self._lock = asyncio.Lock()
        async with self._lock:
            result = await asyncio.to_thread(self.holder.reload)
        self.last_result = result
        return result

    def install_sighup(
        self,
        loop: asyncio.AbstractEventLoop | None = None,
        *,
        also: Callable[[], Awaitable[None]] | None = None,
    ) -> None:
        """Reload on SIGHUP (Unix, main thread only: that is where asyncio allows it);
        ``also`` runs too (the server reloads its keys and certificates there)."""
        loop = loop or asyncio.get_running_loop()
        self._also = also
        loop.add_signal_handler(signal.SIGHUP, self._on_sighup)

    def remove_sighup(self, loop: asyncio.AbstractEventLoop | None = None) -> None:
        loop = loop or asyncio.get_running_loop()
        loop.remove_signal_handler(signal.SIGHUP)

    def _on_sighup(self) -> None:
        log.info("SIGHUP: reloading the policy")
        if self.path is not None:
            self._last = file_fingerprint(self.path)
        loop = asyncio.get_running_loop()
        tasks: list[asyncio.Task[object]] = [loop.create_task(self.reload_now())]
        if self._also is not None:
            tasks.append(loop.create_task(self._also()))  # type: ignore[arg-type]
        for task in tasks:
            self._tasks.add(task)  # keep a reference until done, or the task may be collected
            task.add_done_callback(self._tasks.discard)

    async def poll_once(self) -> ReloadResult | None:
        """Reload if the file's content changed since the last attempt; None if unchanged."""
        if self.path is None:
            return None
        try:
            st = self.path.stat()
        except OSError:
            return None  # removed or being replaced: keep the live policy, look again later
        if self._last is not None and (st.st_mtime_ns, st.st_size) == self._last[:2]:
            return None
        fp = await asyncio.to_thread(file_fingerprint, self.path)
        if fp is None:
            return None
        if self._last is not None and fp[2] == self._last[2]:
            self._last = fp  # touched, not changed
            return None
        self._last = fp
        log.info("policy file %s changed: reloading", self.path)
        return await self.reload_now()

    async def run(self) -> None:
        """Poll the policy file until cancelled (run it as a background task)."""
        if self.path is None:
            return
        while True:
            await asyncio.sleep(self.interval_s)
            try:
                await self.poll_once()
            except asyncio.CancelledError:
                raise
            except Exception:  # the watcher must outlive any one bad poll
                log.exception("policy file watch failed")
