# A pipeline stage's image: `rlscale serve` (MLServer) around a model factory, configured by the env vars the
# sidecar writes (MODEL_VARIANT, MAX_BATCH_SIZE, BATCH_TIMEOUT_S). Build it from the repository root:
#   docker build -f docker/stage.Dockerfile -t rlscale-stage .
# and put your model in an image of your own on top of it (the factory's module is imported from /models):
#   FROM rlscale-stage
#   RUN pip install --no-cache-dir "onnxruntime==<version>"   # what your factory imports, pinned
#   COPY mymodels.py /models/
#   ENV RLSCALE_MODEL_FACTORY=mymodels:build
# The bundled numpy example serves as it is: RLSCALE_MODEL_FACTORY=rlscale.examples.mlp:build.
FROM python:3.11-slim

ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

# Exact versions with hashes from requirements/serve.txt (`make lock`): the runtime and the serve extra (MLServer),
# at the versions the tests ran with; no torch (a factory that needs it installs it in the image above).
WORKDIR /src
COPY requirements/ requirements/
RUN pip install --no-deps --require-hashes -r requirements/serve.txt
COPY . .
RUN pip install --no-deps --no-build-isolation . && pip check

RUN groupadd --gid 10001 rlscale \
    && useradd --uid 10001 --gid 10001 --no-create-home --home-dir /tmp --shell /usr/sbin/nologin rlscale \
    && mkdir /models

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    HOME=/tmp \
    MPLCONFIGDIR=/tmp/matplotlib

WORKDIR /models
USER 10001:10001
# REST (Open Inference Protocol, /v2/health/ready), gRPC, /metrics
EXPOSE 8080 8081 8082
ENTRYPOINT ["rlscale", "serve", "--host", "0.0.0.0"]
