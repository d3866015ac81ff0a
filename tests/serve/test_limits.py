"""Hostile requests to a real stage server (``rlscale serve`` on 127.0.0.1): values the declared datatype cannot
hold are a 400 with one line and no traceback in the server's log; a body over ``--max-request-bytes`` is a 413,
refused before the server reads it into memory (its peak memory stays bounded), whether it says its length,
streams it chunked or sends it gzip-compressed; and the server keeps serving afterwards."""

from __future__ import annotations

import gzip
import json
import select
import socket
import time
import urllib.error
import urllib.request

import pytest

from tests.serve.stage_server import StageServer, require_mlserver

LIMIT = 1 << 20  # 1 MiB
BIG = 100 * (1 << 20)  # 100 MiB, which took a server without a limit to 1.8 GB


@pytest.fixture(scope="module")
def stage(tmp_path_factory):
    require_mlserver()
    server = StageServer(
        tmp_path_factory.mktemp("limits"),
        *("--pipeline", "toy", "--stage", "classify", "--variant", "double", "--max-request-bytes", str(LIMIT)),
    )
    server.start()
    yield server
    assert server.stop() == 0, server.output()


def post(stage: StageServer, body: bytes, headers: dict[str, str]) -> tuple[int, dict]:
    request = urllib.request.Request(f"{stage.url}/v2/models/classify/infer", data=body, headers=headers, method="POST")
    try:
        with urllib.request.urlopen(request, timeout=20) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read() or b"{}")


def peak_rss_bytes(stage: StageServer) -> int:
    """The server process's peak resident memory (VmHWM)."""
    for line in open(f"/proc/{stage.proc.pid}/status"):
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmHWM in /proc/PID/status")


def send_until_answered(stage: StageServer, head: bytes, chunks, timeout_s: float = 30) -> bytes:
    """Send ``head`` then each chunk of the generator until the server answers; the answer's first bytes.

    The answer is read between chunks, so a server that refuses early is seen before it closes the connection.
    """
    with socket.create_connection(("127.0.0.1", stage.http_port), timeout=timeout_s) as s:
        s.sendall(head)
        deadline = time.monotonic() + timeout_s
        answer = b""
        for chunk in chunks:
            if select.select([s], [], [], 0)[0]:
                break
            try:
                s.sendall(chunk)
            except OSError:  # refused and closed: the answer is already here
                break
            assert time.monotonic() < deadline, "the server neither answered nor stopped reading"
        try:
            while not answer.endswith(b"}"):
                data = s.recv(65536)
                if not data:
                    break
                answer += data
        except OSError:
            pass
        return answer


def status_of(answer: bytes) -> int:
    assert answer.startswith(b"HTTP/1.1 "), answer[:200]
    return int(answer.split()[1])


@pytest.mark.parametrize(
    ("datatype", "value", "message"),
    [
        ("INT64", 2**70, "is out of the range of INT64 (-9223372036854775808 to 9223372036854775807)"),
        ("UINT8", -1, "input value -1 is out of the range of UINT8 (0 to 255)"),
        ("INT8", 300, "input value 300 is out of the range of INT8 (-128 to 127)"),
        ("FP32", 1e300, "input value 1e+300 is out of the range of FP32"),
        ("INT32", 1.5, "input value 1.5 is not a whole number, as INT32 needs"),
        ("FP32", None, "FP32 data holds null, not a number"),
    ],
)
@pytest.mark.e2e
def test_a_value_the_datatype_cannot_hold_is_a_400_without_a_traceback(stage, datatype, value, message):
    status, body = stage.infer("classify", [[value, 1, 1, 1]], datatype=datatype)
    assert status == 400, body
    assert message in body["error"] and "\n" not in body["error"], body
    assert "Traceback" not in stage.output() and "Error" not in stage.output().replace("InferenceError", ""), (
        stage.output()
    )


@pytest.mark.parametrize(
    ("datatype", "edges", "beyond"),
    [("UINT8", [0, 255, 1, 2], 256), ("INT8", [0, 127, 1, 2], 128), ("UINT16", [0, 65535, 1, 2], 65536)],
)
@pytest.mark.e2e
def test_a_datatypes_edges_are_served_and_one_beyond_is_a_400(stage, datatype, edges, beyond):
    status, body = stage.infer("classify", [edges], datatype=datatype)
    assert status == 200 and body["outputs"][0]["data"] == [2 * v for v in edges], body
    status, body = stage.infer("classify", [[beyond, *edges[1:]]], datatype=datatype)
    assert status == 400 and f"input value {beyond} is out of the range of {datatype}" in body["error"], body


@pytest.mark.e2e
def test_a_content_length_over_the_limit_is_413_before_the_body_is_read(stage):
    head = (
        f"POST /v2/models/classify/infer HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
        f"Content-Length: {BIG}\r\n\r\n"
    ).encode()
    started = time.monotonic()
    answer = send_until_answered(stage, head, iter([b"{"]), timeout_s=10)  # one byte of the 100 MiB promised
    assert status_of(answer) == 413, answer[:300]
    assert time.monotonic() - started < 5  # answered without waiting for the body
    assert b"--max-request-bytes" in answer


@pytest.mark.e2e
def test_a_chunked_body_over_the_limit_is_413_and_the_server_stays_small(stage):
    before = peak_rss_bytes(stage)
    head = (
        b"POST /v2/models/classify/infer HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
        b"Transfer-Encoding: chunked\r\n\r\n"
    )
    piece = b"1.0," * (1 << 18)  # 1 MiB of JSON numbers
    chunk = f"{len(piece):x}\r\n".encode() + piece + b"\r\n"
    answer = send_until_answered(stage, head, (chunk for _ in range(BIG // len(piece))))
    assert status_of(answer) == 413, answer[:300]
    grown = peak_rss_bytes(stage) - before
    assert grown < 50 * (1 << 20), f"the server's peak memory grew by {grown / 2**20:.0f} MiB"
    status, _ = stage.infer("classify", [[1, 2, 3, 4]])
    assert status == 200  # and it still serves


@pytest.mark.e2e
def test_a_gzip_bomb_is_413_and_a_small_gzip_body_is_served(stage):
    before = peak_rss_bytes(stage)
    inner = (
        b'{"inputs": [{"name": "x", "datatype": "FP32", "shape": [1, 4], "data": [1, 2, 3, 4'
        + b", 0" * (BIG // 3)
        + b"]}]}"
    )
    bomb = gzip.compress(inner, compresslevel=1)
    assert len(bomb) < LIMIT  # small on the wire
    status, body = post(stage, bomb, {"Content-Type": "application/json", "Content-Encoding": "gzip"})
    assert status == 413 and "decompressed" in body["error"], body
    grown = peak_rss_bytes(stage) - before
    assert grown < 50 * (1 << 20), f"the server's peak memory grew by {grown / 2**20:.0f} MiB"
    small = json.dumps({"inputs": [{"name": "x", "datatype": "FP32", "shape": [1, 4], "data": [1, 2, 3, 4]}]})
    status, body = post(
        stage, gzip.compress(small.encode()), {"Content-Type": "application/json", "Content-Encoding": "gzip"}
    )
    assert status == 200 and body["outputs"][0]["data"] == [2, 4, 6, 8], body


@pytest.mark.e2e
def test_the_server_log_has_no_traceback(stage):
    """Last in the module: every hostile request above left at most one line, never a traceback."""
    assert "Traceback" not in stage.output(), stage.output()
