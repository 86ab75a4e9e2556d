"""Reference matchers that show what SynthCC rewards and punishes.

* colour histograms (whole crop, or only the clothes pixels given by the part masks):
  what a model leaning on clothing colour does;
* skin and hair colour (body pixels only): a weak body cue read from the pixels;
* the true body-parameter vector from meta.json: the ceiling for body cues.

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


def body_features(split: Split, root: Path) -> np.ndarray:
    meta = json.loads((root / "meta.json").read_text())
    ids = meta["identities"]
    allv = np.array([ids[k]["body"] for k in sorted(ids, key=int)], np.float64)
    mu, sd = allv.mean(0), allv.std(0)
    sd[sd == 0] = 1.0
    return np.stack([(np.array(ids[str(p)]["body"]) - mu) / sd for p in split.pids])


def distances(q: np.ndarray, g: np.ndarray) -> np.ndarray:
    d = (q * q).sum(1)[:, None] + (g * g).sum(1)[None, :] - 2.0 * q @ g.T
    return np.sqrt(np.maximum(d, 0.0))


MATCHERS = ("colour histogram, whole crop", "colour histogram, clothes pixels (GT masks)",
            "skin+hair colour (GT masks)", "true body parameters")


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
            fq, fg = body_features(q, root), body_features(g, root)
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
