"""Small model families to profile and serve, built in code with seeded random weights (nothing is downloaded).

Each module is a factory for `rlscale profile --model MODULE:build`: ``build(variant)`` returns ``(model,
make_batch)``, where ``make_batch(b)`` builds one input batch of ``b`` images of 3x32x32 and ``model(batch)`` runs
it; ``VARIANTS`` names the variants, smallest first.

- `rlscale.examples.resnet`: CIFAR-style ResNets of depth 8, 14 and 20 (torch, the ``train`` extra).
- `rlscale.examples.mlp`: two-hidden-layer perceptron classifiers of width 256, 512 and 1024 (numpy only).

The weights are random, so the models' accuracy means nothing; their latency is that of real architectures of
these sizes, which is what a profile measures.
"""
