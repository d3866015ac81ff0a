"""The stage runtime in a real MLServer (``rlscale serve`` in a subprocess on 127.0.0.1): concurrent requests over
the Open Inference Protocol are answered correctly and batched, the rlscale_* metrics count them, gRPC answers
too, bad input is a 400, a failing batch a 500 counted as dropped, and SIGTERM stops it with exit code 0; and the
runtime alone, as ``mlserver start`` loads it, from the env vars."""

from __future__ import annotations

import asyncio
import gc
import sys
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

from tests.serve.stage_server import FACTORY, StageServer, require_mlserver

LABELS = '{pipeline="toy",stage="classify"}'


@pytest.fixture(scope="module")
def stage(tmp_path_factory):
    """One server for the module (variant double, batch 4, timeout 0.05 s, 30 ms per batch); stopped with SIGTERM,
    which must end it with exit code 0."""
    require_mlserver()
    server = StageServer(
        tmp_path_factory.mktemp("stage"),
        *("--pipeline", "toy", "--stage", "classify", "--batch-timeout", "0.05"),
        env={"MODEL_VARIANT": "double", "MAX_BATCH_SIZE": "4", "TEST_SERVICE_S": "0.03"},  # the stage's env vars
    )
    server.start()
    yield server
    code = server.stop()
    assert code == 0, server.output()


@pytest.mark.e2e
def test_concurrent_requests_are_answered_in_batches(stage):
    before = stage.metrics()
    seen_before = len(stage.batches())
    rows = [[float(i), i + 0.5, -0.0, 1e3 * i] for i in range(32)]
    with ThreadPoolExecutor(max_workers=8) as pool:
        answers = list(pool.map(lambda row: stage.infer("classify", [row]), rows))
    for row, (status, body) in zip(rows, answers, strict=True):
        assert status == 200, body
        (output,) = body["outputs"]
        assert output["name"] == "output-0" and output["shape"] == [1, 4]
        assert output["data"] == [2 * v for v in row]  # its own row, doubled: not another request's
    batches = stage.batches()[seen_before:]
    assert sum(batches) == 32 and max(batches) <= 4
    assert max(batches) > 1, batches  # 8 clients, a 30 ms model: requests queue and run together
    after = stage.metrics()

    def delta(name: str) -> float:
        return after[name] - before.get(name, 0.0)

    assert delta(f"rlscale_requests_total{LABELS}") == 32
    assert delta(f"rlscale_request_latency_seconds_count{LABELS}") == 32
    assert delta(f"rlscale_batch_size_count{LABELS}") == len(batches)
    assert delta(f"rlscale_batch_size_sum{LABELS}") == 32
    assert delta(f"rlscale_busy_seconds_total{LABELS}") >= 0.03 * len(batches)
    assert after[f"rlscale_queue_length{LABELS}"] == 0


@pytest.mark.e2e
def test_a_request_of_several_items_counts_each(stage):
    before = stage.metrics()[f"rlscale_requests_total{LABELS}"]
    status, body = stage.infer("classify", [[1, 2, 3, 4], [5, 6, 7, 8], [0, 0, 0, 1]])
    assert status == 200, body
    assert body["outputs"][0]["shape"] == [3, 4]
    assert body["outputs"][0]["data"] == [2, 4, 6, 8, 10, 12, 14, 16, 0, 0, 0, 2]
    assert stage.metrics()[f"rlscale_requests_total{LABELS}"] == before + 3


@pytest.mark.e2e
def test_metadata_names_the_input(stage):
    meta = stage.get("/v2/models/classify")
    assert meta["inputs"] == [{"name": "input-0", "datatype": "FP32", "shape": [-1, 4]}]


@pytest.mark.e2e
def test_grpc_answers_the_same(stage):
    grpc = pytest.importorskip("grpc")
    from mlserver.grpc import dataplane_pb2 as pb
    from mlserver.grpc import dataplane_pb2_grpc as pb_grpc

    with grpc.insecure_channel(f"127.0.0.1:{stage.grpc_port}") as channel:
        stub = pb_grpc.GRPCInferenceServiceStub(channel)
        tensor = pb.ModelInferRequest.InferInputTensor(
            name="x", datatype="FP32", shape=[2, 4], contents=pb.InferTensorContents(fp32_contents=range(8))
        )
        answer = stub.ModelInfer(pb.ModelInferRequest(model_name="classify", inputs=[tensor]), timeout=10)
    assert list(answer.outputs[0].shape) == [2, 4]
    assert list(answer.outputs[0].contents.fp32_contents) == [2.0 * i for i in range(8)]


@pytest.mark.parametrize(
    ("rows", "datatype", "message"),
    [
        ([[1, 2, 3]], "FP32", "does not fit the model's [-1, 4]"),
        ([["a", "b", "c", "d"]], "BYTES", "cannot be read as the model's float32"),
    ],
)
@pytest.mark.e2e
def test_bad_input_is_a_400_and_counts_nothing(stage, rows, datatype, message):
    before = stage.metrics()[f"rlscale_requests_total{LABELS}"]
    status, body = stage.infer("classify", rows, datatype=datatype)
    assert status == 400 and message in body["error"], body
    assert stage.metrics()[f"rlscale_requests_total{LABELS}"] == before


