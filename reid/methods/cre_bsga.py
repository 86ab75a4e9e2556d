"""Mu et al., "Learning Clothes-irrelevant Cues for CC-ReID" (methods.md §5), as a training method: our reading.

The source names three parts and gives no architecture, weights or schedule (methods.md §5.3), so every
choice below is ours and is a recipe key:
* **CRE** (clothes-relevant information erasure): from `cre_start_epoch` to `cre_end_epoch`, each training
  image has, with probability `cre_p`, its clothes pixels (mask roles `cre_labels`, default top, bottom,
  shoes, outerwear/bag) replaced by the normalisation mean (`cre_fill: mean`) or by uniform random pixels
  (`random`), after the usual augmentations (which move the mask with the image, `reid.transforms`). The
  erased image replaces the original in the batch and gets the same losses.
* **BSGA** (body-shape-guided attention): the attention branch is part of the model (`model.bsga`,
  `reid.models.bsga`: it runs at inference and needs no mask there); here its logits are supervised with the
  body-shape mask (roles `body_labels`): binary cross-entropy against the share of body pixels in each cell
  of the attention map, cells weighted by their share of readable pixels (random erasing hides some).
* **Batch cross-clothes triplet** (`reid.losses.CrossClothesTripletLoss`): positives are the anchor's
  images in other clothes only; the outfit-aware sampler (`data.sampler: outfits`) makes sure there are some.
* The identity CE and the baseline's batch-hard triplet stay, so each part is an addition to the baseline.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from reid.datasets.masks import IGNORE, missing_masks
from reid.losses import CrossClothesTripletLoss
from reid.methods.base import LossTerm, Method, MethodConfigError, StepResult


def erase_clothes(images: torch.Tensor, masks: torch.Tensor, labels, p: float, fill: str, mean, std,
                  scale: float = 1 / 255) -> tuple[torch.Tensor, torch.Tensor]:
    """CRE on a normalised batch: with probability p per image, its pixels whose mask role is in `labels` get
    the fill; every other pixel is returned unchanged. -> (images, which images were erased).

    fill "mean": the normalisation mean (0 in normalised space); "random": uniform random pixel values
    (0-255, normalised like the image). Random draws come from torch's global CPU generator.
    """
    n = images.shape[0]
    chosen = torch.rand(n) < p
    region = torch.isin(masks, torch.as_tensor(list(labels), dtype=masks.dtype, device=masks.device))
    # an image without clothes pixels (e.g. an unmasked one, all IGNORE) is not counted as erased
    chosen &= region.flatten(1).any(1).cpu()
    region &= chosen.to(masks.device)[:, None, None]
    if fill == "mean":
        value = torch.zeros((), dtype=images.dtype, device=images.device)
    elif fill == "random":
        m = torch.as_tensor(mean, dtype=images.dtype)[:, None, None]
        s = torch.as_tensor(std, dtype=images.dtype)[:, None, None]
        value = ((torch.rand(images.shape, dtype=images.dtype) * 255.0 * scale - m) / s).to(images.device)
    else:
        raise ValueError(f"cre_fill must be 'mean' or 'random', got {fill!r}")
    return torch.where(region[:, None], value, images), chosen


def body_targets(masks: torch.Tensor, size: tuple[int, int], body_labels) -> tuple[torch.Tensor, torch.Tensor]:
    """Masks (N, H, W) of roles -> (share of body pixels, share of readable pixels) per cell of `size`."""
    valid = (masks != IGNORE).float()[:, None]
    body = torch.isin(masks, torch.as_tensor(list(body_labels), dtype=masks.dtype, device=masks.device))
    body = body.float()[:, None] * valid
    readable = F.adaptive_avg_pool2d(valid, size)
    share = F.adaptive_avg_pool2d(body, size) / readable.clamp(min=1e-6)
    return share.clamp(0, 1), readable


def bsga_loss(logits: torch.Tensor, masks: torch.Tensor, body_labels) -> tuple[torch.Tensor, torch.Tensor]:
    """BCE of the attention logits against the body share per cell, weighted by readable share.
    -> (loss, share of the attention mass that falls on body cells (target >= 0.5))."""
    target, weight = body_targets(masks, tuple(logits.shape[-2:]), body_labels)
    bce = F.binary_cross_entropy_with_logits(logits, target, reduction="none")
    loss = (bce * weight).sum() / weight.sum().clamp(min=1e-6)
    with torch.no_grad():
        a = torch.sigmoid(logits) * weight
        inside = (a * (target >= 0.5)).sum() / a.sum().clamp(min=1e-12)
    return loss, inside


class CreBsga(Method):
    name = "cre_bsga"
    terms = ("id", "tri", "xtri", "bsga")
    logs = ("id_acc", "cre_share", "bsga_inside", "xtri_anchors", "xtri_hit")

    def __init__(self, recipe, dataset):
        super().__init__(recipe, dataset)
        c = recipe.loss.cre_bsga
        self.c = c
        self.bsga_on = recipe.model.bsga and c.bsga_weight > 0
        self.needs_masks = c.cre_p > 0 or self.bsga_on
        if self.needs_masks:
            missing = missing_masks(dataset.train)
            if missing:
                parts = " and ".join(p for p, on in (("CRE (loss.cre_bsga.cre_p > 0)", c.cre_p > 0),
                                                    ("BSGA (model.bsga)", self.bsga_on)) if on)
                raise MethodConfigError(
                    f"recipe {recipe.name}: {parts} need per-image part masks, but data set {dataset.name} at "
                    f"{dataset.root} has none for {missing} of {len(dataset.train)} training images; set data.masks "
                    f"to a folder of human-parsing maps that mirrors the data set (data.mask_layout: lip or atr), "
                    f"or declare a data.extra_train set without masks `unmasked: true`")
        if c.xtri_weight > 0 and any(r.clothes < 0 for r in dataset.train):
            raise MethodConfigError(f"recipe {recipe.name}: the cross-clothes triplet (loss.cre_bsga.xtri_weight) "
                                    f"needs clothes labels, which data set {dataset.name} does not have; set it to 0")
        self.xtri_loss = CrossClothesTripletLoss(c.xtri_margin, recipe.loss.triplet_distance)
        self._masks: torch.Tensor | None = None
        self._cre_share = 0.0

    def train_set(self, records, spec, transform, cache):
        if not self.needs_masks:
            return super().train_set(records, spec, transform, cache)
        from reid.transforms import MaskedTrainImages, MaskedTrainTransform

        joint = MaskedTrainTransform(spec, **self.r.augment.model_dump())
        return MaskedTrainImages(records, spec, joint, cache=cache, mask_layout=self.r.data.mask_layout)

    def cre_on(self, epoch: int) -> bool:
        c = self.c
        return c.cre_p > 0 and epoch >= c.cre_start_epoch and (c.cre_end_epoch is None or epoch < c.cre_end_epoch)

    def before_forward(self, trainer, images, extra, epoch):
        self._masks = extra[0] if extra else None
        self._cre_share = 0.0
        if self.cre_on(epoch):
            s = trainer.spec
            images, chosen = erase_clothes(images, self._masks, self.c.cre_labels, self.c.cre_p, self.c.cre_fill,
                                           s.mean, s.std, s.scale)
            self._cre_share = float(chosen.float().mean())
        return images

    def step(self, trainer, out, pids, clothes, epoch) -> StepResult:
        result = self.identity_terms(out, pids, epoch, out.neck)
        c = self.c
        result.logs["cre_share"] = torch.tensor(self._cre_share)
        if c.xtri_weight > 0 and epoch >= c.xtri_start_epoch:
            loss, stats = self.xtri_loss(out.neck, pids, clothes)
            result.terms["xtri"] = LossTerm(loss, c.xtri_weight)
            result.logs.update(stats)
        if self.bsga_on:
            if out.attention is None:
                raise MethodConfigError(f"recipe {self.r.name}: model.bsga is on but the model gave no attention")
            loss, inside = bsga_loss(out.attention, self._masks, c.body_labels)
            result.terms["bsga"] = LossTerm(loss, c.bsga_weight)
            result.logs["bsga_inside"] = inside
        return result
