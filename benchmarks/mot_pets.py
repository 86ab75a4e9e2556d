"""Detection + tracking on PETS09-S2L1, scored with TrackEval (HOTA, IDF1, MOTA) on the dev frames.

    .venv/bin/python benchmarks/mot_pets.py [--confidence 0.1] [--detector yolox_nano.onnx]

The dev ground truth (gt/gt_dev.txt, seqinfo_dev.ini) covers frames 1-400; frames 401-795 are kept back
for independent checks, so nothing is tuned on them and this script never reads past the dev length. The trackers run through the same `detectors`/`trackers`
code and the same MOT writer as `python -m pipeline run --mot-dir`.
"""

from __future__ import annotations

import argparse
import configparser
import platform
import shutil
import sys
import tempfile
import time
from datetime import date
from pathlib import Path

import cv2
import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from detectors import create_detector  # noqa: E402
from pipeline.annotate import write_mot_rows  # noqa: E402
from pipeline.models import resolve_model  # noqa: E402
from trackers import TRACKER_TYPES, create_tracker  # noqa: E402

SEQ = "PETS09-S2L1-dev"


def run_tracker(kind, detections, frames, out_file: Path) -> float:
    tracker = create_tracker(kind)
    spent = 0.0
    with open(out_file, "w") as fh:
        for i, (frame, dets) in enumerate(zip(frames, detections)):
            t = time.perf_counter()
            tracks = tracker.update(dets, frame)
            spent += time.perf_counter() - t
            write_mot_rows(fh, i, tracks)
    return 1000 * spent / len(frames)


def trackeval_scores(gt_dir: Path, trackers_dir: Path, names: list[str], seq_len: int) -> dict[str, dict]:
    import trackeval

    dataset_cfg = trackeval.datasets.MotChallenge2DBox.get_default_dataset_config()
    dataset_cfg.update(GT_FOLDER=str(gt_dir), TRACKERS_FOLDER=str(trackers_dir), BENCHMARK="MOT15",
                       SEQ_INFO={SEQ: seq_len}, SKIP_SPLIT_FOL=True, TRACKERS_TO_EVAL=names, PRINT_CONFIG=False)
    eval_cfg = trackeval.Evaluator.get_default_eval_config()
    eval_cfg.update(PRINT_RESULTS=False, PRINT_CONFIG=False, OUTPUT_SUMMARY=False, OUTPUT_DETAILED=False,
                    PLOT_CURVES=False, OUTPUT_EMPTY_CLASSES=False, TIME_PROGRESS=False, DISPLAY_LESS_PROGRESS=True)
    metrics = [trackeval.metrics.HOTA(), trackeval.metrics.CLEAR(), trackeval.metrics.Identity()]
    res, _ = trackeval.Evaluator(eval_cfg).evaluate([trackeval.datasets.MotChallenge2DBox(dataset_cfg)], metrics)
    out = {}
    for name in names:
        r = res["MotChallenge2DBox"][name]["COMBINED_SEQ"]["pedestrian"]
        out[name] = {"HOTA": float(np.mean(r["HOTA"]["HOTA"])), "IDF1": r["Identity"]["IDF1"],
                     "MOTA": r["CLEAR"]["MOTA"], "IDSW": int(r["CLEAR"]["IDSW"])}
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default=str(ROOT.parent / "shared" / "data" / "pets09-s2l1"))
    ap.add_argument("--detector", default="yolox_nano.onnx")
    ap.add_argument("--backend", default="yolox", choices=["yolox", "ultralytics"])
    ap.add_argument("--confidence", type=float, default=0.1)
    args = ap.parse_args()

    data = Path(args.data)
    seqinfo = configparser.ConfigParser()
    seqinfo.read(data / "seqinfo_dev.ini")
    seq_len = int(seqinfo["Sequence"]["seqLength"])
    cap = cv2.VideoCapture(str(data / "vtest.avi"))
    frames = []
    while len(frames) < seq_len:
        ok, frame = cap.read()
        if not ok:
            raise SystemExit(f"vtest.avi ended after {len(frames)} frames; expected {seq_len}")
        frames.append(frame)
    cap.release()

    detector = create_detector(args.backend, resolve_model(args.detector), confidence=args.confidence)
    detector.detect(frames[:1])  # warm-up
    t = time.perf_counter()
    detections = [detector.detect([f])[0] for f in frames]
    det_ms = 1000 * (time.perf_counter() - t) / len(frames)

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        gt_dir = tmp / "gt"
        (gt_dir / SEQ / "gt").mkdir(parents=True)
        shutil.copy(data / "gt" / "gt_dev.txt", gt_dir / SEQ / "gt" / "gt.txt")
        shutil.copy(data / "seqinfo_dev.ini", gt_dir / SEQ / "seqinfo.ini")
        track_ms = {}
        for kind in TRACKER_TYPES:
            (tmp / "trackers" / kind / "data").mkdir(parents=True)
            track_ms[kind] = run_tracker(kind, detections, frames, tmp / "trackers" / kind / "data" / f"{SEQ}.txt")
        scores = trackeval_scores(gt_dir, tmp / "trackers", list(TRACKER_TYPES), seq_len)

    print(f"PETS09-S2L1 dev frames 1-{seq_len}, detector {Path(args.detector).name} ({args.backend}, "
          f"confidence {args.confidence}), TrackEval MOT15 protocol")
    print(f"machine: {platform.machine()} {platform.processor() or ''}, {__import__('os').cpu_count()} CPU cores; "
          f"date {date.today().isoformat()}")
    print()
    print("| tracker | HOTA | IDF1 | MOTA | ID switches | detect ms/frame | track ms/frame |")
    print("|---|---|---|---|---|---|---|")
    for kind in TRACKER_TYPES:
        s = scores[kind]
        print(f"| {kind} | {100 * s['HOTA']:.1f} | {100 * s['IDF1']:.1f} | {100 * s['MOTA']:.1f} | {s['IDSW']} | "
              f"{det_ms:.1f} | {track_ms[kind]:.2f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