@pytest.mark.e2e
def test_a_failing_batch_is_a_500_and_counted_as_dropped(stage):
    before = stage.metrics().get('rlscale_dropped_requests_total{pipeline="toy"}', 0.0)
    status, body = stage.infer("classify", [[-1, 0, 0, 0]])
    assert status == 500 and "ValueError: negative input" in body["error"], body
    assert stage.metrics()['rlscale_dropped_requests_total{pipeline="toy"}'] == before + 1
    status, _ = stage.infer("classify", [[1, 0, 0, 0]])
    assert status == 200  # the server goes on


ENV = {
    "RLSCALE_MODEL_FACTORY": "tinymodels:build",
    "MODEL_VARIANT": "triple",
    "MAX_BATCH_SIZE": "3",
    "BATCH_TIMEOUT_S": "0.05",
    "RLSCALE_PIPELINE": "toy",
    "RLSCALE_STAGE": "inproc",
}


@pytest.fixture
def env_stage(tmp_path, monkeypatch):
    """What ``mlserver start`` does with a model-settings.json naming the runtime: the settings from the env."""
    require_mlserver()
    (tmp_path / "tinymodels.py").write_text(FACTORY)
    monkeypatch.chdir(tmp_path)
    for name, value in ENV.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("TEST_BATCH_LOG", str(tmp_path / "batches.log"))
    yield tmp_path / "batches.log"
    sys.modules.pop("tinymodels", None)


@pytest.mark.e2e
def test_the_runtime_loads_from_the_env_vars_alone(env_stage):
    from mlserver import ModelSettings
    from mlserver.codecs import NumpyCodec
    from mlserver.types import InferenceRequest

    from rlscale.serve.runtime import StageRuntime

    async def main():
        runtime = StageRuntime(ModelSettings(name="inproc", implementation=StageRuntime))
        try:
            assert await runtime.load()
            # the objects of the start are frozen: no full collection rescans them while serving
            assert gc.get_freeze_count() > 0
        finally:
            gc.unfreeze()  # this is pytest's process, not a server's
        requests = [
            InferenceRequest(inputs=[NumpyCodec.encode_input("x", np.full((1, 4), i, dtype=np.float32))])
            for i in range(6)
        ]
        answers = await asyncio.gather(*(runtime.predict(r) for r in requests))
        await runtime.unload()
        return runtime, answers

    runtime, answers = asyncio.run(main())
    assert runtime.inputs[0].shape == [-1, 4]
    assert [a.outputs[0].data.root for a in answers] == [[3.0 * i] * 4 for i in range(6)]
    batches = [int(b) for b in env_stage.read_text().split()]
    assert batches == [1, 3, 3]  # the warm-up, then all six in batches of MAX_BATCH_SIZE (they arrived at once)


@pytest.mark.e2e
def test_the_runtime_refuses_mlservers_own_batching(env_stage):
    from mlserver import ModelSettings

    from rlscale.errors import ServeError
    from rlscale.serve.runtime import StageRuntime

    runtime = StageRuntime(ModelSettings(name="inproc", implementation=StageRuntime, max_batch_size=8))
    with pytest.raises(ServeError, match="MLServer's max_batch_size is 8; leave it unset and set MAX_BATCH_SIZE"):
        asyncio.run(runtime.load())


PLAIN_FACTORY = """
import time

import numpy as np

VARIANTS = ("double",)


def build(variant):
    def model(x):
        time.sleep(0.03)  # 30 ms a batch, whatever its size
        return x * 2.0

    return model, lambda b: np.ones((b, 4), dtype=np.float32)
"""


@pytest.mark.subprocess
@pytest.mark.e2e
def test_rlscale_profile_measures_the_reference_runtime_over_http(tmp_path):
    """`rlscale profile --url` against the stage runtime started here: a row per batch, each at least the model's
    30 ms, and a lone request also waits out the 50 ms batch timeout (the runtime's batcher, as the simulator's
    replica)."""
    import csv
    import json
    import subprocess

    require_mlserver()
    server = StageServer(
        tmp_path, "--model", "plain:build", "--variant", "double", "--batch", "4", "--batch-timeout", "0.05",
        "--pipeline", "toy", "--stage", "classify",
    )  # fmt: skip
    (tmp_path / "plain.py").write_text(PLAIN_FACTORY)
    server.start()
    try:
        out = tmp_path / "served.csv"
        argv = ["profile", "--url", server.url, "--model-name", "classify", "--variant", "double", "--batch", "1,4"]
        argv += ["--cores", "1", "--warmup", "1", "--repeats", "5", "--out", str(out), "--json"]
        run = subprocess.run([sys.executable, "-m", "rlscale.cli", *argv], capture_output=True, text=True, timeout=120)
    finally:
        assert server.stop() == 0, server.output()
    assert run.returncode == 0, run.stderr
    json.loads(run.stdout)  # one document
    rows = {int(r["batch"]): r for r in csv.DictReader(out.open())}
    assert set(rows) == {1, 4} and {r["variant"] for r in rows.values()} == {"double"}
    assert all(r["kind"] == "measured" and "rlscale profile" in r["source"] for r in rows.values())
    assert float(rows[4]["latency_s"]) >= 0.03  # one 30 ms batch of 4
    assert float(rows[1]["latency_s"]) >= 0.03 + 0.05  # alone: waits out the batch timeout, then runs
