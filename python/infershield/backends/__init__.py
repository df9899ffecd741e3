"""Backends that run the forward pass: ``triton`` (remote upstream) and ``local`` (embedded)."""

from __future__ import annotations

from infershield.backends.base import Backend, Unsupported, build_backend

__all__ = ["Backend", "Unsupported", "build_backend"]
