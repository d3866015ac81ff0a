"""The reference stage runtime (DESIGN.md section 11): a pipeline stage served by MLServer, so users do not write
a server.

``rlscale serve --model MODULE:FUNCTION`` builds the model of the variant the stage's Deployment names
(``MODEL_VARIANT``), batches requests up to ``MAX_BATCH_SIZE`` (waiting at most ``BATCH_TIMEOUT_S`` for a full
batch, as the simulator's replicas do), answers the Open Inference Protocol (KServe V2, REST and gRPC) and
exports the per-stage ``rlscale_*`` metrics the sidecar reads on MLServer's ``/metrics``.

- `rlscale.serve.settings`: the settings a stage server starts with, from flags or the stage's env vars;
- `rlscale.serve.model`: the factory's model, run on numpy rows (a torch model too);
- `rlscale.serve.batcher`: the batching queue and the metrics (numpy and prometheus-client only);
- `rlscale.serve.local`: local servers as child processes (free port, readiness polling, SIGTERM then kill), for
  the sim-to-real experiment and the tests;
- `rlscale.serve.runtime`: the MLServer runtime and launcher, the one module that imports ``mlserver`` (the
  ``serve`` extra), so ``import rlscale`` and the sidecar never need it.
"""
