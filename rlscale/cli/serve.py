"""``rlscale serve``: serve one pipeline stage's model with MLServer (`rlscale.serve`), so users do not write a
server: the variant and batch settings from the stage's env vars, the ``rlscale_*`` metrics on ``/metrics``."""

from __future__ import annotations

import argparse
import logging
import os

from rlscale.cli.args import int_in
from rlscale.errors import ServeError

log = logging.getLogger("rlscale")

SERVE_EXTRA_HINT = "install the serve extra: pip install 'rlscale[serve]' (the stage image has it)"


def register(sub) -> None:
    p = sub.add_parser(
        "serve",
        help="serve a pipeline stage's model (MLServer: Open Inference Protocol, batching, rlscale_* metrics)",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="""\
Serve one stage of a pipeline: build the model of the variant with a Python factory (FUNCTION(variant) returns
(model, make_batch), as for rlscale profile), batch requests up to the batch size (waiting at most the batch
timeout for a full batch while the model is idle, as the simulator's replicas do), answer the Open Inference
Protocol (KServe V2: POST /v2/models/NAME/infer over REST, and gRPC) and export the rlscale_* metrics the sidecar
reads on /metrics. A request's tensor is [n, *item_shape] (n items; make_batch(1) gives the item shape and dtype).
Each setting comes from its flag, else from its env var (the ones the sidecar writes into the stage's pod
template). SIGTERM or SIGINT stops it. Needs the serve extra (MLServer).""",
        epilog="""\
examples:
  rlscale serve --model rlscale.examples.mlp:build --variant mlp-256 --batch 8 --batch-timeout 0.05 \\
      --pipeline demo --stage classifier
  MODEL_VARIANT=mlp-512 MAX_BATCH_SIZE=4 RLSCALE_PIPELINE=demo RLSCALE_STAGE=classifier \\
      rlscale serve --model rlscale.examples.mlp:build --host 0.0.0.0""",
    )
    p.add_argument(
        "--model",
        metavar="MODULE:FUNCTION",
        help="the model factory, imported with the current folder first on the path (env RLSCALE_MODEL_FACTORY)",
    )
    p.add_argument("--variant", metavar="V", help="the variant the factory builds (env MODEL_VARIANT)")
    p.add_argument("--batch", metavar="B", help="the most items one model call takes (env MAX_BATCH_SIZE; 1)")
    p.add_argument(
        "--batch-timeout",
        metavar="S",
        help="seconds the oldest request may wait for a full batch while the model is idle (env BATCH_TIMEOUT_S; 0)",
    )
    p.add_argument("--pipeline", metavar="P", help="the metrics' pipeline label (env RLSCALE_PIPELINE)")
    p.add_argument("--stage", metavar="S", help="the metrics' stage label (env RLSCALE_STAGE)")
    p.add_argument(
        "--max-request-bytes",
        metavar="N",
        help="the largest REST request body in bytes (decompressed); a larger one is answered 413 before it is read "
        "(env RLSCALE_MAX_REQUEST_BYTES; 16777216 = 16 MiB)",
    )
    p.add_argument("--name", metavar="NAME", help="the model's name in /v2/models/NAME (default: the stage)")
    p.add_argument("--host", default="127.0.0.1", metavar="A", help="address to listen on (default 127.0.0.1)")
    p.add_argument("--http-port", type=int_in(1, 65535), default=8080, metavar="P", help="REST port (8080)")
    p.add_argument("--grpc-port", type=int_in(1, 65535), default=8081, metavar="P", help="gRPC port (8081)")
    p.add_argument("--metrics-port", type=int_in(1, 65535), default=8082, metavar="P", help="/metrics port (8082)")
    p.set_defaults(func=cmd_serve)


def cmd_serve(args: argparse.Namespace) -> int:
    from rlscale.serve.settings import check_ports, resolve

    settings = resolve(
        {
            "factory": args.model,
            "variant": args.variant,
            "max_batch_size": args.batch,
            "batch_timeout_s": args.batch_timeout,
            "pipeline": args.pipeline,
            "stage": args.stage,
            "max_request_bytes": args.max_request_bytes,
        },
        os.environ,
        name=args.name,
    )
    ports = {"--http-port": args.http_port, "--grpc-port": args.grpc_port, "--metrics-port": args.metrics_port}
    check_ports(args.host, ports)
    try:
        from rlscale.serve import runtime
    except ImportError as exc:
        if (exc.name or "").split(".")[0] != "mlserver":
            raise
        raise ServeError(f"serving needs MLServer: {SERVE_EXTRA_HINT}") from None
    from rlscale.serve.model import build_stage_model

    model = build_stage_model(settings)
    log.info(
        "serving %s (%s, variant %s, batch %d, timeout %g s) on %s: REST %d, gRPC %d, /metrics %d",
        settings.model_name,
        settings.factory,
        settings.variant,
        settings.max_batch_size,
        settings.batch_timeout_s,
        args.host,
        args.http_port,
        args.grpc_port,
        args.metrics_port,
    )
    runtime.serve(
        settings,
        model,
        host=args.host,
        http_port=args.http_port,
        grpc_port=args.grpc_port,
        metrics_port=args.metrics_port,
    )
    return 0
