"""The MLServer runtime of a stage (`StageRuntime`) and its launcher (`serve`): the one module that imports
``mlserver`` (the ``serve`` extra).

`serve` runs MLServer in this process (``parallel_workers`` 0) with one model, the stage's, which
``rlscale serve`` built before (`rlscale.serve.model.build_stage_model`), so a factory that fails is one line
before any port listens. MLServer answers the Open Inference Protocol over REST (``--http-port``: ``POST
/v2/models/{name}/infer``, ``GET /v2/health/ready``, ``GET /v2/models/{name}`` with the input's name, datatype
and shape) and gRPC (``--grpc-port``), and serves prometheus-client's registry, where `rlscale.serve.batcher`
counts, on ``--metrics-port`` at ``/metrics``. SIGTERM and SIGINT stop it (MLServer's handlers). A REST request
body over the stage's ``max_request_bytes`` is answered 413 before it is read (`rlscale.serve.limits`).

The runtime loads without the launcher too (``mlserver start`` on a folder whose ``model-settings.json`` names
``rlscale.serve.runtime.StageRuntime``): it then reads every setting from the env vars
(`rlscale.serve.settings`). MLServer's own adaptive batching must stay off (``max_batch_size`` unset): the
runtime batches itself (`rlscale.serve.batcher` says why).
"""

from __future__ import annotations

import asyncio
import gc
import logging
import os

import numpy as np
from mlserver import MLModel, MLServer, ModelSettings, Settings
from mlserver.codecs import NumpyCodec
from mlserver.codecs.numpy import to_datatype, to_dtype
from mlserver.errors import InferenceError, MLServerError
from mlserver.types import InferenceRequest, InferenceResponse, MetadataTensor, RequestInput
from mlserver.utils import install_uvloop_event_loop

from rlscale.errors import ServeError
from rlscale.profiling.worker import describe
from rlscale.serve.batcher import Batcher, BatchFailed, StageMetrics
from rlscale.serve.limits import BodyLimit
from rlscale.serve.model import INPUT_NAME, InputMismatch, StageModel, build_stage_model, checked_values
from rlscale.serve.settings import StageSettings, resolve

log = logging.getLogger(__name__)

_BUILT: dict[str, tuple[StageSettings, StageModel]] = {}
"""Models `serve` built, by name, for their runtime's `load` in this process."""
_LOADED: set[str] = set()


def input_metadata(model: StageModel) -> MetadataTensor:
    """The model's one input as the protocol's metadata: ``input-0``, its datatype, shape ``[-1, *item_shape]``."""
    return MetadataTensor(name=INPUT_NAME, datatype=to_datatype(model.dtype), shape=[-1, *model.item_shape])


def decode(tensor: RequestInput) -> np.ndarray:
    """A request's input tensor as an array of its declared datatype and shape.

    Numbers given as a list (JSON, or gRPC's typed contents) are checked: a value the datatype cannot hold (an
    INT64 overflow, a negative UINT8, a fraction for an integer, null) is the client's error, where numpy would
    raise OverflowError (a 500) or wrap, truncate or overflow it silently. Raw bytes are MLServer's to decode.

    Raises:
        InputMismatch: a value the datatype cannot hold (`rlscale.serve.model.checked_values`).
        ValueError: the values do not fill the declared shape, or the datatype is unknown.
    """
    data = getattr(tensor.data, "root", tensor.data)
    if tensor.datatype != "BYTES" and isinstance(data, list) and not any(isinstance(v, bytes) for v in data[:1]):
        return checked_values(data, to_dtype(tensor), tensor.datatype).reshape(tensor.shape)
    return NumpyCodec.decode_input(tensor)


