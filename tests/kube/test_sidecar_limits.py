"""The sidecar's decision line says what the hard limits did: the core budget's cap and the damping."""

from __future__ import annotations

import threading

from rlscale.kube.sidecar import Sidecar, SidecarSettings
from rlscale.model import plan_fixed_variants
from rlscale.spec import load_spec
from tests.test_timeline import _SimCluster


class Big:
    """Proposes the most accurate variants sized for far more load than there is."""

    name = "big"

    def __init__(self, spec) -> None:
        self.config = plan_fixed_variants(spec, [st.variants[-1].name for st in spec.stages], 200.0)

    def decide(self, state):
        return self.config


def test_the_decision_line_says_the_budget_capped_the_proposal():
    spec = load_spec("video", ["core_budget=6"])
    policy = Big(load_spec("video"))  # planned within the bundled spec's larger budget
    assert policy.config.total_cores > 6
    stop = threading.Event()
    sidecar = Sidecar(_SimCluster(spec, stop, 2), policy, None, SidecarSettings(0.01), stop=stop)
    report = sidecar.step()
    assert report.config.total_cores <= 6
    assert "budget" in report.message, report.message


def test_the_decision_line_says_damping_held_a_rollout():
    spec = load_spec("video", ["damping.min_dwell_s=600"])
    stop = threading.Event()
    cluster = _SimCluster(spec, stop, 5)

    class Flip:
        """Alternates each stage's variant every decision: a rollout every interval."""

        name = "flip"
        n = 0

        def decide(self, state):
            self.n += 1
            pick = -1 if self.n % 2 else 0
            return plan_fixed_variants(spec, [st.variants[pick].name for st in spec.stages], 5.0)

    sidecar = Sidecar(cluster, Flip(), None, SidecarSettings(0.01), stop=stop)
    messages = [sidecar.step().message for _ in range(3)]
    assert any("damping held" in m for m in messages[1:]), messages
