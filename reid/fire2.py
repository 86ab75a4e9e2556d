"""FIRe² (Wang et al., TIFS 2024): fine-grained feature mining (FFM) and attribute recomposition (FAR).

Written from the method description in methods.md §3; no code of the authors is used.

* **FFM** (`mine_attributes`): once per epoch from `loss.fire2.start_epoch` on, the training images of
  each identity are clustered on their own, with a k-reciprocal Jaccard distance (`jaccard_distance`)
  and DBSCAN (min_samples 1, so the clusters are the connected components of d_J <= eps). Each cluster
  becomes a fine-grained ("attribute") class. Cluster ids are offset per identity, so a pseudo-label
  always belongs to exactly one person. `AttributeAwareLoss` is a scaled-cosine softmax over all
  fine-grained classes whose target puts (1-eps) on the sample's own cluster and eps spread over the
  clusters of its identity.
* **FAR** (`recompose`): the last feature map is cut into P horizontal parts; in each part a sample's
  channel statistics (mean, std; detached) are replaced by those of a donor from the batch with a
  different pseudo-label. The recomposed map goes through pooling, its own BN and identity classifier,
  and is trained to keep the *original* identity.

Nothing here reads clothes labels: the only inputs are features, identities and pseudo-labels.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn


# ------------------------------------------------------------------------------------------- clustering

def effective_k(n: int, k1: int, k2: int, k1_fraction: float = 1.0) -> tuple[int, int]:
    """Neighbourhood sizes for an identity with n images, counted as the authors' code counts them: the k1
    (and k2) nearest images *including the image itself*.

    `k1_fraction` 1.0 is the authors' rule: k1 = min(k1, n), i.e. unchanged for identities with >= k1 images
    (their code needs that many; with fewer it reads past its neighbour lists). A smaller fraction also caps
    k1 at that share of the identity's images (at least 2), so that a k1 larger than an outfit's image count
    cannot link every outfit to every other: the SynthCC variant. k2 keeps its ratio to k1 when k1 is cut.
    """
    if n < 2:
        return 0, 0
    k1e = int(max(2, min(k1, n, int(np.floor(k1_fraction * n)))))
    k2e = k2 if k1e >= k1 else int(round(k2 * k1e / max(k1, 1)))
    return k1e, int(max(1, min(k2e, n)))


def jaccard_distance(feats: np.ndarray, k1: int, k2: int) -> np.ndarray:
    """k-reciprocal Jaccard distance (re-ranking, Zhong et al. 2017) among the rows of `feats`.

    feats: (n, d) L2-normalised. k1 and k2 count the image itself, as the FIRe² code (its kNN search returns
    the image as its own first neighbour): the k1-reciprocal set of i holds i and the j among i's k1 nearest
    that have i among their own k1 nearest; it is expanded by the round(k1/2)-reciprocal sets (round(k1/2) + 1
    nearest, at most k1) of its members when those overlap it by more than 2/3. Vectorised over the set;
    memory O(n^2) (plus an n x n x chunk block).
    """
    x = np.asarray(feats, dtype=np.float64)
    n = len(x)
    if n == 0:
        return np.zeros((0, 0), np.float32)
    if n == 1:
        return np.zeros((1, 1), np.float32)
    k1 = int(min(max(k1, 1), n))
    k2 = int(min(max(k2, 1), n))
    d = np.clip(2.0 - 2.0 * (x @ x.T), 0.0, None)  # squared L2 of unit vectors
    np.fill_diagonal(d, 0.0)
    rank = np.argsort(d, axis=1, kind="stable")
    rows = np.arange(n)[:, None]

    def reciprocal(columns: int) -> np.ndarray:
        m = np.zeros((n, n), bool)
        m[rows, rank[:, :columns]] = True
        m[np.arange(n), np.arange(n)] = True
        return m & m.T

    rec = reciprocal(k1)
    half = reciprocal(min(k1, int(np.around(k1 / 2)) + 1))
    # Expand i's set by the half-size reciprocal set of each member j that overlaps it by more than 2/3.
    overlap = rec.astype(np.float64) @ half.T.astype(np.float64)  # |half(j) ∩ rec(i)|
    take = rec & (overlap > (2.0 / 3.0) * half.sum(1)[None, :])
    expanded = rec | ((take.astype(np.float64) @ half.astype(np.float64)) > 0)
    w = np.where(expanded, np.exp(-d), 0.0)
    v = w / w.sum(1, keepdims=True)
    if k2 > 1:  # local query expansion: average over the k2 nearest (self included)
        v = v[rank[:, :k2]].mean(axis=1)
    # m_ij = sum_k min(v_ik, v_jk), in row chunks to bound memory
    m = np.empty((n, n))
    step = max(1, int(2e7 // (n * n)))
    for s in range(0, n, step):
        m[s:s + step] = np.minimum(v[s:s + step, None, :], v[None, :, :]).sum(-1)
    dj = 1.0 - m / (2.0 - m)
    dj = np.clip(dj, 0.0, None)
    dj = 0.5 * (dj + dj.T)
    np.fill_diagonal(dj, 0.0)
    return dj.astype(np.float32)


def cluster_identity(feats: np.ndarray, eps: float, min_samples: int, k1: int, k2: int,
                     k1_fraction: float) -> np.ndarray:
    """Cluster one identity's features -> local labels 0..C-1 (outliers become singleton clusters)."""
    from sklearn.cluster import DBSCAN

    n = len(feats)
    if n <= 1:
        return np.zeros(n, np.int64)
    k1e, k2e = effective_k(n, k1, k2, k1_fraction)
    dist = jaccard_distance(feats, k1e, k2e)
    labels = DBSCAN(eps=eps, min_samples=min_samples, metric="precomputed").fit_predict(dist).astype(np.int64)
    noise = labels < 0
    if noise.any():  # only when min_samples > 1: every outlier is its own attribute
        labels[noise] = labels.max(initial=-1) + 1 + np.arange(int(noise.sum()))
    # canonical order: clusters numbered by their first image
    _, first, inverse = np.unique(labels, return_index=True, return_inverse=True)
    rank = np.argsort(np.argsort(first, kind="stable"), kind="stable")
    return rank[inverse].astype(np.int64)


