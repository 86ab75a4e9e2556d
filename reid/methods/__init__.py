"""Training methods as plug-ins of the shared training loop (`reid.train.Trainer`); see `base.Method`."""

from __future__ import annotations

from reid.methods.base import EpochStart, LossTerm, Method, MethodConfigError, StepResult
from reid.methods.baseline import Baseline
from reid.methods.cal import CAL
from reid.methods.cre_bsga import CreBsga
from reid.methods.cssc import CSSC
from reid.methods.fire2 import Fire2
from reid.methods.sci import SCI

METHODS: dict[str, type[Method]] = {m.name: m for m in (Baseline, CAL, Fire2, CSSC, SCI, CreBsga)}

__all__ = ["METHODS", "EpochStart", "LossTerm", "Method", "MethodConfigError", "StepResult", "build_method"]


def build_method(recipe, dataset) -> Method:
    try:
        cls = METHODS[recipe.loss.method]
    except KeyError:
        raise MethodConfigError(f"recipe {recipe.name}: unknown loss.method {recipe.loss.method!r}; one of "
                                f"{sorted(METHODS)}") from None
    return cls(recipe, dataset)
