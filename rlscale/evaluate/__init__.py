"""Evaluation: what ``rlscale compare``, ``demo``, ``bench``, ``tune`` and ``train --seeds/--grid`` run.

`compare` (policies x traces x seeds on the simulator), the executors its runs and every other sweep go to
(`sweep`: serial, process, Ray), `plots`, `demo`, `bench` (with `synthetic` chains and `train_throughput`),
`train_sweep` (a sweep of trainings) and `tune_headroom` (the tuning search behind ``rlscale tune``).

Above `rlscale.policies` (a comparison names its policy factory, ``rlscale.policies.registry:make_policy``, and each
run imports it) and below `rlscale.cli`, the composition root.
"""
