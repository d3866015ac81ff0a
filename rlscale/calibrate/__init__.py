"""Sim-to-real as a command (``rlscale calibrate``, DESIGN.md section 11): serve a spec's stages on this machine,
replay a trace window open loop with the simulator's own arrivals, run the simulator on the same arrivals with the
spec's profile and with the calibrated one, and report the one against the other in BLIS's format.

Modules, in the order a calibration uses them:

- `rlscale.calibrate.settings`: the stages (a factory to serve, or a team's server), the CPUs, the window, the
  configurations; every input check.
- `rlscale.calibrate.servers`: ``rlscale serve`` processes pinned to their CPUs.
- `rlscale.calibrate.measure`: each stage profiled in-process and served; the serving overhead.
- `rlscale.calibrate.calibrated`: the calibrated profile (distribution, run times, overhead) and spec.
- `rlscale.calibrate.load`: the window, its arrivals, the open-loop generator.
- `rlscale.calibrate.simulated`: the simulator holding a configuration on the same arrivals.
- `rlscale.calibrate.stats`: figures, medians, bands, ratios, errors (pure).
- `rlscale.calibrate.report`: the table (CSV, markdown), the plot, the JSON document.
- `rlscale.calibrate.run`: one calibration start to end, written after each configuration.

It sits beside `rlscale.evaluate`, above `rlscale.policies` and the core: nothing below imports it. The package
imports nothing itself, so that ``rlscale``'s parser reads `rlscale.calibrate.settings`' defaults cheaply.
"""
