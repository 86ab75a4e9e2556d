"""Does appearance in the per-camera association help on PETS09-S2L1? BoT-SORT (static-camera parameters) with the
pipeline's ReID model as its appearance encoder, against ByteTrack and BoT-SORT without appearance, on the dev
frames 1-400 (TrackEval, MOT15 protocol, the same scoring as benchmarks/mot_pets.py).

    nice -n 15 .venv/bin/python benchmarks/appearance_pets.py [--model person-reidentification-retail-0267.ort.onnx]

Rows:
* `bytetrack`, `botsort`: the pipeline's trackers as `pipeline run` builds them (no appearance).
* `botsort-reid-pP-aA`: Ultralytics' own ReID fusion, min(IoU cost, appearance cost), where the appearance cost
  counts only for pairs with IoU >= P and cosine >= 2A - 1 (Ultralytics' `proximity_thresh`, `appearance_thresh`).
  That rule can only make a match easier, never veto one.
* `veto-C`: IoU cost as ByteTrack's, but a pair whose cosine is below C is refused (appearance as a veto).
* `blend-W`: (1 - W) * IoU cost + W * (1 - cosine) for pairs the IoU gate admits.

Every detection of every frame is embedded (the tracker asks for all of them), the cost an appearance-aware
tracker would add to each camera-frame; the script prints that cost per frame. The encoder is handed to
Ultralytics' BOTSORT object in place of its own (`tracker.encoder`), and `get_dists` is replaced for the veto and
blend rows: the pipeline has no such switch, because no row beats the default on IDF1 (README, "Benchmarks").
"""

from __future__ import annotations

import argparse
import configparser
import platform
import shutil
import sys
import tempfile
import time
import types
from datetime import date
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks.mot_pets import SEQ, detect_all, read_frames, trackeval_scores  # noqa: E402
from pipeline.annotate import write_mot_rows  # noqa: E402
from pipeline.config import DetectorConfig, TrackerConfig  # noqa: E402
from pipeline.models import resolve_model  # noqa: E402
from pipeline.perception import tracker_from_config  # noqa: E402


class FrameEncoder:
    """Ultralytics' encoder interface, (frame, xywh-centre boxes) -> features, on the pipeline's embedder; each
    (frame, box) is embedded once, as the rows share the detections."""

    def __init__(self, embedder) -> None:
        self.embedder = embedder
        self.frame = 0
        self.cache: dict[tuple, np.ndarray] = {}
        self.seconds = 0.0

    def __call__(self, img: np.ndarray, boxes: np.ndarray) -> list[np.ndarray]:
        keys = [(self.frame, *np.round(b[:4], 1)) for b in boxes]
        todo = [(k, b) for k, b in zip(keys, boxes) if k not in self.cache]
        if todo:
            h, w = img.shape[:2]
            crops = []
            for _, box in todo:
                cx, cy, bw, bh = box[:4]
                x1, y1 = int(max(0, cx - bw / 2)), int(max(0, cy - bh / 2))
                x2, y2 = int(min(w, cx + bw / 2)), int(min(h, cy + bh / 2))
                crops.append(img[y1:max(y2, y1 + 2), x1:max(x2, x1 + 2)])
            t = time.perf_counter()
            feats = self.embedder.embed(crops).identity
            self.seconds += time.perf_counter() - t
            self.cache.update((k, f) for (k, _), f in zip(todo, feats))
        return [self.cache[k] for k in keys]


def appearance_dists(mode: str, value: float):
    """A BOTSORT.get_dists replacement: appearance as a veto or blended into the IoU cost."""
    from ultralytics.trackers.utils import matching

    def get_dists(self, tracks, detections):
        dists = matching.iou_distance(tracks, detections)
        if self.args.fuse_score:
            dists = matching.fuse_score(dists, detections)
        emb = matching.embedding_distance(tracks, detections)  # 1 - cosine
        if mode == "veto":
            return np.where(emb > 1.0 - value, 1.0, dists)
        return np.where(dists < 1.0, (1.0 - value) * dists + value * emb, 1.0)

    return get_dists


ROWS: dict[str, tuple[dict, tuple[str, float] | None]] = {
    "bytetrack": ({}, None),
    "botsort": ({"type": "botsort"}, None),
    **{f"botsort-reid-p{p}-a{a}": ({"type": "botsort", "params": {"proximity_thresh": p, "appearance_thresh": a}},
                                   ("ultralytics", 0.0)) for p in (0.5, 0.05) for a in (0.8, 0.6)},
    **{f"veto-{c}": ({"type": "botsort"}, ("veto", c)) for c in (0.2, 0.3, 0.4)},
    **{f"blend-{w}": ({"type": "botsort"}, ("blend", w)) for w in (0.2, 0.4)},
}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default=str(ROOT.parent / "shared" / "data" / "pets09-s2l1"))
    ap.add_argument("--model", default="person-reidentification-retail-0267.ort.onnx", help="the ReID model")
    ap.add_argument("--threads", type=int, default=1, help="embedder threads")
    args = ap.parse_args()
    from reid.inference.factory import create_embedder

    data = Path(args.data)
    seqinfo = configparser.ConfigParser()
    seqinfo.read(data / "seqinfo_dev.ini")
    seq_len = int(seqinfo["Sequence"]["seqLength"])
    frames = read_frames(data / "vtest.avi", seq_len)
    detections, detect_ms = detect_all(DetectorConfig(), frames)
    encoder = FrameEncoder(create_embedder(str(resolve_model(args.model)), "onnxruntime", threads=args.threads))
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        (tmp / "gt" / SEQ / "gt").mkdir(parents=True)
        shutil.copy(data / "gt" / "gt_dev.txt", tmp / "gt" / SEQ / "gt" / "gt.txt")
        shutil.copy(data / "seqinfo_dev.ini", tmp / "gt" / SEQ / "seqinfo.ini")
        for name, (section, appearance) in ROWS.items():
            tracker = tracker_from_config(TrackerConfig.model_validate(section))
            if appearance is not None:
                inner = tracker._tracker  # Ultralytics' BOTSORT: its encoder and cost are what is measured
                inner.args.with_reid, inner.args.model, inner.encoder = True, "pipeline-embedder", encoder
                if appearance[0] != "ultralytics":
                    inner.get_dists = types.MethodType(appearance_dists(*appearance), inner)
            (tmp / "trackers" / name / "data").mkdir(parents=True)
            with open(tmp / "trackers" / name / "data" / f"{SEQ}.txt", "w") as fh:
                for index, (frame, dets) in enumerate(zip(frames, detections)):
                    encoder.frame = index
                    write_mot_rows(fh, index, tracker.update(dets, frame))
        scores = trackeval_scores(tmp / "gt", tmp / "trackers", list(ROWS), seq_len)
    embedded = len(encoder.cache)
    print(f"PETS09-S2L1 dev frames 1-{seq_len}, TrackEval MOT15; `python benchmarks/appearance_pets.py --model "
          f"{args.model}`; {platform.machine()}, {date.today()}")
    print(f"detection {detect_ms:.1f} ms/frame; appearance: {embedded} detections embedded, "
          f"{1000 * encoder.seconds / seq_len:.1f} ms/frame ({1000 * encoder.seconds / max(1, embedded):.1f} ms a crop)")
    print("| row | HOTA | IDF1 | MOTA | ID switches |\n|---|---|---|---|---|")
    for name, s in scores.items():
        print(f"| {name} | {100 * s['HOTA']:.1f} | {100 * s['IDF1']:.1f} | {100 * s['MOTA']:.1f} | {s['IDSW']} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
