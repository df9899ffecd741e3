"""The ``local`` backend: ONNX models from a Triton-layout repository, run in sandboxed workers.

Repository layout (Triton's, with a small YAML config in place of ``config.pbtxt``)::

    <repo>/<model>/config.yaml          optional; see LocalModelConfig
    <repo>/<model>/tokenizer.json       when the model takes text (see text_input)
    <repo>/<model>/<version>/model.onnx one directory per numeric version

The backend answers the Triton RPCs a client needs (liveness, readiness, model metadata and
config, inference, streaming) the way Triton answers them for the same model, so the drop-in
API and ``tritonclient`` work unchanged. Forward passes run in the sandbox worker pool
(:mod:`infershield.backends.sandbox`): a misbehaving model cannot take the firewall down.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass
from importlib import metadata as importlib_metadata
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from tritonclient.grpc import model_config_pb2 as mc
from tritonclient.grpc import service_pb2 as pb

from infershield.backends.base import Backend
from infershield.backends.sandbox import ModelSpec, WorkerPool
from infershield.backends.tensors import input_array, numpy_datatype, raw_array
from infershield.call import CallContext
from infershield.config import build, read_yaml
from infershield.errors import (
    BackendUnavailable,
    ConfigError,
    FirewallError,
    InvalidRequest,
    NotFound,
    Unsupported,
)

if TYPE_CHECKING:
    from infershield.config import Config

log = logging.getLogger(__name__)
CONFIG_FILE = "config.yaml"


@dataclass(frozen=True, kw_only=True)
class TextInputConfig:
    """A BYTES input the backend tokenises into the graph's ``input_ids``/``attention_mask``."""

    name: str = "TEXT"
    tokenizer: str = "tokenizer.json"
    max_length: int = 256


@dataclass(frozen=True, kw_only=True)
class LocalModelConfig:
    """``<repo>/<model>/config.yaml``.

    ``max_batch_size`` > 0 means the first dimension of every input and output is the batch
    (Triton's convention): metadata shows it as -1 and a request may hold up to this many rows.
    """

    max_batch_size: int = 0
    text_input: TextInputConfig | None = None


@dataclass(frozen=True, slots=True)
class TensorSpec:
    name: str
    datatype: str
    #: Dimensions without the batch dimension; -1 is variable.
    dims: tuple[int, ...]


@dataclass(frozen=True, slots=True)
class LocalModel:
    """One loaded model version, as the RPCs describe it."""

    name: str
    version: str
    config: LocalModelConfig
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]
    spec: ModelSpec

    @property
    def key(self) -> str:
        return f"{self.name}/{self.version}"

    def shape(self, t: TensorSpec) -> list[int]:
        return ([-1] if self.config.max_batch_size > 0 else []) + list(t.dims)


def _onnx_signature(path: Path, batched: bool) -> tuple[list[TensorSpec], list[TensorSpec]]:
    import onnx
    from onnx import helper

    model = onnx.load(str(path), load_external_data=False)
    inits = {i.name for i in model.graph.initializer}

    def spec(v: Any) -> TensorSpec:
        tt = v.type.tensor_type
        np_dtype = helper.tensor_dtype_to_np_dtype(tt.elem_type)
        dims = tuple(d.dim_value if d.HasField("dim_value") else -1 for d in tt.shape.dim)
        if not tt.HasField("shape"):
            dims = (-1,)
        if batched:
            dims = dims[1:]
        return TensorSpec(v.name, numpy_datatype(np.empty(0, dtype=np_dtype)), dims)

    ins = [spec(v) for v in model.graph.input if v.name not in inits]
    outs = [spec(v) for v in model.graph.output]
    return ins, outs


