"""The ID + triplet baseline: label-smoothed identity CE on the BN-neck feature, plus the batch-hard triplet."""

from __future__ import annotations

from reid.methods.base import Method, StepResult


class Baseline(Method):
    name = "baseline"
    terms = ("id", "tri")

    def step(self, trainer, out, pids, aux, epoch) -> StepResult:
        return self.identity_terms(out, pids, epoch, out.neck)
