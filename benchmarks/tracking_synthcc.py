"""Per-camera tracking on SynthCC scenes: the pipeline's detector and tracker alone (no ReID, no matcher) on each
camera of each scene, scored with TrackEval (MOT15 protocol) against that camera's ground truth, one row per
option. Where a change costs the cross-camera figures of `mtmc_synthcc.py`, this says whether it is the boxes
or the identities.

    .venv/bin/python benchmarks/tracking_synthcc.py --scenes /work/mtmc/bench-s{3,4,5}-changes-no/scene \\
        --option every-1:every=1 --option every-2:every=2 --option every-2-velocity-40:every=2,std_weight_velocity=0.025

An option is `NAME:KEY=VALUE,...` with `every` (the detector's stride; a stride is scored at each phase) and any
`tracker.params` key; the detector is the pipeline's default, run once per camera on every frame (the stride
reuses its detections, as `mot_pets.py` does). Scenes come from `python -m synth scenes` (or `mtmc_synthcc.py`).
"""

from __future__ import annotations

import argparse
import platform
import shutil
import sys
import tempfile
from datetime import date
from pathlib import Path

import cv2
import numpy as np
import yaml

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from mot_pets import trackeval_results  # noqa: E402  (benchmarks/ is this script's own folder)
from pipeline.annotate import write_mot_rows  # noqa: E402
from pipeline.config import DetectorConfig, TrackerConfig  # noqa: E402
from pipeline.perception import detector_from_config, tracker_from_config  # noqa: E402


def parse_option(text: str) -> tuple[str, int, dict]:
    name, _, rest = text.partition(":")
    every, params = 1, {}
    for item in filter(None, rest.split(",")):
        key, sep, value = item.partition("=")
        if not sep:
            raise SystemExit(f"--option {text!r}: expected NAME:KEY=VALUE,...")
        if key == "every":
            every = int(value)
        else:
            params[key] = yaml.safe_load(value)
    TrackerConfig.model_validate({"params": params})  # a bad key fails here, before any detection
    return name, every, params


def camera_detections(video: Path, detector) -> tuple[list[tuple[int, ...]], list]:
    cap = cv2.VideoCapture(str(video))
    shapes, detections = [], []
    try:
        while True:
            ok, frame = cap.read()
            if not ok:
                break
            shapes.append(frame.shape)
            detections.append(detector.detect([frame])[0])
    finally:
        cap.release()
    if not shapes:
        raise SystemExit(f"{video}: no frames")
    return shapes, detections


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--scenes", nargs="+", type=Path, required=True, help="scene folders (cameras.yaml, gt/)")
    ap.add_argument("--option", dest="options", action="append", required=True, metavar="NAME:KEY=VALUE,...")
    args = ap.parse_args()
    options = [parse_option(o) for o in args.options]
    detector = detector_from_config(DetectorConfig.model_validate({"every": 1}))
    cameras = []  # (sequence name, shapes, detections)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        for scene in args.scenes:
            if not (scene / "cameras.yaml").is_file():
                raise SystemExit(f"{scene}: no cameras.yaml (make it with `python -m synth scenes`)")
            for cam in yaml.safe_load((scene / "cameras.yaml").read_text())["cameras"]:
                seq = f"{scene.parent.name}-{scene.name}-{cam['id']}"
                (tmp / "gt" / seq / "gt").mkdir(parents=True)
                shutil.copy(scene / "gt" / f"{cam['id']}.txt", tmp / "gt" / seq / "gt" / "gt.txt")
                shutil.copy(scene / "seqinfo" / f"{cam['id']}.ini", tmp / "gt" / seq / "seqinfo.ini")
                cameras.append((seq, *camera_detections(scene / cam["source"], detector)))
                print(f"detected {seq}", file=sys.stderr, flush=True)
        runs = {}
        for name, every, params in options:
            runs[name] = []
            for phase in range(every):
                run = name if every == 1 else f"{name}@{phase}"
                runs[name].append(run)
                (tmp / "trackers" / run / "data").mkdir(parents=True)
                for seq, shapes, detections in cameras:
                    tracker = tracker_from_config(TrackerConfig.model_validate({"params": params}))
                    with open(tmp / "trackers" / run / "data" / f"{seq}.txt", "w") as fh:
                        for i, (shape, dets) in enumerate(zip(shapes, detections)):
                            frame = np.zeros(shape, np.uint8)  # the tracker reads only the frame's size
                            due = i < phase or (i - phase) % every == 0
                            write_mot_rows(fh, i, tracker.update(dets, frame) if due else tracker.predict(frame))
        res = trackeval_results(tmp / "gt", tmp / "trackers", [r for rs in runs.values() for r in rs],
                                {seq: len(shapes) for seq, shapes, _ in cameras})
    print(f"`python benchmarks/tracking_synthcc.py --scenes {' '.join(map(str, args.scenes))} "
          + " ".join(f"--option {o}" for o in args.options) + f"` ({platform.machine()}, {date.today()})")
    print(f"{len(cameras)} cameras; a stride's cells give each phase")
    print("| option | IDF1 | MOTA | ID switches | false positives | misses |")
    print("|---|---|---|---|---|---|")
    for name, rs in runs.items():
        rows = [res[r] for r in rs]
        cells = [", ".join(fmt(r) for r in rows) for fmt in (
            lambda r: f"{100 * r['Identity']['IDF1']:.1f}", lambda r: f"{100 * r['CLEAR']['MOTA']:.1f}",
            lambda r: str(int(r["CLEAR"]["IDSW"])), lambda r: str(int(r["CLEAR"]["CLR_FP"])),
            lambda r: str(int(r["CLEAR"]["CLR_FN"])))]
        print(f"| {name} | " + " | ".join(cells) + " |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