def load_repository(repo: Path) -> dict[str, dict[str, LocalModel]]:
    """Scan a repository: model name -> version -> LocalModel. Errors name the path."""
    from infershield.backends.local_model import TOKEN_INPUTS

    if not repo.is_dir():
        raise ConfigError(f"backend.model_repository: {repo} is not a directory")
    models: dict[str, dict[str, LocalModel]] = {}
    for model_dir in sorted(p for p in repo.iterdir() if p.is_dir() and not p.name.startswith(".")):
        cfg_path = model_dir / CONFIG_FILE
        raw = read_yaml(cfg_path) if cfg_path.is_file() else {}
        cfg = build(LocalModelConfig, raw, str(cfg_path))
        versions = sorted(
            (p for p in model_dir.iterdir() if p.name.isdigit() and (p / "model.onnx").is_file()),
            key=lambda p: int(p.name),
        )
        if not versions:
            raise ConfigError(f"{model_dir}: no <version>/model.onnx")
        for vdir in versions:
            onnx_path = vdir / "model.onnx"
            ins, outs = _onnx_signature(onnx_path, cfg.max_batch_size > 0)
            ti = cfg.text_input
            if ti is not None:
                tok = model_dir / ti.tokenizer
                if not tok.is_file():
                    raise ConfigError(f"{cfg_path}: text_input.tokenizer {tok} not found")
                unknown = [i.name for i in ins if i.name not in TOKEN_INPUTS]
                if unknown:
                    raise ConfigError(
                        f"{cfg_path}: text_input is set but the graph also needs {unknown}"
                    )
                ins = [TensorSpec(ti.name, "BYTES", (1,) if cfg.max_batch_size > 0 else (-1,))]
                spec = ModelSpec(
                    factory="infershield.backends.local_model:text_onnx_model",
                    args=(str(onnx_path.resolve()), str(tok.resolve()), ti.name, ti.max_length),
                )
            else:
                spec = ModelSpec(
                    factory="infershield.backends.local_model:onnx_model",
                    args=(str(onnx_path.resolve()),),
                )
            models.setdefault(model_dir.name, {})[vdir.name] = LocalModel(
                model_dir.name, vdir.name, cfg, tuple(ins), tuple(outs), spec
            )
    if not models:
        raise ConfigError(f"backend.model_repository: {repo} holds no models")
    return models


def _config_dtype(datatype: str) -> int:
    return int(mc.DataType.Value("TYPE_STRING" if datatype == "BYTES" else f"TYPE_{datatype}"))


