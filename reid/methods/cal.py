"""CAL (methods.md §1): a cosine clothes classifier with its own Adam and the clothes-based adversarial loss.

One CAL step (methods.md §1.6): forward once; from `start_epoch_cal` on, (1) step the clothes head's own Adam
on CE over detached features, (2) re-score the live features with the updated clothes head (its weights
detached), (3) the trainer steps the main optimiser on L_ID + w * triplet + L_CA.
"""

from __future__ import annotations

import torch

from reid.losses import ClothesBasedAdversarialLoss, ClothesClassificationLoss
from reid.methods.base import LossTerm, Method, StepResult
from reid.models.heads import CosineClassifier


class CAL(Method):
    name = "cal"
    terms = ("id", "tri", "adv")
    logs = ("id_acc", "clothes_loss", "clothes_acc", "clothes_acc_within_id")  # within-id: falls as CAL works

    def __init__(self, recipe, dataset):
        super().__init__(recipe, dataset)
        self.clothes_loss = ClothesClassificationLoss(recipe.loss.clothes_scale)
        self.adv_loss = ClothesBasedAdversarialLoss(recipe.loss.clothes_scale, recipe.loss.adv_epsilon)

    def attach(self, model, device) -> None:
        self.heads["clothes"] = CosineClassifier(model.feature_dim, self.dataset.num_train_clothes).to(device)
        self.pid2clothes = torch.from_numpy(self.dataset.pid2clothes).to(device)
        # CAL's clothes head has its own Adam, never decayed (only the main optimiser has a schedule).
        self.opt_clothes = torch.optim.Adam(self.heads["clothes"].parameters(), lr=self.r.optim.clothes_lr,
                                            weight_decay=self.r.optim.clothes_weight_decay)

    def main_parameters(self):
        return []  # the clothes head is trained by its own Adam only

    def optimizers(self):
        return {"clothes": self.opt_clothes}

    def step(self, trainer, out, pids, clothes, epoch) -> StepResult:
        return self.add_cal_terms(self.identity_terms(out, pids, epoch, out.neck), out, pids, clothes, epoch)

    def add_cal_terms(self, result: StepResult, out, pids, clothes, epoch) -> StepResult:
        """From `start_epoch_cal` on: the clothes head's own step, then L_CA on the live neck feature."""
        if epoch < self.r.loss.start_epoch_cal:
            return result
        head = self.heads["clothes"]
        c_logits = head(out.neck.detach())
        c_loss = self.clothes_loss(c_logits, clothes)
        self.opt_clothes.zero_grad(set_to_none=True)
        c_loss.backward()
        self.opt_clothes.step()
        live = head(out.neck, detach_weight=True)
        pos = self.pid2clothes[pids]
        result.terms["adv"] = LossTerm(self.adv_loss(live, clothes, pos), self.r.loss.adv_weight)
        with torch.no_grad():
            result.logs.update(
                clothes_loss=c_loss.detach(), clothes_acc=(c_logits.argmax(1) == clothes).float().mean(),
                clothes_acc_within_id=(c_logits.masked_fill(~pos, -2).argmax(1) == clothes).float().mean())
        return result
