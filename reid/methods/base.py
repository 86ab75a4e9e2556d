"""The training-method interface: what a method adds to the shared training loop (`reid.train.Trainer`).

A method owns
* its extra heads (`heads`, an nn.ModuleDict saved in training checkpoints under `heads.`), and which of
  their parameters the main optimiser trains (`main_parameters`); heads with an optimiser of their own
  (CAL's clothes classifier) list it in `optimizers` (saved and restored for resuming) or, when it is
  re-created every epoch (FIRe²'s fine-grained head), in `step_optimizers`;
* its losses: `step` returns named terms with weights; the trainer sums them in order, steps, and logs
  each term's unweighted batch mean as `<name>_loss` (0 in epochs where a term is off);
* its schedule hooks: `epoch_start` (FIRe²'s clustering) runs before an epoch's batches, `before_forward`
  (CRE's erasing) on each batch before the model sees it;
* its retrieval feature: through the model's `arch` (`arch_updates`), since inference runs the model alone.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar

import torch
from torch import nn

from reid.config import RecipeError
from reid.losses import CrossEntropyLabelSmooth, TripletLoss

if TYPE_CHECKING:
    from reid.config import Recipe
    from reid.datasets import ReIDDataset
    from reid.models.model import ReIDModel, TrainOutput
    from reid.train import Trainer


class MethodConfigError(RecipeError):
    """A recipe asks a method for something it cannot do; the message says which key and how to fix it."""


@dataclass(frozen=True)
class LossTerm:
    value: torch.Tensor
    weight: float = 1.0


@dataclass
class StepResult:
    terms: dict[str, LossTerm]  # summed by the trainer, in insertion order: sum(weight * value)
    logs: dict[str, torch.Tensor] = field(default_factory=dict)  # logged only (accuracies, auxiliary losses)


@dataclass(frozen=True)
class EpochStart:
    stats: dict[str, Any] | None = None  # logged in the epoch record under the method's name
    reset_main_optimizer: bool = False  # re-create the main Adam before the epoch (FIRe²'s reset_optimizer)


class Method:
    name: ClassVar[str]
    uses_clothes_labels: ClassVar[bool] = True  # False: the method must train without them (FIRe², CSSC)
    terms: ClassVar[tuple[str, ...]]  # every term `step` may return (each logged as <term>_loss)
    logs: ClassVar[tuple[str, ...]] = ("id_acc",)  # every log `step` may return

    def __init__(self, recipe: Recipe, dataset: ReIDDataset):
        self.r = recipe
        self.dataset = dataset
        self.heads = nn.ModuleDict()
        self.id_loss = CrossEntropyLabelSmooth(recipe.loss.label_smoothing)
        self.tri_loss = TripletLoss(recipe.loss.triplet_margin, recipe.loss.triplet_distance)

    # -- set-up
    def arch_updates(self) -> dict[str, Any]:
        """Changes to the recipe's model record this method needs (the identity head's size, ...)."""
        return {"num_classes": self.dataset.num_train_pids}

    def attach(self, model: ReIDModel, device: torch.device) -> None:
        """Build the method's heads; called right after the model is built (heads draw from the same
        random stream, in the order the one-loop trainer created them)."""

    def train_records(self) -> list:
        return list(self.dataset.train)

    def train_set(self, records: list, spec, transform, cache: bool):
        from reid.transforms import TrainImages

        return TrainImages(records, spec, transform, cache=cache)

    def main_parameters(self) -> list[nn.Parameter]:
        """Head parameters the main optimiser trains."""
        return [p for p in self.heads.parameters() if p.requires_grad]

    def optimizers(self) -> dict[str, torch.optim.Optimizer]:
        """Persistent optimisers of the method's own (saved with the main one for resuming)."""
        return {}

    def step_optimizers(self) -> list[torch.optim.Optimizer]:
        """Optimisers zeroed and stepped together with the main one on this step's total loss."""
        return []

    # -- per batch
    def before_forward(self, trainer: Trainer, images: torch.Tensor, extra: list[torch.Tensor],
                       epoch: int) -> torch.Tensor:
        """The batch the model sees; `extra` holds the loader's fields after (image, pid, aux, camid), e.g.
        the part masks of `MaskedTrainImages`, on the device (CRE erases clothes here)."""
        return images

    # -- schedule
    def epoch_start(self, trainer: Trainer, epoch: int) -> EpochStart:
        return EpochStart()

    def triplet_on(self, epoch: int) -> bool:
        return self.r.loss.triplet_weight > 0 and epoch >= self.r.loss.triplet_start_epoch

    # -- losses
    def step(self, trainer: Trainer, out: TrainOutput, pids: torch.Tensor, aux: torch.Tensor,
             epoch: int) -> StepResult:
        raise NotImplementedError

    def identity_terms(self, out: TrainOutput, pids: torch.Tensor, epoch: int,
                       tri_feature: torch.Tensor) -> StepResult:
        """The terms every method here shares: label-smoothed identity CE (and the triplet when on)."""
        terms = {"id": LossTerm(self.id_loss(out.logits, pids))}
        if self.triplet_on(epoch):
            terms["tri"] = LossTerm(self.tri_loss(tri_feature, pids), self.r.loss.triplet_weight)
        return StepResult(terms, {"id_acc": (out.logits.argmax(1) == pids).float().mean()})
