"""Rank-k and mAP under the general, same-clothes and cloth-changing ReID protocols.

Semantics follow Simple-CCReID (see methods.md §6.2/§6.3):

* only gallery items of the query's own identity are ever removed ("junk"); other identities
  always stay in the ranking as negatives;
* general: junk = same pid and same camera; good = same pid, other camera;
* cloth_changing: junk additionally includes same pid with the same clothes;
* same_clothes: junk additionally includes same pid with different clothes;
* a query with no good match is skipped and counted in ``n_skipped``;
* CMC: hit at (0-based) position <= k-1 after junk removal; AP: mean over hits of
  (hit number / 1-based position), no interpolation.

numpy only, and no torch import, so light consumers (synth's sanity benchmark) can use it.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

MODES = ("general", "same_clothes", "cloth_changing")

# Rows of the (Q, G) matrices processed at once: bounds memory to a few hundred MB on
# DeepChange-sized galleries while staying fully vectorised inside a block.
_BLOCK_ROWS = 512


def _as_int_vector(name: str, values, length: int | None = None) -> np.ndarray:
    arr = np.asarray(values)
    if arr.ndim != 1:
        raise ValueError(f"evaluate: {name} must be a 1-D array, got shape {arr.shape}")
    if arr.size and not np.issubdtype(arr.dtype, np.integer):
        raise ValueError(f"evaluate: {name} must hold integers, got dtype {arr.dtype}")
    if length is not None and arr.shape[0] != length:
        raise ValueError(f"evaluate: {name} has {arr.shape[0]} entries but the distance matrix needs {length}")
    return arr.astype(np.int64, copy=False)


def evaluate(
    distmat: np.ndarray,
    q_pids,
    g_pids,
    q_camids,
    g_camids,
    q_clothes=None,
    g_clothes=None,
    mode: str = "general",
    ranks: Sequence[int] = (1, 5, 10),
) -> dict[str, float]:
    """Score a (Q, G) distance matrix (smaller = more similar).

    Returns ``{"rank1": .., "rank5": .., "rank10": .., "mAP": .., "n_valid": .., "n_skipped": ..}``;
    rank-k and mAP are percentages over the valid queries (0.0 when no query is valid).
    """
    if mode not in MODES:
        raise ValueError(f"evaluate: mode must be one of {MODES}, got {mode!r}")
    dist = np.asarray(distmat, dtype=np.float64)
    if dist.ndim != 2:
        raise ValueError(f"evaluate: distmat must be 2-D (queries x gallery), got shape {dist.shape}")
    if np.isnan(dist).any():
        raise ValueError("evaluate: distmat contains NaN; check the features for NaN/inf before scoring")
    n_q, n_g = dist.shape
    q_pids = _as_int_vector("q_pids", q_pids, n_q)
    g_pids = _as_int_vector("g_pids", g_pids, n_g)
    q_camids = _as_int_vector("q_camids", q_camids, n_q)
    g_camids = _as_int_vector("g_camids", g_camids, n_g)
    needs_clothes = mode != "general"
    if needs_clothes and (q_clothes is None or g_clothes is None):
        raise ValueError(f"evaluate: mode {mode!r} needs q_clothes and g_clothes (clothes ids per image)")
    if needs_clothes:
        q_clothes = _as_int_vector("q_clothes", q_clothes, n_q)
        g_clothes = _as_int_vector("g_clothes", g_clothes, n_g)
    ranks = tuple(int(r) for r in ranks)
    if any(r < 1 for r in ranks):
        raise ValueError(f"evaluate: ranks must be >= 1, got {ranks}")

    cmc_hits = np.zeros(len(ranks), dtype=np.float64)
    ap_sum = 0.0
    n_valid = 0
    for start in range(0, n_q, _BLOCK_ROWS):
        stop = min(start + _BLOCK_ROWS, n_q)
        order = np.argsort(dist[start:stop], axis=1, kind="stable")
        same_pid = q_pids[start:stop, None] == g_pids[None, :]
        same_cam = q_camids[start:stop, None] == g_camids[None, :]
        junk = same_pid & same_cam
        if needs_clothes:
            same_clothes = q_clothes[start:stop, None] == g_clothes[None, :]
            if mode == "cloth_changing":
                junk |= same_pid & same_clothes
            else:
                junk |= same_pid & ~same_clothes
        good = same_pid & ~junk
        good = np.take_along_axis(good, order, axis=1)
        keep = ~np.take_along_axis(junk, order, axis=1)
        # 1-based position of each item in the ranking once junk is deleted.
        position = np.cumsum(keep, axis=1)
        n_good = good.sum(axis=1)
        valid = n_good > 0
        if not valid.any():
            continue
        good, position, n_good = good[valid], position[valid], n_good[valid]
        hit_number = np.cumsum(good, axis=1)
        # Junk positions can be 0 (before the first kept item); they are never hits.
        precision_at_hits = np.where(good, hit_number / np.maximum(position, 1), 0.0)
        ap_sum += float((precision_at_hits.sum(axis=1) / n_good).sum())
        # First hit position: argmax over a boolean row finds the first True.
        first_hit = position[np.arange(good.shape[0]), good.argmax(axis=1)]
        for j, r in enumerate(ranks):
            cmc_hits[j] += float((first_hit <= r).sum())
        n_valid += int(valid.sum())

    result: dict[str, float] = {}
    for j, r in enumerate(ranks):
        result[f"rank{r}"] = 100.0 * cmc_hits[j] / n_valid if n_valid else 0.0
    result["mAP"] = 100.0 * ap_sum / n_valid if n_valid else 0.0
    result["n_valid"] = float(n_valid)
    result["n_skipped"] = float(n_q - n_valid)
    return result


def cosine_distance(q_feats: np.ndarray, g_feats: np.ndarray) -> np.ndarray:
    """(Q, D), (G, D) -> (Q, G) distance = -cos, as in Simple-CCReID (rows are normalised here)."""
    q = np.asarray(q_feats, dtype=np.float32)
    g = np.asarray(g_feats, dtype=np.float32)
    if q.ndim != 2 or g.ndim != 2 or q.shape[1] != g.shape[1]:
        raise ValueError(f"cosine_distance: need (Q, D) and (G, D) arrays, got {q.shape} and {g.shape}")
    q = q / np.maximum(np.linalg.norm(q, axis=1, keepdims=True), 1e-12)
    g = g / np.maximum(np.linalg.norm(g, axis=1, keepdims=True), 1e-12)
    return -(q @ g.T)
