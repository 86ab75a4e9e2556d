"""Losses of the CAL baseline (methods.md §1.2)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class CrossEntropyLabelSmooth(nn.Module):
    """CE against q = (1-eps)*onehot(y) + eps/N (torch's label_smoothing has exactly this target)."""

    def __init__(self, epsilon: float = 0.1):
        super().__init__()
        self.epsilon = epsilon

    def forward(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(logits, targets, label_smoothing=self.epsilon)


class TripletLoss(nn.Module):
    """Batch-hard triplet: for each anchor, hardest positive and hardest negative; hinge with a margin.

    distance "cosine": 1 - cos on L2-normalised features (CAL); "euclidean": plain L2 distance.
    """

    def __init__(self, margin: float = 0.3, distance: str = "cosine"):
        super().__init__()
        if distance not in ("cosine", "euclidean"):
            raise ValueError(f"triplet distance must be 'cosine' or 'euclidean', got {distance!r}")
        self.margin = margin
        self.distance = distance

    def pairwise(self, feats: torch.Tensor) -> torch.Tensor:
        if self.distance == "cosine":
            f = F.normalize(feats, dim=1)
            return 1.0 - f @ f.t()
        sq = (feats * feats).sum(1, keepdim=True)
        return (sq + sq.t() - 2.0 * feats @ feats.t()).clamp(min=1e-12).sqrt()

    def forward(self, feats: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        dist = self.pairwise(feats)
        same = targets[:, None] == targets[None, :]
        eye = torch.eye(len(targets), dtype=torch.bool, device=feats.device)
        pos = same & ~eye
        if not pos.any(dim=1).all() or same.all(dim=1).any():
            raise ValueError("batch-hard triplet needs >= 2 images of each identity and >= 2 identities per batch; "
                             "use the P x K identity sampler with K >= 2")
        hardest_pos = dist.masked_fill(~pos, float("-inf")).amax(dim=1)
        hardest_neg = dist.masked_fill(same, float("inf")).amin(dim=1)
        return F.relu(hardest_pos - hardest_neg + self.margin).mean()


class ClothesClassificationLoss(nn.Module):
    """CE over scaled cosine logits (CosFace with margin 0); trains the clothes head on detached features."""

    def __init__(self, scale: float = 16.0):
        super().__init__()
        self.scale = scale

    def forward(self, cos_logits: torch.Tensor, clothes: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(self.scale * cos_logits, clothes)


class ClothesBasedAdversarialLoss(nn.Module):
    """CAL's L_CA.

    For sample i and clothes class c: log p_ic = z_ic - log(exp(z_ic) + sum_{j in S-(i)} exp(z_ij)),
    z = scale * cos, S+(i) = clothes of identity y_i, S-(i) = all other clothes. The normaliser leaves
    out the person's other outfits, so the feature is not pushed to separate them.
    Target q_ic = (1-eps)[c = c_i] + eps/|S+(i)| [c in S+(i)]; loss = -mean_i sum_c q_ic log p_ic.
    """

    def __init__(self, scale: float = 16.0, epsilon: float = 0.1):
        super().__init__()
        self.scale = scale
        self.epsilon = epsilon

    def forward(self, cos_logits: torch.Tensor, clothes: torch.Tensor, positive_mask: torch.Tensor) -> torch.Tensor:
        z = self.scale * cos_logits
        pos = positive_mask.to(dtype=torch.bool, device=z.device)
        if not pos.gather(1, clothes[:, None]).all():
            raise ValueError("positive_mask must include each sample's own clothes class (check pid2clothes)")
        neg_lse = torch.logsumexp(z.masked_fill(pos, float("-inf")), dim=1, keepdim=True)
        log_p = z - torch.logaddexp(z, neg_lse)
        onehot = F.one_hot(clothes, z.shape[1]).to(z.dtype)
        posf = pos.to(z.dtype)
        target = (1 - self.epsilon) * onehot + self.epsilon * posf / posf.sum(dim=1, keepdim=True)
        # Only entries inside S+ carry weight; masking avoids 0 * (-inf) when a class is unreachable.
        return -(target * log_p.masked_fill(~pos, 0.0)).sum(dim=1).mean()


class CrossClothesTripletLoss(TripletLoss):
    """Mu et al.'s batch cross-clothes triplet (methods.md §5.1-5.2, our reading of L_BCTri):

        L = mean over (anchor i, positive j) of max(0, m + d(x_i, x_j) - d(x_i, x_k)),

    over every positive j of the anchor's identity that wears **other clothes** (same pid, other clothes
    label), with x_k the anchor's hardest (closest) negative in the batch. Same-outfit positives never enter.
    The paper's sum over n is averaged over the pairs here (our choice: a sum would grow with K). Anchors with
    no cross-clothes positive in the batch add nothing; `forward` also returns the share of anchors that had
    one and the share of those whose closest cross-clothes positive is closer than their closest negative.
    """

    def forward(self, feats: torch.Tensor, targets: torch.Tensor, clothes: torch.Tensor  # type: ignore[override]
                ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        dist = self.pairwise(feats)
        same = targets[:, None] == targets[None, :]
        cross = same & (clothes[:, None] != clothes[None, :])
        neg = ~same
        hardest_neg = dist.masked_fill(~neg, float("inf")).amin(dim=1)
        valid = cross.any(dim=1) & neg.any(dim=1)
        pairs = cross & valid[:, None]
        hinge = F.relu(self.margin + dist - hardest_neg[:, None])
        n_pairs = pairs.sum()
        loss = hinge.masked_fill(~pairs, 0.0).sum() / n_pairs.clamp(min=1)
        with torch.no_grad():
            nearest_cross = dist.masked_fill(~cross, float("inf")).amin(dim=1)
            hit = (nearest_cross < hardest_neg) & valid
            stats = {"xtri_anchors": valid.float().mean(),
                     "xtri_hit": hit.float().sum() / valid.float().sum().clamp(min=1)}
        return loss, stats
