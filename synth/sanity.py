"""Reference matchers that show what SynthCC rewards and punishes.

* colour histograms (whole crop, or only the clothes pixels given by the part masks):
  what a model leaning on clothing colour does;
* skin and hair colour (body pixels only): a weak body cue read from the pixels;
* mask statistics: 17 hand-made measurements of skin, hair and silhouette from the true part masks, no
  learning: a floor that any learned model should pass;
* a noisy visible-field oracle: the body parameters a still crop can show (not height, which the crop's
  resize removes, nor cadence, which needs time), each image with its own Gaussian noise (in population
  standard deviations): what reading those cues imperfectly from pixels could reach.

The true body vector itself is not a row: it is the same for every image of a person, so it scores 100 by
construction and says nothing about what a network can see.

Scored with ``reid.evaluation.evaluate`` under the general, same-clothes and
cloth-changing protocols. Used by ``benchmarks/synthcc_sanity.py`` and the tests.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

_NAME = re.compile(r"^(\d+)_(\d+)_c(\d+)_(\d+)\.png$")
CLOTHES_LABELS = (3, 4, 5, 6)
BODY_PIXEL_LABELS = (1, 2)
# Body fields a single crop can show. Not height_m (every crop is resized to one height) and not cadence (steps
# per second need time); stride and arm swing show only as a pose at one phase of the walk, so they are left out.
VISIBLE_FIELDS = ("leg_ratio", "shoulder_ratio", "hip_ratio", "depth_ratio", "arm_ratio", "leg_thick", "arm_thick",
                  "head_ratio", "head_aspect", "neck_ratio", "skin_tone", "skin_undertone", "hair_r", "hair_g",
                  "hair_b", "hair_volume", "hair_length", "fringe", "beard", "lean")


@dataclass
class Split:
    files: list[Path]
    pids: np.ndarray
    cams: np.ndarray
    clothes: np.ndarray  # unique per (pid, outfit)


def load_split(root: Path, split: str) -> Split:
    d = root / split
    if not d.is_dir():
        raise FileNotFoundError(f"{d} missing: is {root} a SynthCC people data set (python -m synth people ...)?")
    files, pids, cams, clothes = [], [], [], []
    for f in sorted(d.iterdir()):
        m = _NAME.match(f.name)
        if not m:
            continue
        pid, oc, cam = int(m.group(1)), int(m.group(2)), int(m.group(3))
        files.append(f)
        pids.append(pid)
        cams.append(cam)
        clothes.append(pid * 1000 + oc)
    if not files:
        raise FileNotFoundError(f"no PPPP_CC_cNN_IIIIII.png images in {d}")
    return Split(files, np.array(pids), np.array(cams), np.array(clothes))


def _hist(bgr: np.ndarray, mask: np.ndarray | None) -> np.ndarray:
    hsv = cv2.cvtColor(bgr, cv2.COLOR_BGR2HSV)
    m = None if mask is None else mask.astype(np.uint8)
    h = cv2.calcHist([hsv], [0, 1, 2], m, [16, 4, 3], [0, 180, 0, 256, 0, 256]).ravel().astype(np.float64)
    s = h.sum()
    # Hellinger embedding: Euclidean distance between sqrt-normalised histograms.
    return np.sqrt(h / s) if s > 0 else h


def colour_features(split: Split, root: Path, labels: tuple[int, ...] | None) -> np.ndarray:
    """Colour histograms over the whole crop (labels None) or over the given mask labels."""
    feats = []
    for f in split.files:
        img = cv2.imread(str(f), cv2.IMREAD_COLOR)
        if img is None:
            raise OSError(f"cannot read {f}")
        mask = None
        if labels is not None:
            mf = root / "masks" / f.parent.name / f.name
            lab = cv2.imread(str(mf), cv2.IMREAD_UNCHANGED)
            if lab is None:
                raise FileNotFoundError(f"mask {mf} missing")
            mask = np.isin(lab, labels)
        feats.append(_hist(img, mask))
    return np.stack(feats)


def visible_field_features(split: Split, root: Path, noise: float, seed: int = 0) -> np.ndarray:
    """The visible body fields (standardised over all identities, hair style one-hot added), plus independent
    Gaussian noise of ``noise`` population standard deviations per image and field."""
    meta = json.loads((root / "meta.json").read_text())
    ids = meta["identities"]
    names = list(meta["body_fields"])
    cols = [names.index(f) for f in VISIBLE_FIELDS] + [i for i, f in enumerate(names) if f.startswith("hair_style_")]
    allv = np.array([ids[k]["body"] for k in sorted(ids, key=int)], np.float64)[:, cols]
    mu, sd = allv.mean(0), allv.std(0)
    sd[sd == 0] = 1.0
    clean = np.stack([(np.array(ids[str(p)]["body"])[cols] - mu) / sd for p in split.pids])
    # One noise stream per image file name, so query and gallery images never share a draw.
    noisy = [row + noise * np.random.default_rng([seed, *map(ord, f.name)]).standard_normal(len(row))
             for row, f in zip(clean, split.files)]
    return np.stack(noisy)


def _lab_stats(bgr: np.ndarray, sel: np.ndarray) -> tuple[np.ndarray, float]:
    if not sel.any():
        return np.zeros(3), 0.0
    lab = cv2.cvtColor(bgr, cv2.COLOR_BGR2LAB).astype(np.float64)[sel]
    return lab.mean(0), float(lab[:, 0].std())


def mask_statistics(bgr: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """17 hand-made skin, hair and silhouette measurements from one crop and its true part mask.

    Colours: mean Lab of skin and of hair (6), their lightness spread (2). Areas: hair and skin share of the
    person (2). Proportions, relative to the person's height in the crop: head-and-neck length (from the top
    of the person to the first clothes row), head width, shoulder width, hair height, hair below the
    shoulders, hair width relative to head width, and the share of hair in the lower half of the head
    (beards, long hair) (7).
    """
    fg = mask > 0
    rows = np.flatnonzero(fg.any(1))
    if rows.size == 0:
        return np.zeros(17)
    top, bottom = int(rows[0]), int(rows[-1])
    height = float(bottom - top + 1)
    skin, hair = mask == 1, mask == 2
    clothes_rows = np.flatnonzero(np.isin(mask, (3, 6)).any(1))
    shoulder = int(clothes_rows[0]) if clothes_rows.size else top + int(0.2 * height)
    widths = fg.sum(1).astype(np.float64)
    head_w = float(widths[top:max(shoulder, top + 1)].max())
    torso_w = float(widths[shoulder:shoulder + max(1, int(0.25 * height))].max()) if shoulder <= bottom else 0.0
    hair_rows = np.flatnonzero(hair.any(1))
    hair_cols = np.flatnonzero(hair.any(0))
    skin_lab, skin_sd = _lab_stats(bgr, skin)
    hair_lab, hair_sd = _lab_stats(bgr, hair)
    head_mid = top + (shoulder - top) // 2
    n_hair = float(hair.sum())
    return np.array([
        *skin_lab, *hair_lab, skin_sd, hair_sd,
        n_hair / fg.sum(), skin.sum() / fg.sum(),
        (shoulder - top) / height,
        head_w / height,
        torso_w / height,
        (hair_rows[-1] - hair_rows[0] + 1) / height if hair_rows.size else 0.0,
        hair[shoulder:].sum() / height if shoulder <= bottom else 0.0,
        (hair_cols[-1] - hair_cols[0] + 1) / max(head_w, 1.0) if hair_cols.size else 0.0,
        hair[head_mid:shoulder].sum() / n_hair if n_hair else 0.0,
    ])


def mask_statistic_features(split: Split, root: Path) -> np.ndarray:
    out = []
    for f in split.files:
        img = cv2.imread(str(f), cv2.IMREAD_COLOR)
        mf = root / "masks" / f.parent.name / f.name
        lab = cv2.imread(str(mf), cv2.IMREAD_UNCHANGED)
        if img is None or lab is None:
            raise OSError(f"cannot read {f} or its mask {mf}")
        out.append(mask_statistics(img, lab))
    return np.stack(out)


def distances(q: np.ndarray, g: np.ndarray) -> np.ndarray:
    d = (q * q).sum(1)[:, None] + (g * g).sum(1)[None, :] - 2.0 * q @ g.T
    return np.sqrt(np.maximum(d, 0.0))


MATCHERS = ("colour histogram, whole crop", "colour histogram, clothes pixels (GT masks)",
            "skin+hair colour (GT masks)", "mask statistics (17, GT masks, no learning)",
            "visible body fields + noise 0.5 sd", "visible body fields + noise 1.0 sd")


def embedder_features(split: Split, embedder, batch: int = 64) -> np.ndarray:
    """Features from a ``reid.inference`` Embedder (e.g. a real same-clothes ReID model)."""
    out = []
    for i in range(0, len(split.files), batch):
        crops = []
        for f in split.files[i : i + batch]:
            img = cv2.imread(str(f), cv2.IMREAD_COLOR)
            if img is None:
                raise OSError(f"cannot read {f}")
            crops.append(img)
        out.append(np.asarray(embedder.embed(crops).identity, np.float64))
    return np.concatenate(out)


def run_sanity(root: Path, matchers: tuple[str, ...] = MATCHERS, embedders: tuple[tuple[str, object], ...] = ()
               ) -> list[dict]:
    """Score each matcher (and each ``(label, Embedder)``) under each protocol; returns rows of dicts."""
    from reid.evaluation import MODES, evaluate

    q, g = load_split(root, "query"), load_split(root, "test")
    rows = []
    for name, emb in embedders:
        fq, fg = embedder_features(q, emb), embedder_features(g, emb)
        dist = distances(fq, fg)
        for mode in MODES:
            r = evaluate(dist, q.pids, g.pids, q.cams, g.cams, q.clothes, g.clothes, mode=mode, ranks=(1, 5))
            rows.append({"matcher": name, "mode": mode, **r})
    for name in matchers:
        if name == MATCHERS[0]:
            fq, fg = colour_features(q, root, None), colour_features(g, root, None)
        elif name == MATCHERS[1]:
            fq, fg = colour_features(q, root, CLOTHES_LABELS), colour_features(g, root, CLOTHES_LABELS)
        elif name == MATCHERS[2]:
            fq, fg = colour_features(q, root, BODY_PIXEL_LABELS), colour_features(g, root, BODY_PIXEL_LABELS)
        elif name == MATCHERS[3]:
            fq, fg = mask_statistic_features(q, root), mask_statistic_features(g, root)
            # Standardise each measurement over query and gallery together (no labels used).
            both = np.concatenate([fq, fg])
            mu, sd = both.mean(0), both.std(0)
            sd[sd == 0] = 1.0
            fq, fg = (fq - mu) / sd, (fg - mu) / sd
        elif name in MATCHERS[4:6]:
            noise = 0.5 if name == MATCHERS[4] else 1.0
            fq, fg = visible_field_features(q, root, noise), visible_field_features(g, root, noise)
        else:
            raise ValueError(f"unknown matcher {name!r}; known: {MATCHERS}")
        dist = distances(fq, fg)
        for mode in MODES:
            r = evaluate(dist, q.pids, g.pids, q.cams, g.cams, q.clothes, g.clothes, mode=mode, ranks=(1, 5))
            rows.append({"matcher": name, "mode": mode, **r})
    return rows


def format_table(rows: list[dict]) -> str:
    out = ["| matcher | protocol | rank-1 | rank-5 | mAP | valid queries |", "|---|---|---:|---:|---:|---:|"]
    for r in rows:
        out.append(f"| {r['matcher']} | {r['mode']} | {r['rank1']:.1f} | {r['rank5']:.1f} | {r['mAP']:.1f} | "
                   f"{int(r.get('n_valid', 0))} |")
    return "\n".join(out)
