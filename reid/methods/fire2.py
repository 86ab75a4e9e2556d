"""FIRe² (methods.md §3, `reid.fire2`) as a training method.

From `loss.fire2.start_epoch` on, every epoch starts by clustering each identity's training features into
pseudo "attribute" classes (FFM); the step adds the attribute-aware loss L_FFM on those classes and the
recomposition loss L_FAR. FIRe² never sees clothes labels: its training records carry clothes = -1 and the
loader's third field is the image index instead (`IndexedTrainImages`).
"""

from __future__ import annotations

import time
from dataclasses import replace

import numpy as np
import torch
import torch.nn.functional as F

from reid.fire2 import AttributeAwareLoss, FarHead, draw_donors, mine_attributes, recompose
from reid.methods.base import EpochStart, LossTerm, Method, StepResult
from reid.transforms import TrainImages


class IndexedTrainImages(TrainImages):
    """(image, pid, image index, camid): FIRe² looks pseudo-labels up by index and never gets clothes."""

    def __getitem__(self, idx: int):
        x, pid, _clothes, cam = super().__getitem__(idx)
        return x, pid, idx, cam


class Fire2(Method):
    name = "fire2"
    uses_clothes_labels = False
    terms = ("id", "tri", "ffm", "far")

    def __init__(self, recipe, dataset):
        super().__init__(recipe, dataset)
        f2 = recipe.loss.fire2
        self.ffm_loss = AttributeAwareLoss(f2.scale, f2.epsilon)
        self.ffm_head: torch.nn.Parameter | None = None
        self.opt_ffm: torch.optim.Optimizer | None = None
        # FIRe² trains without clothes labels: they are removed before anything can read them.
        self.records = [replace(r, clothes=-1) for r in dataset.train]

    def attach(self, model, device) -> None:
        if self.r.loss.fire2.far_weight > 0:
            self.heads["far"] = FarHead(model.feature_dim, self.dataset.num_train_pids).to(device)
        self.device = device

    def train_records(self):
        return self.records

    def train_set(self, records, spec, transform, cache):
        return IndexedTrainImages(records, spec, transform, cache=cache)

    def on(self, epoch: int) -> bool:
        return epoch >= self.r.loss.fire2.start_epoch

    def step_optimizers(self):
        return [self.opt_ffm] if self.opt_ffm is not None else []

    def epoch_start(self, trainer, epoch) -> EpochStart:
        """FFM's clustering step: pseudo-labels and a fresh fine-grained head from the current model.

        Uses identities and features only (no clothes). Deterministic: eval-mode features, no flip.
        """
        from reid.train import _ids, extract_features

        self.opt_ffm = None
        if not self.on(epoch):
            return EpochStart()
        f2 = self.r.loss.fire2
        t0 = time.perf_counter()
        feats = extract_features(trainer.model, self.records, trainer.spec, trainer.device, f2.feature_batch_size,
                                 flip=False)
        pids = _ids(self.records, "pid")
        self.attributes = mine_attributes(feats, pids, eps=f2.eps, min_samples=f2.min_samples, k1=f2.k1, k2=f2.k2,
                                          k1_fraction=f2.k1_fraction)
        self.attr_labels = torch.from_numpy(self.attributes.labels).to(trainer.device)
        self.pid2attr = torch.from_numpy(self.attributes.pid2attr(self.dataset.num_train_pids)).to(trainer.device)
        # The fine-grained head starts from the cluster centroids and is replaced every epoch, with an Adam
        # of its own; with reset_optimizer, the main Adam restarts too (as the authors' code).
        self.ffm_head = torch.nn.Parameter(torch.from_numpy(self.attributes.centroids).to(trainer.device))
        self.opt_ffm = torch.optim.Adam([self.ffm_head], lr=trainer.lr_at(epoch),
                                        weight_decay=self.r.optim.weight_decay)
        if trainer.out.is_dir():
            (trainer.out / "fire2").mkdir(exist_ok=True)
            np.save(trainer.out / "fire2" / f"labels_epoch{epoch + 1:03d}.npy", self.attributes.labels)
        stats = self.attributes.stats()
        stats["seconds"] = round(time.perf_counter() - t0, 1)
        return EpochStart(stats=stats, reset_main_optimizer=f2.reset_optimizer)

    def step(self, trainer, out, pids, index, epoch) -> StepResult:
        result = self.identity_terms(out, pids, epoch, out.neck)
        if not self.on(epoch):
            return result
        f2 = self.r.loss.fire2
        attr = self.attr_labels[index]  # the third field is the image index (IndexedTrainImages)
        if f2.ffm_weight > 0:
            cos = F.linear(F.normalize(out.neck, dim=1), F.normalize(self.ffm_head, dim=1))
            result.terms["ffm"] = LossTerm(self.ffm_loss(cos, attr, self.pid2attr[pids]), f2.ffm_weight)
        if f2.far_weight > 0:
            donors = draw_donors(attr, f2.far_parts)
            far_logits = self.heads["far"](trainer.model.pool(recompose(out.fmap, donors)))
            result.terms["far"] = LossTerm(self.id_loss(far_logits, pids), f2.far_weight)
        return result
