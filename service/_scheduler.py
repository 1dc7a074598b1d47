"""ASHA that compares trials only within the same relaxation phase.

A rung at epoch ``e`` compares a trial's *projected* validation metric with the other
trials that reached ``e`` — but only those in the same phase there: still relaxing
(θ > 0 at that epoch) or relaxation ended (θ = 0; baseline trials are always here).
A trial whose relaxation is still high is therefore never stopped for being behind one
that has already settled into its equivariant fine-tuning, and vice versa. Within a
phase the rule is standard ASHA: rungs at ``grace_period · reduction_factor^k`` epochs,
a trial continues if it is in the top ``1/reduction_factor`` of its phase's rung.
"""

from __future__ import annotations

import math
from collections import defaultdict

from ray.tune.schedulers import FIFOScheduler, TrialScheduler


class RelaxationAwareASHA(FIFOScheduler):
    """Asynchronous successive halving on ``metric``, rungs split by relaxation phase."""

    def __init__(
        self,
        metric: str,
        mode: str,
        max_t: int,
        grace_period: int = 1,
        reduction_factor: float = 2.0,
        time_attr: str = "done_epochs",
        phase_attr: str = "theta",
    ) -> None:
        super().__init__()
        if reduction_factor <= 1:
            raise ValueError("asha.reduction_factor must be > 1")
        self._metric, self._mode = metric, mode
        self.time_attr, self.phase_attr = time_attr, phase_attr
        self.rungs: list[int] = []
        t = float(max(grace_period, 1))
        while t < max_t:
            self.rungs.append(int(round(t)))
            t *= reduction_factor
        self.rungs = sorted(set(self.rungs))
        self.reduction_factor = reduction_factor
        # rung -> phase -> list of recorded metric values (sign-adjusted: larger is better)
        self.recorded: dict[int, dict[str, list[float]]] = defaultdict(lambda: defaultdict(list))

    def set_search_properties(self, metric, mode, **spec) -> bool:  # noqa: D401 - Ray API
        return True

    @staticmethod
    def phase(theta: float) -> str:
        return "relaxing" if theta > 0 else "settled"

    def decide(self, epoch: int, value: float, theta: float) -> str:
        """Record a rung result and return CONTINUE or STOP (pure logic, tested directly)."""
        if epoch not in self.rungs or value is None or not math.isfinite(value):
            return TrialScheduler.CONTINUE
        score = value if self._mode == "max" else -value
        peers = self.recorded[epoch][self.phase(theta)]
        peers.append(score)
        if len(peers) < 2:
            return TrialScheduler.CONTINUE
        ranked = sorted(peers, reverse=True)
        keep = max(1, int(len(ranked) / self.reduction_factor))
        cutoff = ranked[keep - 1]
        return TrialScheduler.CONTINUE if score >= cutoff else TrialScheduler.STOP

    def on_trial_result(self, tune_controller, trial, result) -> str:
        if self.time_attr not in result or self._metric not in result:
            return TrialScheduler.CONTINUE
        return self.decide(
            int(result[self.time_attr]),
            result[self._metric],
            float(result.get(self.phase_attr, 0.0)),
        )

    def debug_string(self) -> str:
        return f"RelaxationAwareASHA(rungs={self.rungs})"