@dataclass
class AttributeLabels:
    labels: np.ndarray  # (N,) global pseudo-label per training image
    owner: np.ndarray  # (num_classes,) identity of each pseudo-label
    centroids: np.ndarray  # (num_classes, d) mean of the L2-normalised features of each class

    @property
    def num_classes(self) -> int:
        return len(self.owner)

    def pid2attr(self, num_pids: int) -> np.ndarray:
        m = np.zeros((num_pids, self.num_classes), bool)
        m[self.owner, np.arange(self.num_classes)] = True
        return m

    def stats(self) -> dict[str, float]:
        counts = np.bincount(self.owner)
        sizes = np.bincount(self.labels, minlength=self.num_classes)
        return {"classes": int(self.num_classes), "clusters_per_id": round(float(counts[counts > 0].mean()), 3),
                "singleton_frac": round(float((sizes == 1).mean()), 4)}


def mine_attributes(feats: np.ndarray, pids: np.ndarray, eps: float = 0.4, min_samples: int = 1, k1: int = 20,
                    k2: int = 6, k1_fraction: float = 0.25) -> AttributeLabels:
    """Per-identity clustering -> globally unique pseudo-labels (offset per identity, never shared)."""
    feats = np.asarray(feats, np.float32)
    pids = np.asarray(pids, np.int64)
    feats = feats / np.maximum(np.linalg.norm(feats, axis=1, keepdims=True), 1e-12)
    labels = np.empty(len(pids), np.int64)
    owners = []
    offset = 0
    for pid in np.unique(pids):
        idx = np.flatnonzero(pids == pid)
        local = cluster_identity(feats[idx], eps, min_samples, k1, k2, k1_fraction)
        labels[idx] = local + offset
        c = int(local.max()) + 1
        owners.append(np.full(c, pid, np.int64))
        offset += c
    owner = np.concatenate(owners) if owners else np.zeros(0, np.int64)
    sums = np.zeros((offset, feats.shape[1]), np.float64)
    np.add.at(sums, labels, feats)
    centroids = (sums / np.bincount(labels, minlength=offset)[:, None]).astype(np.float32)
    return AttributeLabels(labels, owner, centroids)


