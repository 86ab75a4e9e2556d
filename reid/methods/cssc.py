"""CSSC (Wang et al., ICASSP 2025; methods.md §2) as a training method. No clothes labels are read.

The inference part (two-branch last stage, SMR refinement) is the model's `CSSCTrunk` (reid.models.cssc);
this method owns SMR's training-only parts, one `SMRHead` per SMR module (none shared):
* global: BN(g) (bias frozen at 0, gamma 1) of the raw pooled SMR input g;
* local: the input map cut into `stripes` horizontal stripes, each pooled with the SMR's pooling kind and
  put through its own bias-free Linear(C -> local_dim) + BN (both with torch's default init);
* identity: a bias-free classifier on [BN(g); l_1; ...; l_P] (init N(0, 0.001)).
Per SMR: L_id(classifier) + L_tri(g) (pre-BN g, methods.md §2.1). On the final feature: L_id(BN(f)) +
L_tri(f), f = the pre-BN max-pooled output of the shared last block (the retrieval feature). All weights 1,
triplet terms only from `loss.triplet_start_epoch` (the authors: 35, 0-based) [paper Eq. 10, code].
"""

from __future__ import annotations

import torch
from torch import nn

from reid.methods.base import LossTerm, Method, MethodConfigError, StepResult
from reid.models.cssc import global_pool, smr_layout


class SMRHead(nn.Module):
    def __init__(self, channels: int, stripes: int, local_dim: int, num_classes: int):
        super().__init__()
        self.stripes = stripes
        self.bn = nn.BatchNorm1d(channels)
        nn.init.ones_(self.bn.weight)
        nn.init.zeros_(self.bn.bias)
        self.bn.bias.requires_grad_(False)
        self.local = nn.ModuleList(nn.Sequential(nn.Linear(channels, local_dim, bias=False), nn.BatchNorm1d(local_dim))
                                   for _ in range(stripes))
        self.classifier = nn.Linear(channels + stripes * local_dim, num_classes, bias=False)
        nn.init.normal_(self.classifier.weight, std=0.001)

    def local_features(self, fmap: torch.Tensor, pool: str) -> list[torch.Tensor]:
        """One vector per horizontal stripe of H // stripes rows, from the top; as in the authors' code, rows
        left over when H is not a multiple of `stripes` belong to no stripe."""
        rows = fmap.shape[2] // self.stripes
        if rows == 0:
            raise MethodConfigError(
                f"CSSC: the last-stage map has {fmap.shape[2]} rows, fewer than loss.cssc.stripes = {self.stripes}; "
                f"use a taller input (data.height), model.last_stride 1, or fewer stripes")
        return [head(global_pool(fmap[:, :, k * rows:(k + 1) * rows], pool)) for k, head in enumerate(self.local)]

    def forward(self, fmap: torch.Tensor, g: torch.Tensor, pool: str) -> torch.Tensor:
        return self.classifier(torch.cat([self.bn(g), *self.local_features(fmap, pool)], dim=1))


class CSSC(Method):
    name = "cssc"
    uses_clothes_labels = False

    def __init__(self, recipe, dataset):
        super().__init__(recipe, dataset)
        m = recipe.model
        where = f"recipe {recipe.name}"
        if m.trunk != "cssc":
            raise MethodConfigError(f"{where}: loss.method cssc needs the two-branch trunk; set model.trunk: cssc")
        if m.feature != "pooled":
            raise MethodConfigError(f"{where}: CSSC retrieves with the pre-BN pooled feature (methods.md §2.4); "
                                    "set model.feature: pooled")
        self.layout = []  # filled by attach: (name, pool) of each SMR module
        self.terms = ("id", "tri")

    def attach(self, model, device) -> None:
        trunk = model.backbone
        if model.arch.smr:
            self.layout = smr_layout(len(trunk.branch1))
        c = self.r.loss.cssc
        for name, _pool in self.layout:
            self.heads[name] = SMRHead(trunk.out_dim, c.stripes, c.local_dim, self.dataset.num_train_pids).to(device)
        self.terms = ("id", "tri", *(f"{name}_{kind}" for name, _ in self.layout for kind in ("id", "tri")))

    def step(self, trainer, out, pids, aux, epoch) -> StepResult:
        # L_cssc: identity on BN(f) (the model's neck and bias-free head), triplet on the pre-BN f
        result = self.identity_terms(out, pids, epoch, out.pooled)
        weight = self.r.loss.cssc.smr_weight
        tri_on = self.triplet_on(epoch)
        for tap in out.taps:
            logits = self.heads[tap.name](tap.fmap, tap.g, tap.pool)
            result.terms[f"{tap.name}_id"] = LossTerm(self.id_loss(logits, pids), weight)
            if tri_on:
                result.terms[f"{tap.name}_tri"] = LossTerm(self.tri_loss(tap.g, pids),
                                                           weight * self.r.loss.triplet_weight)
        return result
