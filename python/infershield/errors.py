"""Domain errors. Each carries the gRPC status code it maps to; one interceptor maps them."""

from __future__ import annotations

import grpc


class FirewallError(Exception):
    """Base of every error the firewall reports to a caller.

    ``message`` is safe to show to clients: it never holds internals or raw prompt text.
    """

    grpc_code: grpc.StatusCode = grpc.StatusCode.INTERNAL

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def trailing_metadata(self) -> tuple[tuple[str, str], ...]:
        """Extra metadata for the caller (e.g. which check blocked)."""
        return ()


class ConfigError(FirewallError):
    """A configuration or policy is invalid; raised at start-up or on reload."""

    grpc_code = grpc.StatusCode.FAILED_PRECONDITION


class InvalidRequest(FirewallError):
    """The request is malformed (bad tensor, bad UTF-8, missing input …)."""

    grpc_code = grpc.StatusCode.INVALID_ARGUMENT


class NotFound(FirewallError):
    """An unknown model or resource."""

    grpc_code = grpc.StatusCode.NOT_FOUND


class LimitExceeded(FirewallError):
    """A size, token, batch, concurrency or rate limit was exceeded; names the limit."""

    grpc_code = grpc.StatusCode.RESOURCE_EXHAUSTED

    def __init__(self, message: str, *, limit: str, retry_after_s: float | None = None) -> None:
        super().__init__(message)
        self.limit = limit
        #: For load shedding (``max_queue``, ``rate``): when a retry may succeed, in seconds.
        self.retry_after_s = retry_after_s

    def trailing_metadata(self) -> tuple[tuple[str, str], ...]:
        if self.retry_after_s is None:
            return (("infershield-limit", self.limit),)
        # Seconds with millisecond resolution: a shed request may retry well within 1 s.
        return (("infershield-limit", self.limit), ("retry-after", f"{self.retry_after_s:.3f}"))


class Unauthenticated(FirewallError):
    """No credentials, or credentials the server does not know (an unknown or revoked key)."""

    grpc_code = grpc.StatusCode.UNAUTHENTICATED


class AccessDenied(FirewallError):
    """A known caller asked for something it may not have: a model outside its list, an RPC
    its roles do not cover, or a call from an address outside ``server.allow_cidrs``.
    ``what`` (``model``, ``role``, ``address``, ``service``) goes to the trailers."""

    grpc_code = grpc.StatusCode.PERMISSION_DENIED

    def __init__(self, message: str, *, what: str) -> None:
        super().__init__(message)
        self.what = what

    def trailing_metadata(self) -> tuple[tuple[str, str], ...]:
        return (("infershield-denied", self.what),)


class PermissionDenied(FirewallError):
    """An operation the policy does not allow (admin RPCs, shared memory …)."""

    grpc_code = grpc.StatusCode.PERMISSION_DENIED


class Quarantined(FirewallError):
    """The caller is quarantined after repeated blocked requests (automated response)."""

    grpc_code = grpc.StatusCode.PERMISSION_DENIED

    def __init__(self, message: str, *, retry_after_s: float) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s

    def trailing_metadata(self) -> tuple[tuple[str, str], ...]:
        return (
            ("infershield-quarantined", f"{self.retry_after_s:.0f}"),
            ("retry-after", _seconds(self.retry_after_s)),
        )


class Blocked(FirewallError):
    """A check blocked the request or the response.

    By default the caller learns the stage and the category only (``blocked on input
    (category: injection)``): naming the check and the rules that matched would let an
    attacker iterate against them. ``explain=True`` (``policy.explain_blocks``) adds the
    check and its reason to the message and the trailers. ``details`` (rule ids …) is for
    the audit log and the trace, never for the caller.
    """

    grpc_code = grpc.StatusCode.PERMISSION_DENIED

    def __init__(
        self,
        *,
        check: str,
        reason: str,
        categories: tuple[str, ...] = (),
        stage: str = "input",
        score: float = 1.0,
        explain: bool = False,
        details: tuple[tuple[str, str], ...] = (),
        role: str = "",
    ) -> None:
        cats = ",".join(categories) if categories else "none"
        # The role (``tool``, ``document``) says where an attack came from, not how it was
        # caught, so even a terse message carries it.
        where = f"{stage}, {role} message" if role else stage
        if explain:
            message = f"blocked by {check} on {where} (category: {cats}): {reason}"
        else:
            message = f"blocked on {where} (category: {cats})"
        super().__init__(message)
        self.check = check
        self.reason = reason
        self.categories = categories
        self.stage = stage
        self.score = score
        self.explain = explain
        self.details = details
        #: The chat role of the message that was blocked (``tool``, ``document`` …), if any.
        self.role = role

    def trailing_metadata(self) -> tuple[tuple[str, str], ...]:
        out: tuple[tuple[str, str], ...] = (
            ("infershield-stage", self.stage),
            ("infershield-category", ",".join(self.categories)),
        )
        if self.role:
            out = (*out, ("infershield-role", _ascii(self.role)))
        if not self.explain:
            return out
        return (
            ("infershield-blocked-by", self.check),
            *out,
            ("infershield-reason", _ascii(self.reason)),
        )


class BackendUnavailable(FirewallError):
    grpc_code = grpc.StatusCode.UNAVAILABLE


class DeadlineExceeded(FirewallError):
    """A deadline ran out; names the stage (a check, the upstream, the worker)."""

    grpc_code = grpc.StatusCode.DEADLINE_EXCEEDED

    def __init__(self, message: str, *, stage: str) -> None:
        super().__init__(message)
        self.stage = stage

    def trailing_metadata(self) -> tuple[tuple[str, str], ...]:
        return (("infershield-stage", self.stage),)


class Unsupported(FirewallError):
    """The backend does not implement this RPC (e.g. shared memory on the local backend)."""

    grpc_code = grpc.StatusCode.UNIMPLEMENTED


class ModelError(FirewallError):
    """The model itself raised while running (in a sandbox worker, which stays healthy)."""

    grpc_code = grpc.StatusCode.INTERNAL


class UpstreamError(FirewallError):
    """The upstream answered with an error status; passed through with its code.

    The core asks what the status means (:attr:`unknown_model`, :attr:`unhealthy`) instead of
    reading gRPC codes itself.
    """

    def __init__(self, message: str, code: grpc.StatusCode) -> None:
        super().__init__(message)
        self.grpc_code = code

    @property
    def unknown_model(self) -> bool:
        """The upstream has no such model or version (Triton answers INVALID_ARGUMENT for an
        unknown version)."""
        return self.grpc_code in (grpc.StatusCode.NOT_FOUND, grpc.StatusCode.INVALID_ARGUMENT)

    @property
    def unhealthy(self) -> bool:
        """The status says the upstream itself is failing, not that the request was bad."""
        return self.grpc_code in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.INTERNAL)


def _seconds(value: float) -> str:
    # Millisecond resolution: a 50/s bucket refills in 0.020s, which whole seconds would hide.
    return f"{max(0.0, min(value, 86400.0)):.3f}"


def _ascii(text: str) -> str:
    # gRPC metadata values must be printable ASCII.
    return "".join(c if 32 <= ord(c) < 127 else "?" for c in text)[:256]