class LocalBackend(Backend):
    """Serves a model repository with onnxruntime in sandboxed worker processes."""

    kind = "local"

    def __init__(self, repo: Path, config: Config) -> None:
        self.repo = repo
        self.config = config
        self.models = load_repository(repo)
        specs = {m.key: m.spec for vs in self.models.values() for m in vs.values()}
        self.pool = WorkerPool.from_config(config.backend, specs)
        self._started = False

    @classmethod
    def from_config(cls, config: Config) -> LocalBackend:
        if config.backend.model_repository:
            repo = Path(config.backend.model_repository).expanduser()
        else:
            from infershield.builtin_models import ensure_default_repository

            repo = ensure_default_repository(config.cache_path)
        return cls(repo, config)

    async def start(self) -> None:
        await self.pool.start()
        self._started = True

    async def close(self) -> None:
        self._started = False
        await self.pool.close()

    async def ready(self) -> bool:
        return self._started and bool(self.pool.pids)

    def tokenizer_files(self) -> dict[str, Path]:
        from infershield.tokens import find_tokenizer

        out: dict[str, Path] = {}
        for name, versions in self.models.items():
            ti = next(iter(versions.values())).config.text_input
            path = self.repo / name / ti.tokenizer if ti is not None else None
            path = path if path is not None and path.is_file() else find_tokenizer(self.repo / name)
            if path is not None:
                out[name] = path
        return out

    # ------------------------------------------------------------------ lookup

    def model(self, name: str, version: str = "") -> LocalModel:
        versions = self.models.get(name)
        if versions is None:
            raise NotFound(f"unknown model {name!r}")
        if not version:
            return versions[max(versions, key=int)]
        if version not in versions:
            raise NotFound(f"unknown version {version!r} of model {name!r}")
        return versions[version]

    # ------------------------------------------------------------------ RPCs

    async def call(self, method: str, request: Any, ctx: CallContext) -> Any:
        handler = getattr(self, f"_rpc_{method}", None)
        if handler is None:
            raise Unsupported(f"{method} is not supported by the local backend")
        return await handler(request, ctx)

    async def _rpc_ServerLive(self, req: Any, ctx: CallContext) -> Any:
        return pb.ServerLiveResponse(live=True)

    async def _rpc_ServerReady(self, req: Any, ctx: CallContext) -> Any:
        return pb.ServerReadyResponse(ready=await self.ready())

    async def _rpc_ModelReady(self, req: Any, ctx: CallContext) -> Any:
        try:
            self.model(req.name, req.version)
        except NotFound:
            return pb.ModelReadyResponse(ready=False)
        return pb.ModelReadyResponse(ready=await self.ready())

    async def _rpc_ServerMetadata(self, req: Any, ctx: CallContext) -> Any:
        try:
            version = importlib_metadata.version("infershield")
        except importlib_metadata.PackageNotFoundError:
            version = "0"
        return pb.ServerMetadataResponse(name="infershield", version=version, extensions=[])

    async def _rpc_ModelMetadata(self, req: Any, ctx: CallContext) -> Any:
        m = self.model(req.name, req.version)
        return pb.ModelMetadataResponse(
            name=m.name,
            versions=sorted(self.models[m.name], key=int),
            platform="onnxruntime_onnx",
            inputs=[
                pb.ModelMetadataResponse.TensorMetadata(
                    name=t.name, datatype=t.datatype, shape=m.shape(t)
                )
                for t in m.inputs
            ],
            outputs=[
                pb.ModelMetadataResponse.TensorMetadata(
                    name=t.name, datatype=t.datatype, shape=m.shape(t)
                )
                for t in m.outputs
            ],
        )

    async def _rpc_ModelConfig(self, req: Any, ctx: CallContext) -> Any:
        m = self.model(req.name, req.version)
        cfg = mc.ModelConfig(
            name=m.name,
            platform="onnxruntime_onnx",
            backend="onnxruntime",
            max_batch_size=m.config.max_batch_size,
            input=[
                mc.ModelInput(name=t.name, data_type=_config_dtype(t.datatype), dims=t.dims)  # type: ignore[arg-type]
                for t in m.inputs
            ],
            output=[
                mc.ModelOutput(name=t.name, data_type=_config_dtype(t.datatype), dims=t.dims)  # type: ignore[arg-type]
                for t in m.outputs
            ],
        )
        return pb.ModelConfigResponse(config=cfg)

    async def _rpc_RepositoryIndex(self, req: Any, ctx: CallContext) -> Any:
        return pb.RepositoryIndexResponse(
            models=[
                pb.RepositoryIndexResponse.ModelIndex(name=n, version=v, state="READY")
                for n, vs in self.models.items()
                for v in sorted(vs, key=int)
            ]
        )

    async def _rpc_ModelInfer(self, req: pb.ModelInferRequest, ctx: CallContext) -> Any:
        m = self.model(req.model_name, req.model_version)
        known = {t.name for t in m.inputs}
        given = [t.name for t in req.inputs]
        missing = sorted(known - set(given))
        unknown = sorted(set(given) - known)
        if missing or unknown:
            raise InvalidRequest(
                f"model {m.name!r} expects inputs {sorted(known)}; missing {missing}, "
                f"unexpected {unknown}"
            )
        arrays = {t.name: input_array(req, i) for i, t in enumerate(req.inputs)}
        if m.config.max_batch_size > 0:
            rows = {a.shape[0] if a.ndim else 0 for a in arrays.values()}
            if len(rows) != 1 or not 0 < next(iter(rows)) <= m.config.max_batch_size:
                raise InvalidRequest(
                    f"model {m.name!r}: batch size must be 1..{m.config.max_batch_size} and "
                    f"the same for every input, got {sorted(rows)}"
                )
        outputs = await self.pool.run(m.key, arrays, timeout=ctx.deadline.remaining())
        wanted = [o.name for o in req.outputs] or [t.name for t in m.outputs]
        resp = pb.ModelInferResponse(model_name=m.name, model_version=m.version, id=req.id)
        for name in wanted:
            if name not in outputs:
                raise InvalidRequest(f"model {m.name!r} has no output {name!r}")
            arr = np.asarray(outputs[name])
            resp.outputs.add(name=name, datatype=numpy_datatype(arr), shape=list(arr.shape))
            resp.raw_output_contents.append(raw_array(arr))
        return resp

    async def stream_infer(
        self, requests: AsyncIterator[pb.ModelInferRequest], ctx: CallContext
    ) -> AsyncIterator[pb.ModelStreamInferResponse]:
        # Not decoupled: one response per request, in order; a failed request becomes an
        # in-stream error response, as Triton reports it.
        async for req in requests:
            try:
                resp = await self._rpc_ModelInfer(req, ctx)
            except BackendUnavailable:
                raise
            except FirewallError as exc:
                yield pb.ModelStreamInferResponse(
                    error_message=exc.message,
                    infer_response=pb.ModelInferResponse(
                        id=req.id, model_name=req.model_name, model_version=req.model_version
                    ),
                )
                continue
            except asyncio.CancelledError:
                raise
            yield pb.ModelStreamInferResponse(infer_response=resp)