class StageRuntime(MLModel):
    """A stage's model behind the batcher: one input tensor of n items in, the model's outputs for them out."""

    async def load(self) -> bool:
        if self.settings.max_batch_size > 1:
            raise ServeError(
                f"model {self.name}: MLServer's max_batch_size is {self.settings.max_batch_size}; leave it unset and "
                "set MAX_BATCH_SIZE (this runtime batches itself)"
            )
        built = _BUILT.pop(self.name, None)
        if built is None:  # not started by `serve`: everything from the env vars
            settings = resolve({}, os.environ, name=self.name)
            built = settings, build_stage_model(settings)
        settings, model = built
        self._model = model
        self.inputs = [input_metadata(model)]
        metrics = StageMetrics(settings.pipeline, settings.stage)
        self._batcher = Batcher(model.run, settings.max_batch_size, settings.batch_timeout_s, metrics)
        _LOADED.add(self.name)
        # what the server and the model built to start (torch, MLServer, pydantic: about a million objects) lives as
        # long as the process: out of the collector's sight, a full collection scans only what requests left, a
        # pause of milliseconds instead of about 0.1 s in the middle of serving (the p99 of experiments/sim_to_real)
        gc.collect()
        gc.freeze()
        log.info("stage model %s loaded: variant %s, batch %d", self.name, settings.variant, settings.max_batch_size)
        return True

    async def predict(self, payload: InferenceRequest) -> InferenceResponse:
        if len(payload.inputs) != 1:
            raise InferenceError(f"model {self.name} takes one input tensor, got {len(payload.inputs)}")
        try:
            rows = self._model.rows(decode(payload.inputs[0]))
        except InputMismatch as exc:
            raise InferenceError(f"model {self.name}: {exc}") from None
        except (ValueError, TypeError, OverflowError) as exc:  # data that does not fill the declared shape or type
            raise InferenceError(f"model {self.name}: input {payload.inputs[0].name!r}: {describe(exc)}") from None
        try:
            outputs = await self._batcher.infer(rows)
        except BatchFailed as exc:
            raise MLServerError(f"model {self.name}: {exc}", status_code=500) from None
        return InferenceResponse(
            model_name=self.name,
            model_version=self.version,
            id=payload.id,
            outputs=[NumpyCodec.encode_output(name, array) for name, array in outputs.items()],
        )

    async def unload(self) -> bool:
        batcher = getattr(self, "_batcher", None)
        if batcher is not None:
            await batcher.close()
        return True


def serve(
    settings: StageSettings,
    model: StageModel,
    *,
    host: str = "127.0.0.1",
    http_port: int = 8080,
    grpc_port: int = 8081,
    metrics_port: int = 8082,
) -> None:
    """Serve the built model until SIGTERM or SIGINT (module docstring).

    Raises:
        ServeError: MLServer stopped without the model loaded (its log says why).
    """
    name = settings.model_name
    _BUILT[name] = (settings, model)
    server_settings = Settings(
        host=host,
        http_port=http_port,
        grpc_port=grpc_port,
        metrics_port=metrics_port,
        metrics_endpoint="/metrics",
        parallel_workers=0,  # the model, its batcher and the metrics in this process (module docstring)
        load_models_at_startup=False,
        debug=False,  # no access log line per request
    )
    model_settings = ModelSettings(
        name=name, implementation=StageRuntime, inputs=[input_metadata(model)], max_batch_size=0, max_batch_time=0
    )

    async def run() -> None:
        server = MLServer(server_settings)  # inside the loop: it adds its signal handlers to it
        # outermost of the REST app's middleware: a body over the limit never reaches MLServer, which reads it whole
        server._rest_server._app.add_middleware(
            BodyLimit, max_bytes=settings.max_request_bytes, setting="--max-request-bytes or RLSCALE_MAX_REQUEST_BYTES"
        )
        await server.start([model_settings])

    # MLServer's loggers have their own handler: not the root's too (every line twice)
    logging.getLogger("mlserver").propagate = False
    install_uvloop_event_loop()
    try:
        asyncio.run(run())
    finally:
        _BUILT.pop(name, None)
    if name not in _LOADED:
        raise ServeError(f"model {name} did not load; MLServer stopped (its log above says why)")