def cluster_purity(pred: np.ndarray, truth: np.ndarray) -> tuple[float, float]:
    """(purity, inverse purity): share of images in their cluster's majority class, and the reverse.

    Evaluation only (truth = clothes labels). Purity alone rewards singletons; inverse purity (how
    whole each true outfit stays) rewards one big cluster; report both.
    """
    pred, truth = np.asarray(pred), np.asarray(truth)
    _, p = np.unique(pred, return_inverse=True)
    _, t = np.unique(truth, return_inverse=True)
    table = np.zeros((p.max() + 1, t.max() + 1), np.int64)
    np.add.at(table, (p, t), 1)
    n = len(pred)
    return float(table.max(1).sum() / n), float(table.max(0).sum() / n)


# ------------------------------------------------------------------------------------------------ losses

class AttributeAwareLoss(nn.Module):
    """L_FFM: CE over scale * cos(f, w_k) for all fine-grained classes k, with target
    q = (1-eps)[k = a_i] + eps/|A(y_i)| [k in A(y_i)] (A = the clusters of the sample's identity)."""

    def __init__(self, scale: float = 16.0, epsilon: float = 0.1):
        super().__init__()
        self.scale, self.epsilon = scale, epsilon

    def forward(self, cos_logits: torch.Tensor, attr: torch.Tensor, same_id_mask: torch.Tensor) -> torch.Tensor:
        logp = F.log_softmax(self.scale * cos_logits, dim=1)
        pos = same_id_mask.to(logp.dtype)
        target = self.epsilon * pos / pos.sum(1, keepdim=True)
        target = target + (1 - self.epsilon) * F.one_hot(attr, logp.shape[1]).to(logp.dtype)
        return -(target * logp).sum(1).mean()


def _correction(flat: torch.Tensor) -> int:
    """Unbiased variance (as the reference), except for a one-pixel part, whose variance is then 0."""
    return 1 if flat.shape[-1] > 1 else 0


def part_statistics(fmap: torch.Tensor, parts: int, eps: float = 1e-6) -> tuple[torch.Tensor, torch.Tensor]:
    """Per horizontal part and channel: mean and std (unbiased var + eps) -> two (B, P, C) tensors."""
    mus, sigmas = [], []
    for chunk in torch.tensor_split(fmap, parts, dim=2):
        flat = chunk.flatten(2)
        mus.append(flat.mean(-1))
        sigmas.append((flat.var(-1, correction=_correction(flat)) + eps).sqrt())
    return torch.stack(mus, 1), torch.stack(sigmas, 1)


def draw_donors(attr: torch.Tensor, parts: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """(P, B) donor index per part and sample, uniform over batch samples with another pseudo-label.

    A sample whose pseudo-label fills the whole batch keeps itself as donor (no-op recomposition).
    """
    b = attr.shape[0]
    valid = attr[:, None] != attr[None, :]
    r = torch.rand((parts, b, b), generator=generator, device=attr.device)
    r = r.masked_fill(~valid, -1.0)
    donors = r.argmax(-1)
    none = ~valid.any(1)
    if none.any():
        donors[:, none] = torch.arange(b, device=attr.device)[none]
    return donors


def recompose(fmap: torch.Tensor, donors: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    """FAR: in part k of sample i, replace the channel mean/std by those of sample donors[k, i].

    fmap (B, C, H, W) is cut into P = donors.shape[0] horizontal parts (torch.tensor_split over H).

    The statistics are detached, so gradients reach the backbone only through the normalised content.
    """
    parts = donors.shape[0]
    mu, sigma = (t.detach()[..., None, None] for t in part_statistics(fmap, parts, eps))  # (B, P, C, 1, 1)
    out = []
    for k, chunk in enumerate(torch.tensor_split(fmap, parts, dim=2)):
        m, s = mu[:, k], sigma[:, k]
        out.append((chunk - m) / s * s[donors[k]] + m[donors[k]])
    return torch.cat(out, dim=2)


class FarHead(nn.Module):
    """FAR's own BN (bias frozen at 0) and bias-free identity classifier; training only."""

    def __init__(self, dim: int, num_classes: int):
        super().__init__()
        self.bn = nn.BatchNorm1d(dim)
        self.bn.bias.requires_grad_(False)
        nn.init.zeros_(self.bn.bias)
        self.classifier = nn.Linear(dim, num_classes, bias=False)
        nn.init.normal_(self.classifier.weight, std=0.001)

    def forward(self, pooled: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.bn(pooled))
