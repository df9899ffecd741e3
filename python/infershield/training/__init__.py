"""Offline model training and evaluation (never imported by the serving path)."""
