# The rlscale sidecar image: `rlscale manifests` renders a Deployment that runs it as uid 10001.
FROM python:3.11-slim

ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

# Exact versions with hashes from requirements/runtime.txt (`make lock`): the runtime only. torch, stable-baselines3
# and tensorboard are for training (the `train` extra); the sidecar runs the bundled agents' numpy actors.
WORKDIR /src
COPY requirements/ requirements/
RUN pip install --no-deps --require-hashes -r requirements/runtime.txt
COPY . .
RUN pip install --no-deps --no-build-isolation . && pip check

RUN groupadd --gid 10001 rlscale \
    && useradd --uid 10001 --gid 10001 --no-create-home --home-dir /tmp --shell /usr/sbin/nologin rlscale

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    HOME=/tmp \
    MPLCONFIGDIR=/tmp/matplotlib

WORKDIR /tmp
USER 10001:10001
EXPOSE 9400
ENTRYPOINT ["rlscale"]
CMD ["sidecar", "--help"]
