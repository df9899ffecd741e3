"""Checks: one per file under ``input/`` and ``output/``; see :mod:`infershield.checks.base`."""

from infershield.checks.base import Check, CheckContext, known_types, register, resolve

__all__ = ["Check", "CheckContext", "known_types", "register", "resolve"]
