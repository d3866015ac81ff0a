"""A stage server's settings: flags over env vars, the spec's env var names, and one line per bad value."""

from __future__ import annotations

import socket

import pytest

from rlscale.errors import ServeError
from rlscale.serve.settings import StageSettings, check_ports, resolve
from rlscale.spec import KubeSpec

ENV = {
    "RLSCALE_MODEL_FACTORY": "pkg.mod:build",
    "MODEL_VARIANT": "small",
    "MAX_BATCH_SIZE": "8",
    "BATCH_TIMEOUT_S": "0.5",
    "RLSCALE_PIPELINE": "video",
    "RLSCALE_STAGE": "crop",
}


def test_the_env_vars_are_the_specs_defaults():
    """What the sidecar writes into a stage's pod template is what the runtime reads."""
    kube = KubeSpec()
    assert (kube.variant_env, kube.batch_env, kube.batch_timeout_env) == (
        "MODEL_VARIANT",
        "MAX_BATCH_SIZE",
        "BATCH_TIMEOUT_S",
    )


def test_settings_from_the_env():
    assert resolve({}, ENV) == StageSettings(
        factory="pkg.mod:build",
        variant="small",
        pipeline="video",
        stage="crop",
        max_batch_size=8,
        batch_timeout_s=0.5,
    )
    assert resolve({}, ENV).model_name == "crop"


def test_flags_win_over_the_env_and_defaults_fill_the_rest():
    env = {k: v for k, v in ENV.items() if k not in ("MAX_BATCH_SIZE", "BATCH_TIMEOUT_S")}
    s = resolve({"variant": "large", "stage": "detect", "max_batch_size": None}, env, name="det")
    assert (s.variant, s.stage, s.model_name) == ("large", "detect", "det")
    assert (s.max_batch_size, s.batch_timeout_s) == (1, 0.0)


@pytest.mark.parametrize(
    ("given", "env", "message"),
    [
        ({}, {}, "no model factory: give --model or set RLSCALE_MODEL_FACTORY"),
        ({"factory": "x:y"}, {}, "no model variant: give --variant or set MODEL_VARIANT"),
        ({}, {**ENV, "RLSCALE_STAGE": ""}, "no stage name (the metrics' stage label): give --stage or set"),
        ({"factory": "nofunction"}, ENV, "--model 'nofunction': expected MODULE:FUNCTION"),
        ({}, {**ENV, "RLSCALE_MODEL_FACTORY": "a b:c"}, "RLSCALE_MODEL_FACTORY='a b:c': expected MODULE:FUNCTION"),
        ({"max_batch_size": "0"}, ENV, "--batch '0': expected an integer from 1 to 100000"),
        ({}, {**ENV, "MAX_BATCH_SIZE": "four"}, "MAX_BATCH_SIZE='four': expected an integer from 1 to 100000"),
        ({}, {**ENV, "BATCH_TIMEOUT_S": "nan"}, "BATCH_TIMEOUT_S='nan': expected seconds from 0 to 3600"),
        ({"batch_timeout_s": "-1"}, ENV, "--batch-timeout '-1': expected seconds from 0 to 3600"),
        ({"variant": "two words"}, ENV, "--variant 'two words': expected 1-253 printable characters"),
        ({"stage": "crop/1"}, ENV, "the stage 'crop/1' cannot name the model in its URL"),
    ],
)
def test_a_bad_setting_is_one_line_naming_its_source(given, env, message):
    with pytest.raises(ServeError) as info:
        resolve(given, env)
    assert message in str(info.value) and "\n" not in str(info.value)


def test_a_bad_model_name():
    with pytest.raises(ServeError, match="--name 'a/b' cannot name the model"):
        resolve({}, ENV, name="a/b")


def test_ports_in_use_or_repeated_are_refused():
    with socket.socket() as free:
        free.bind(("127.0.0.1", 0))
        free_port = free.getsockname()[1]
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        check_ports("127.0.0.1", {"--http-port": free_port})
        with pytest.raises(ServeError, match=f"--metrics-port {port}: cannot listen on 127.0.0.1:{port}"):
            check_ports("127.0.0.1", {"--http-port": free_port, "--metrics-port": port})
    with pytest.raises(ServeError, match="--grpc-port 9000: already --http-port's"):
        check_ports("127.0.0.1", {"--http-port": 9000, "--grpc-port": 9000})
