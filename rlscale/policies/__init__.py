"""Policies by name: the registry (`rlscale.policies.registry`: names -> policies behind their guards, live or
offline) and the reading of tuning files, the bundled ones included (`rlscale.policies.tunings`).

Below `rlscale.evaluate` and `rlscale.cli`, which hand `make_policy` on (by object or as the string
``rlscale.policies.registry:make_policy``); above `agents`, `envs`, `ilp_baseline` and the core, whose policies it
builds.
"""
