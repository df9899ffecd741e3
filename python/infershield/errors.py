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
    grpc_code = grpc.StatusCode.UNAUTHENTICATED


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
        return (("infershield-quarantined", f"{self.retry_after_s:.0f}"),)


class Blocked(FirewallError):
    """A check blocked the request or the response."""

    grpc_code = grpc.StatusCode.PERMISSION_DENIED

    def __init__(
        self,
        *,
        check: str,
        reason: str,
        categories: tuple[str, ...] = (),
        stage: str = "input",
        score: float = 1.0,
        role: str = "",
    ) -> None:
        cats = ",".join(categories) if categories else "none"
        where = f"{stage}, {role} message" if role else stage
        super().__init__(f"blocked by {check} on {where} (category: {cats}): {reason}")
        self.check = check
        self.reason = reason
        self.categories = categories
        self.stage = stage
        self.score = score
        #: The chat role of the message that was blocked (``tool``, ``document`` …), if any.
        self.role = role

    def trailing_metadata(self) -> tuple[tuple[str, str], ...]:
        md = (
            ("infershield-blocked-by", self.check),
            ("infershield-stage", self.stage),
            ("infershield-category", ",".join(self.categories)),
            ("infershield-reason", _ascii(self.reason)),
        )
        return (*md, ("infershield-role", _ascii(self.role))) if self.role else md


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


class UpstreamError(FirewallError):
    """The upstream answered with an error status; passed through with its code."""

    def __init__(self, message: str, code: grpc.StatusCode) -> None:
        super().__init__(message)
        self.grpc_code = code


def _ascii(text: str) -> str:
    # gRPC metadata values must be printable ASCII.
    return "".join(c if 32 <= ord(c) < 127 else "?" for c in text)[:256]
