"""Profiling a served model over the Open Inference Protocol (`rlscale.profiling.served`), against the stdlib test
server of `tests.profiling.v2_server` (which runs `rlscale.examples.mlp`)."""

from __future__ import annotations

import json
import socket

import numpy as np
import pytest

from rlscale.errors import ProfilingError
from rlscale.profiling.served import (
    DEFAULT_INPUT_NAME,
    DEFAULT_ITEM_SHAPE,
    InputTensor,
    V2Client,
    base_url,
    check_response,
    infer_body,
    input_tensor,
    profile_served,
)
from tests.profiling.v2_server import ServedModel, serve


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_a_served_model_is_timed_one_request_per_run_carrying_the_batch():
    with serve() as (url, served):
        client = V2Client(url, "mlp")
        client.check_ready()
        tensor = input_tensor(client.metadata())
        assert tensor == InputTensor("images", "FP32", (3, 32, 32))  # from the metadata, batch dimension dropped
        points = list(profile_served(client, tensor, "mlp-256", [1, 4], 2, warmup=2, repeats=3))
    assert [(m.variant, m.batch, m.cores, len(m.samples_s)) for m in points] == [
        ("mlp-256", 1, 2, 3),
        ("mlp-256", 4, 2, 3),
    ]
    assert served.requests == [[1, 3, 32, 32]] * 5 + [[4, 3, 32, 32]] * 5  # warm-up + timed, one request each


def test_the_request_is_an_inference_request_of_the_protocol():
    body = json.loads(infer_body(InputTensor("x", "FP32", (2, 3)), 4))
    (tensor,) = body["inputs"]
    assert set(body) == {"inputs"}
    assert tensor["name"] == "x" and tensor["datatype"] == "FP32" and tensor["shape"] == [4, 2, 3]
    assert len(tensor["data"]) == 24 and all(isinstance(v, float) for v in tensor["data"])
    ints = json.loads(infer_body(InputTensor("ids", "INT64", (5,)), 2))["inputs"][0]["data"]
    assert all(isinstance(v, int) for v in ints)
    flags = json.loads(infer_body(InputTensor("m", "BOOL", (3,)), 1))["inputs"][0]["data"]
    assert all(isinstance(v, bool) for v in flags)


def test_flags_win_over_metadata_and_defaults_fill_the_rest():
    meta = {"inputs": [{"name": "pixels", "datatype": "FP16", "shape": [-1, 1, 28, 28]}]}
    assert input_tensor(meta) == InputTensor("pixels", "FP16", (1, 28, 28))
    assert input_tensor(meta, "x", "fp32", (3, 8, 8)) == InputTensor("x", "FP32", (3, 8, 8))
    assert input_tensor(None) == InputTensor(DEFAULT_INPUT_NAME, "FP32", DEFAULT_ITEM_SHAPE)
    # a shape without a leading -1 does not say which dimension is the batch: the default item shape
    fixed = {"inputs": [{"name": "a", "datatype": "FP32", "shape": [1, 3, 32, 32]}]}
    assert input_tensor(fixed).item_shape == DEFAULT_ITEM_SHAPE
    with pytest.raises(ProfilingError, match="input datatype 'BYTES'"):
        input_tensor({"inputs": [{"name": "text", "datatype": "BYTES", "shape": [-1]}]})


def test_a_model_that_is_not_ready_is_one_line():
    with serve(ServedModel(ready=False)) as (url, _):
        with pytest.raises(ProfilingError) as info:
            V2Client(url, "mlp").check_ready()
    assert str(info.value) == f"model 'mlp' at {url} is not ready (GET {url}/v2/models/mlp/ready: HTTP 503: loading)"


def test_an_unknown_model_is_not_ready():
    with serve() as (url, _):
        with pytest.raises(ProfilingError, match="model 'other' at .* is not ready .*HTTP 404: no model at"):
            V2Client(url, "other").check_ready()


def test_a_batch_the_server_refuses_names_variant_batch_and_message():
    with serve(ServedModel(max_batch=2)) as (url, served):
        client = V2Client(url, "mlp")
        tensor = input_tensor(client.metadata())
        points = profile_served(client, tensor, "mlp-256", [2, 8], 1, warmup=1, repeats=2)
        assert next(points).batch == 2
        with pytest.raises(ProfilingError) as info:
            next(points)
    assert str(info.value) == "variant 'mlp-256' rejects batch 8: HTTP 400: batch of 8 exceeds max_batch_size 2"
    assert served.requests[-1] == [8, 3, 32, 32] and served.requests.count([8, 3, 32, 32]) == 1  # failed fast


def test_a_wrong_input_is_the_servers_message():
    with serve() as (url, _):
        client = V2Client(url, "mlp")
        with pytest.raises(ProfilingError, match="rejects batch 1: HTTP 400: invalid request: expected input 'images'"):
            list(profile_served(client, InputTensor("wrong", "FP32", (3, 32, 32)), "v", [1], 1, warmup=0, repeats=1))


def test_an_answer_without_outputs_is_refused():
    with pytest.raises(ProfilingError, match="no Open Inference Protocol response"):
        check_response(200, b'{"predictions": [1, 2]}', "v", 1)
    check_response(
        200, json.dumps({"outputs": [{"name": "o", "shape": [1], "datatype": "FP32", "data": [1.0]}]}).encode(), "v", 1
    )


def test_an_unreachable_server_is_one_line():
    url = f"http://127.0.0.1:{_closed_port()}"
    with pytest.raises(ProfilingError, match=f"--url {url}: cannot reach the server: Connection refused"):
        V2Client(url, "mlp").check_ready()


@pytest.mark.parametrize(
    "url, message",
    [
        ("ftp://host:21", "expected http://HOST:PORT"),
        ("127.0.0.1:8080", "expected http://HOST:PORT"),
        ("http://user:secret@host:8080", "leave credentials out"),
        ("http://host:8080/?x=1", "no query or fragment"),
    ],
)
def test_a_bad_url_is_refused(url, message):
    with pytest.raises(ProfilingError, match=message):
        base_url(url)


def test_a_gateway_path_prefix_is_kept():
    assert V2Client("http://gw:80/serving/ns/", "m a").model_url == "http://gw:80/serving/ns/v2/models/m%20a"


def test_the_server_runs_the_example_model():
    """The test server answers with the bundled mlp's logits: the data of the request really reaches the model."""
    with serve() as (url, _):
        client = V2Client(url, "mlp")
        tensor = InputTensor("images", "FP32", (3, 32, 32))
        status, body = client.infer(infer_body(tensor, 2, seed=5))
    from rlscale.examples import mlp

    model, _ = mlp.build("mlp-256")
    sent = np.asarray(json.loads(infer_body(tensor, 2, seed=5))["inputs"][0]["data"], dtype=np.float32)
    (out,) = json.loads(body)["outputs"]
    assert status == 200 and out["shape"] == [2, 10]
    np.testing.assert_allclose(out["data"], model(sent.reshape(2, 3, 32, 32)).ravel(), rtol=1e-5)
