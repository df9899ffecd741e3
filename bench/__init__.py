"""InferShield benchmarks: one script per suite, run together by ``python -m bench.run``."""
