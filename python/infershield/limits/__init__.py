"""Request limits, one module per concern; everything here is transport-free.

- :mod:`.deadline`: the request's deadline and the per-check budget;
- :mod:`.budgets`: size, batch and token budgets of one request;
- :mod:`.concurrency`: load shedding (running slots and a bounded queue);
- :mod:`.quarantine`: in-process quarantine of callers that keep getting blocked;
- :mod:`.breaker`: the circuit breaker around the upstream.

Every rejection is a :class:`~infershield.errors.FirewallError` that names the limit
(``LimitExceeded.limit``) or the stage (``DeadlineExceeded.stage``).
"""
