"""A tiny Open Inference Protocol (KServe V2 REST) server for the tests: the subset `rlscale profile --url` speaks.

``GET /v2/models/{name}/ready``, ``GET /v2/models/{name}`` (metadata) and ``POST /v2/models/{name}/infer``, for
one model running `rlscale.examples.mlp` (numpy). Bound to 127.0.0.1 on a port the system picks, in a thread;
`serve` starts it and stops it. Errors follow the protocol: a non-200 status with ``{"error": "..."}``.
"""

from __future__ import annotations

import contextlib
import json
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import numpy as np

from rlscale.examples import mlp


@dataclass
class ServedModel:
    """What the server serves and how it behaves.

    Attributes:
        name: the model's name in the URLs.
        variant: the `rlscale.examples.mlp` variant it runs.
        ready: whether ``/ready`` says 200 (else 503).
        max_batch: a larger batch dimension is refused with HTTP 400.
        metadata: whether ``GET /v2/models/{name}`` answers (else 404).
        input_name: the input tensor's name in the metadata and the one accepted.
        requests: every inference request's input shape, in order (filled by the server).
    """

    name: str = "mlp"
    variant: str = "mlp-256"
    ready: bool = True
    max_batch: int = 64
    metadata: bool = True
    input_name: str = "images"
    requests: list[list[int]] = field(default_factory=list)


class _Handler(BaseHTTPRequestHandler):
    served: ServedModel
    model: mlp.MLP

    def log_message(self, format, *args):  # noqa: A002 - quiet: the tests read stderr
        pass

    def _send(self, status: int, doc: object | None) -> None:
        body = b"" if doc is None else json.dumps(doc).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def _route(self) -> str | None:
        prefix = f"/v2/models/{self.served.name}"
        if self.path == prefix or self.path.startswith(prefix + "/"):
            return self.path[len(prefix) :]
        self._send(404, {"error": f"no model at {self.path}"})
        return None

    def do_GET(self):  # noqa: N802 - http.server's name
        rest = self._route()
        if rest == "/ready":
            self._send(200 if self.served.ready else 503, None if self.served.ready else {"error": "loading"})
        elif rest == "" and self.served.metadata:
            self._send(
                200,
                {
                    "name": self.served.name,
                    "versions": ["1"],
                    "platform": "numpy",
                    "inputs": [{"name": self.served.input_name, "datatype": "FP32", "shape": [-1, 3, 32, 32]}],
                    "outputs": [{"name": "logits", "datatype": "FP32", "shape": [-1, 10]}],
                },
            )
        elif rest is not None:
            self._send(404, {"error": "not found"})

    def do_POST(self):  # noqa: N802
        rest = self._route()
        if rest is None:
            return
        if rest != "/infer":
            self._send(404, {"error": "not found"})
            return
        try:
            request = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            (tensor,) = request["inputs"]
            shape = tensor["shape"]
            if tensor["name"] != self.served.input_name or tensor["datatype"] != "FP32":
                raise ValueError(f"expected input {self.served.input_name!r} of FP32, got {tensor['name']!r}")
            batch = np.asarray(tensor["data"], dtype=np.float32).reshape(shape)
        except (KeyError, TypeError, ValueError) as exc:
            self._send(400, {"error": f"invalid request: {exc}"})
            return
        self.served.requests.append(list(shape))
        if shape[0] > self.served.max_batch:
            self._send(400, {"error": f"batch of {shape[0]} exceeds max_batch_size {self.served.max_batch}"})
            return
        logits = self.model(batch)
        self._send(
            200,
            {
                "model_name": self.served.name,
                "outputs": [
                    {
                        "name": "logits",
                        "shape": list(logits.shape),
                        "datatype": "FP32",
                        "data": logits.ravel().tolist(),
                    }
                ],
            },
        )


@contextlib.contextmanager
def serve(served: ServedModel | None = None) -> Iterator[tuple[str, ServedModel]]:
    """Run the server in a thread; yields its base URL (``http://127.0.0.1:PORT``) and the `ServedModel`."""
    served = served or ServedModel()
    model, _ = mlp.build(served.variant)
    handler = type("Handler", (_Handler,), {"served": served, "model": model})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", served
    finally:
        server.shutdown()
        server.server_close()
        thread.join(10)
