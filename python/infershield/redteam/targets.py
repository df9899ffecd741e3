"""What a battery is sent to: a policy run in-process, or a running gRPC endpoint."""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from infershield.errors import ConfigError

#: Endpoint status codes that mean the firewall stopped the request.
BLOCKED_CODES: frozenset[str] = frozenset({"PERMISSION_DENIED", "INVALID_ARGUMENT"})


@dataclass(frozen=True, slots=True)
class Outcome:
    """What happened to one text. ``blocked`` means it was stopped: a BLOCK verdict
    in-process, or a ``PERMISSION_DENIED``/``INVALID_ARGUMENT`` status from an endpoint.
    Any other status (``UNAVAILABLE``, ``DEADLINE_EXCEEDED`` …) is not a detection: it is
    recorded in ``code`` with ``blocked`` False, and the report counts it as an error.
    ``by`` names the blocking check when it is known."""

    blocked: bool
    latency_ms: float
    code: str = ""
    by: str = ""


class Target(Protocol):
    """Something that screens texts."""

    description: str

    def screen(self, texts: Sequence[str]) -> list[Outcome]: ...

    def close(self) -> None: ...


def _policy_path(policy: str) -> Path:
    from infershield.config import default_policy_path

    p = Path(policy).expanduser()
    if p.is_file():
        return p
    shipped = default_policy_path(policy)
    if shipped.is_file():
        return shipped
    raise ConfigError(f"--policy {policy}: no such file and no shipped policy of that name")


class PolicyTarget:
    """A policy file (or a shipped policy name such as ``default``) run in-process through its
    input pipeline. With ``batch_size`` 1 each latency is one request's; larger batches go
    through ``run_batch`` and each text is charged the batch time over its size."""

    def __init__(self, policy: str, *, batch_size: int = 1) -> None:
        from infershield.config import load_config
        from infershield.policy import Policy

        if batch_size < 1:
            raise ConfigError("--batch-size: must be at least 1")
        path = _policy_path(policy)
        self.description = f"policy {policy} (in-process)"
        self._policy = Policy.from_config(load_config(path))
        self._batch = batch_size

    def screen(self, texts: Sequence[str]) -> list[Outcome]:
        from infershield.checks.base import CheckContext

        out: list[Outcome] = []
        for i in range(0, len(texts), self._batch):
            chunk = texts[i : i + self._batch]
            t0 = time.perf_counter()
            results = self._policy.input.run_batch([CheckContext(text=t) for t in chunk])
            per = (time.perf_counter() - t0) * 1000.0 / len(chunk)
            for r in results:
                v = r.blocking_verdict
                out.append(Outcome(r.blocked, per, "", v.check if v is not None else ""))
        return out

    def close(self) -> None:
        self._policy.close()


class GrpcTarget:
    """A running Triton/KServe-v2 gRPC endpoint (an InferShield firewall or any other): each
    text goes as a ``[1, 1]`` BYTES tensor in one ``ModelInfer`` call, through tritonclient.
    The model's first BYTES input is used unless ``input_name`` names one."""

    def __init__(
        self, target: str, model: str, *, input_name: str | None = None, timeout_s: float = 30.0
    ) -> None:
        import tritonclient.grpc as tg
        from tritonclient.utils import InferenceServerException

        self.description = f"gRPC endpoint {target}, model {model}"
        self._tg = tg
        self._exc = InferenceServerException
        self._client = tg.InferenceServerClient(url=target)
        self._model = model
        self._timeout = timeout_s
        try:
            meta = self._client.get_model_metadata(model, as_json=True)
        except InferenceServerException as exc:
            self._client.close()
            raise ConfigError(f"--target {target}: cannot read model {model!r}: {exc}") from None
        inputs = [i for i in meta.get("inputs", []) if i.get("datatype") == "BYTES"]
        if input_name is not None:
            inputs = [i for i in inputs if i.get("name") == input_name]
        if not inputs:
            self._client.close()
            raise ConfigError(f"model {model!r} has no BYTES input {input_name or ''}".rstrip())
        self._input = str(inputs[0]["name"])
        dims = [int(d) for d in inputs[0].get("shape", ["-1"])]
        self._shape = [1 if d < 0 else d for d in dims] or [1]

    def _request(self, text: str) -> Any:
        import numpy as np

        inp = self._tg.InferInput(self._input, self._shape, "BYTES")
        inp.set_data_from_numpy(
            np.array([text.encode("utf-8", "surrogatepass")], dtype=object).reshape(self._shape)
        )
        return inp

    def screen(self, texts: Sequence[str]) -> list[Outcome]:
        out: list[Outcome] = []
        for text in texts:
            t0 = time.perf_counter()
            try:
                self._client.infer(self._model, [self._request(text)], client_timeout=self._timeout)
                out.append(Outcome(False, (time.perf_counter() - t0) * 1000.0))
            except self._exc as exc:
                code = str(exc.status() or "").removeprefix("StatusCode.")
                code = code or "UNKNOWN"
                elapsed = (time.perf_counter() - t0) * 1000.0
                out.append(Outcome(code in BLOCKED_CODES, elapsed, code))
        return out

    def close(self) -> None:
        self._client.close()
