"""Backends that run the forward pass: ``triton`` (remote upstream) and ``local`` (embedded)."""

from __future__ import annotations

from infershield.backends.base import Backend, build_backend

__all__ = ["Backend", "build_backend"]
