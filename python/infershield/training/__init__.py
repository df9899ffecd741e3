"""Offline training and evaluation code (never imported by the runtime)."""
