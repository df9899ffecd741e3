"""The classifier's forward pass on a Triton server (``classifier.backend: triton``).

Tokenising, windowing, the prefilter cascade and the threshold stay in the firewall; only the
padded token windows travel, over gRPC, to the model that ``infershield models export-triton``
wrote into a Triton model repository, and its logits come back. Every failure is a
:class:`DetectorUnavailable`, which the classifier check turns into a block: a detector that
cannot answer never lets a request through.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import grpc
import numpy as np
import numpy.typing as npt

from infershield.errors import BackendUnavailable, ConfigError

if TYPE_CHECKING:
    from infershield.config import BackendTlsConfig

log = logging.getLogger(__name__)

I64 = npt.NDArray[np.int64]
F32 = npt.NDArray[np.float32]

#: Triton datatype names of the numpy dtypes the classifier's graph uses.
_NP_TO_TRITON = {np.dtype(np.int64): "INT64", np.dtype(np.int32): "INT32"}
_TRITON_TO_NP = {"FP32": np.float32, "FP16": np.float16, "FP64": np.float64}
#: The inputs the classifier feeds (``token_type_ids`` as zeros).
_FED_INPUTS = frozenset({"input_ids", "attention_mask", "token_type_ids"})


class DetectorUnavailable(BackendUnavailable):
    """The remote detector model could not score a batch (unreachable, erroring, misfit)."""


class TritonModel:
    """A sequence-classification model served by Triton: ``forward(feeds) -> logits``.

    One blocking gRPC channel, shared by every caller (the classifier's batching thread, or
    a pipeline worker thread scoring inline); grpc waits for the answer outside the GIL.
    The model's inputs, output and batch limit are read from Triton's model metadata and
    config on first use (and again after a failure, as the model may have been reloaded).
    """

    def __init__(
        self,
        target: str,
        model: str,
        *,
        version: str = "",
        timeout_s: float = 5.0,
        tls: BackendTlsConfig | None = None,
        max_message_bytes: int = 256 * 2**20,
    ) -> None:
        from tritonclient.grpc import service_pb2_grpc as pb_grpc

        from infershield.backends.triton import parse_upstream

        if not model:
            raise ConfigError("classifier.triton.model: name the detector model")
        if timeout_s <= 0:
            raise ConfigError("classifier.triton.timeout_s: must be > 0")
        self.target = parse_upstream(target)
        self.model, self.version, self.timeout_s = model, version, timeout_s
        opts: list[tuple[str, Any]] = [
            ("grpc.max_send_message_length", max_message_bytes),
            ("grpc.max_receive_message_length", max_message_bytes),
            ("grpc.keepalive_time_ms", 30_000),
            ("grpc.keepalive_permit_without_calls", 1),
            # Reconnect quickly once the detector is back (grpc's default backoff grows
            # to two minutes, during which every request would be blocked).
            ("grpc.initial_reconnect_backoff_ms", 100),
            ("grpc.min_reconnect_backoff_ms", 100),
            ("grpc.max_reconnect_backoff_ms", 1000),
        ]
        if tls is not None and (tls.enabled or tls.ca or tls.cert):
            from infershield.auth.tls import channel_credentials

            if tls.server_name:
                opts.append(("grpc.ssl_target_name_override", tls.server_name))
            self._channel = grpc.secure_channel(self.target, channel_credentials(tls), opts)
            self.tls = True
        else:
            self._channel = grpc.insecure_channel(self.target, opts)
            self.tls = False
        self._stub = pb_grpc.GRPCInferenceServiceStub(self._channel)  # type: ignore[no-untyped-call]
        self._lock = threading.Lock()
        self.inputs: dict[str, str] | None = None  # name -> Triton datatype
        self.output = ""
        self.max_batch = 0  # 0: the model takes no batch dimension limit from its config

    @property
    def where(self) -> str:
        """``host:port/model[/version]``, for messages."""
        return f"{self.target}/{self.model}" + (f"/{self.version}" if self.version else "")

    # ------------------------------------------------------------------ metadata

    def describe(self) -> None:
        """Read the model's inputs, output and ``max_batch_size`` from Triton.

        A model that lacks ``input_ids``/``attention_mask`` or a float output is a
        ConfigError (the wrong model); an unreachable one is a DetectorUnavailable.
        """
        from tritonclient.grpc import service_pb2 as pb

        try:
            meta = self._stub.ModelMetadata(
                pb.ModelMetadataRequest(name=self.model, version=self.version),
                timeout=self.timeout_s)
            cfg = self._stub.ModelConfig(
                pb.ModelConfigRequest(name=self.model, version=self.version),
                timeout=self.timeout_s)
        except grpc.RpcError as exc:
            raise self._unavailable(exc) from None
        inputs = {t.name: t.datatype for t in meta.inputs}
        if not {"input_ids", "attention_mask"} <= inputs.keys():
            raise ConfigError(
                f"detector model {self.where}: needs input_ids and attention_mask inputs, "
                f"has {sorted(inputs)}")
        # Any other input would fail every request (the classifier feeds only these).
        extra = sorted(inputs.keys() - _FED_INPUTS)
        if extra:
            raise ConfigError(
                f"detector model {self.where}: has inputs the classifier does not feed: "
                f"{extra} (it feeds {sorted(_FED_INPUTS)})")
        bad = {n: d for n, d in inputs.items() if d not in _NP_TO_TRITON.values()}
        if bad:
            raise ConfigError(f"detector model {self.where}: inputs must be INT64/INT32, got {bad}")
        outputs = [t for t in meta.outputs if t.datatype in _TRITON_TO_NP]
        if not outputs:
            raise ConfigError(f"detector model {self.where}: has no float (logits) output")
        with self._lock:
            self.inputs = inputs
            self.output = outputs[0].name
            self.max_batch = int(cfg.config.max_batch_size)

    def _unavailable(self, exc: grpc.RpcError) -> DetectorUnavailable:
        code = exc.code() if isinstance(exc, grpc.Call) else None
        details = exc.details() if isinstance(exc, grpc.Call) else str(exc)
        name = code.name if code is not None else "ERROR"
        log.warning("detector model %s failed: %s: %s", self.where, name, details)
        # What a verdict shows (callers may see it): the model and the status, not the
        # detector's address or Triton's own message, which only the log keeps.
        return DetectorUnavailable(f"detector model {self.model}: {name}")

    # ------------------------------------------------------------------ inference

    def forward(self, feeds: Mapping[str, I64]) -> F32:
        """Logits for a padded batch (rows = windows); split to the model's batch limit."""
        if self.inputs is None:
            try:
                self.describe()
            except ConfigError as exc:  # reloaded as another model: block, as when down
                log.warning("%s", exc)
                raise DetectorUnavailable(f"detector model {self.model}: wrong model") from None
        rows = len(next(iter(feeds.values())))
        step = self.max_batch if self.max_batch > 0 else rows
        parts = [self._infer({k: v[i : i + step] for k, v in feeds.items()})
                 for i in range(0, rows, step)]
        return parts[0] if len(parts) == 1 else np.concatenate(parts)

    def _infer(self, feeds: Mapping[str, I64]) -> F32:
        from tritonclient.grpc import service_pb2 as pb

        inputs = self.inputs or {}
        req = pb.ModelInferRequest(model_name=self.model, model_version=self.version)
        for name, dtype in inputs.items():
            if name in feeds:
                arr = feeds[name]
            elif name == "token_type_ids":
                arr = np.zeros_like(feeds["input_ids"])
            else:  # describe() refuses such a model; reloaded since: block, as when down
                self.inputs = None
                raise DetectorUnavailable(f"detector model {self.model}: wrong model")
            arr = np.ascontiguousarray(arr, np.int32 if dtype == "INT32" else np.int64)
            req.inputs.add(name=name, datatype=dtype, shape=list(arr.shape))
            req.raw_input_contents.append(arr.tobytes())
        req.outputs.add(name=self.output)
        try:
            resp = self._stub.ModelInfer(req, timeout=self.timeout_s)
        except grpc.RpcError as exc:
            # The model may have been reloaded with other inputs: read them again next time.
            self.inputs = None
            raise self._unavailable(exc) from None
        try:
            out = next(t for t in resp.outputs if t.name == self.output)
            idx = list(resp.outputs).index(out)
            logits = np.frombuffer(resp.raw_output_contents[idx], _TRITON_TO_NP[out.datatype])
            logits = logits.reshape(tuple(out.shape)).astype(np.float32)
            # One row of finite logits per window sent: numpy would spread a lone row over
            # the whole batch, and a NaN score would leave the block to ``on_error``.
            rows = len(next(iter(feeds.values())))
            if logits.ndim != 2 or logits.shape[0] != rows:
                raise ValueError(f"logits of shape {logits.shape} for {rows} windows")
            if not np.isfinite(logits).all():
                raise ValueError("non-finite logits")
            return logits
        except (StopIteration, IndexError, KeyError, ValueError) as exc:
            log.warning("detector model %s returned a malformed answer (%s)", self.where, exc)
            raise DetectorUnavailable(f"detector model {self.model}: malformed answer") from None

    def close(self) -> None:
        self._channel.close()
