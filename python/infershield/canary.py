"""Canary tokens: random markers planted in the system prompt a request forwards.

A model that reveals its system prompt reveals the canary with it; the ``prompt_leak``
check blocks an output that carries the request's canary, as is or encoded. Each request
gets its own token, so a canary seen in one response cannot be replayed to silence another.
"""

from __future__ import annotations

import re
import secrets

PREFIX = "ISC-"
_SYSTEM_LINE = re.compile(r"^system: ", re.MULTILINE)


def new_canary() -> str:
    """A fresh random token (``ISC-`` and 16 hex digits: 64 bits)."""
    return PREFIX + secrets.token_hex(8)


def plant(prompt: str, token: str) -> str:
    """``prompt`` with ``token`` appended as a reference marker."""
    return f"{prompt}\n(ref: {token})" if prompt else f"(ref: {token})"


def plant_in_chat(rendered: str, token: str) -> str:
    """Plant ``token`` in the first ``system:`` message of a rendered chat (see
    :func:`infershield.firewall.render_chat`), or in a new system line on top."""
    m = _SYSTEM_LINE.search(rendered)
    if m is None:
        return f"system: (ref: {token})\n{rendered}"
    return f"{rendered[: m.end()]}(ref: {token}) {rendered[m.end() :]}"
