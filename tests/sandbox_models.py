"""Model factories for the sandbox tests; imported inside spawned workers.

Each factory returns a model function taking and returning a mapping. They misbehave on
purpose (sleep, allocate, spin, crash) so the tests can check that only the offending
request fails.
"""

from __future__ import annotations

import os
import time
from collections.abc import Mapping
from typing import Any

Model = Any


def echo() -> Model:
    def run(inputs: Mapping[str, Any]) -> Mapping[str, Any]:
        return {"out": inputs.get("x"), "pid": os.getpid()}

    return run


def sleepy() -> Model:
    def run(inputs: Mapping[str, Any]) -> Mapping[str, Any]:
        time.sleep(float(inputs["seconds"]))
        return {"slept": inputs["seconds"], "pid": os.getpid()}

    return run


def hog() -> Model:
    def run(inputs: Mapping[str, Any]) -> Mapping[str, Any]:
        block = bytearray(int(inputs["mb"]) * 1024 * 1024)
        return {"allocated": len(block)}

    return run


def spin() -> Model:
    def run(inputs: Mapping[str, Any]) -> Mapping[str, Any]:
        end = time.monotonic() + float(inputs["seconds"])
        n = 0
        while time.monotonic() < end:
            n += 1
        return {"n": n}

    return run


def suicide() -> Model:
    """Kills its own worker with the given signal mid-request (SIGSEGV, SIGKILL …)."""

    def run(inputs: Mapping[str, Any]) -> Mapping[str, Any]:
        os.kill(os.getpid(), int(inputs["signal"]))
        time.sleep(5)
        return {}

    return run


def raises() -> Model:
    def run(inputs: Mapping[str, Any]) -> Mapping[str, Any]:
        raise ValueError("the model is unhappy")

    return run


def rejects() -> Model:
    from infershield.errors import InvalidRequest

    def run(inputs: Mapping[str, Any]) -> Mapping[str, Any]:
        raise InvalidRequest("input 'x' must be a string")

    return run


def broken_loader() -> Model:
    raise RuntimeError("weights file is corrupt")


def text_toy() -> Model:
    """A Triton-style text model (``TEXT`` in, ``OUTPUT`` out) whose behaviour the text picks:
    ``sleep:<s>`` sleeps, ``hog:<mb>`` allocates, anything else is echoed back."""

    def run(inputs: Mapping[str, Any]) -> Mapping[str, Any]:
        import numpy as np

        arr = np.asarray(inputs["TEXT"], dtype=object)
        first = arr.reshape(-1)[0]
        text = first.decode() if isinstance(first, bytes) else str(first)
        verb, _, arg = text.partition(":")
        if verb == "sleep":
            time.sleep(float(arg))
        elif verb == "hog":
            block = bytearray(int(arg) * 1024 * 1024)
            del block
        out = np.array(
            [b"echo: " + (e if isinstance(e, bytes) else str(e).encode()) for e in arr.reshape(-1)],
            dtype=object,
        )
        return {"OUTPUT": out.reshape(arr.shape)}

    return run
