"""The model profiler behind ``rlscale profile`` (DESIGN.md section 11): latency over batch sizes x cores.

- `rlscale.profiling.inprocess`: a Python factory ``module:function``, each point measured in a fresh worker
  process pinned to its cores (`rlscale.profiling.worker`).
- `rlscale.profiling.served`: a model already served over the Open Inference Protocol (KServe V2 REST).
- `rlscale.profiling.overhead`: a served model's serving overhead (CPU seconds a request beyond the model's), from
  the server's metrics, at no load and under load.
- `rlscale.profiling.results`: p50/mean/p90/p99 per point, the per-variant fit of
  ``l = gamma*b/c + delta*b + eps/c + eta`` with its error, the profile CSV the spec reads and its run times.
"""
