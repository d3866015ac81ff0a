# The rlscale sidecar image: `rlscale manifests` renders a Deployment that runs it as uid 10001.
FROM python:3.11-slim

ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

# torch first, from the CPU index, so installing the project does not pull a multi-GB CUDA build
RUN pip install --index-url https://download.pytorch.org/whl/cpu torch==2.13.0

WORKDIR /src
COPY . .
RUN pip install .

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
