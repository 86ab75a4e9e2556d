"""Detection + tracking on PETS09-S2L1, scored with TrackEval (HOTA, IDF1, MOTA) on the dev frames, one row per
option: the pipeline's default config and the switches measured against it.

    nice -n 15 .venv/bin/python benchmarks/mot_pets.py [--options default,previous-default] [--list]

The dev ground truth (gt/gt_dev.txt, seqinfo_dev.ini) covers frames 1-400; frames 401-795 are kept back for
independent checks, so nothing is tuned on them and this script never reads past the dev length. Every option is
a `detector:`/`tracker:` config section validated by the pipeline's schema and built by `pipeline.perception`,
the code `python -m pipeline run` runs, and written by the same MOT writer as `pipeline run --mot-dir`.
Detection runs once per distinct detector section, frame by frame (batch of 1), after one warm-up frame;
`frames/s` is 1000 / (detect + track ms per frame) of one camera. The `default` row is the pipeline's default
config (one frame in 2 since 2026-12-05); every other row detects every frame unless it names a stride
(`every-n`), as when it was defined. An option with `detector.every: n` is run and scored at each of its n phases
(which frame of n the detector sees); its cells give the mean and each phase. Times are wall-clock: on a shared machine they are rough, and a process paused meanwhile inflates them
(compare sizes in one run, not across runs).
"""

from __future__ import annotations

import argparse
import configparser
import contextlib
import io
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from typing import Any

import cv2
import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from machine import describe as describe_machine  # noqa: E402
from pipeline.annotate import write_mot_rows  # noqa: E402
from pipeline.config import DetectorConfig, TrackerConfig  # noqa: E402
from pipeline.perception import detector_from_config, tracker_from_config  # noqa: E402
from trackers import ultralytics_tracker_params  # noqa: E402

SEQ = "PETS09-S2L1-dev"
# Ultralytics' own values of the parameters the project's static-camera defaults change.
_ULTRA_KEYS = ("match_thresh", "track_high_thresh", "new_track_thresh", "track_buffer")


def _ultralytics(kind: str) -> dict[str, Any]:
    shipped = ultralytics_tracker_params(kind)
    keys = _ULTRA_KEYS + (("gmc_method",) if kind == "botsort" else ())
    return {k: shipped[k] for k in keys}


@dataclass(frozen=True)
class Option:
    """One row: config sections as a user would write them (empty: the pipeline's defaults)."""

    name: str
    what: str
    detector: dict[str, Any] = field(default_factory=dict)
    tracker: dict[str, Any] = field(default_factory=dict)


OPTIONS = (
    Option("default", "pipeline defaults: YOLOX-nano 640 (640x480) on one frame in 2, ByteTrack static-camera params"),
    Option("every-1", "the default detecting every frame (the default before 2026-12-05)", {"every": 1}),
    Option("previous-default", "YOLOX-nano 416, ByteTrack with Ultralytics' params (the old default)",
           {"input_size": 416}, {"params": _ultralytics("bytetrack")}),
    Option("input-416", "input 416, default tracker", {"input_size": 416}),
    Option("input-512", "input 512 (512x384), default tracker", {"input_size": 512}),
    Option("input-768", "input 768 (native 768x576), default tracker", {"input_size": 768}),
    # Sizes next to the default: how much of its IDF1 is the size itself and how much is luck at a few crossings.
    *(Option(f"input-{size}", f"input {size}, default tracker (not in the default run)", {"input_size": size})
      for size in (576, 608, 672, 704)),
    Option("ultralytics-params", "input 640, ByteTrack with Ultralytics' params", {},
           {"params": _ultralytics("bytetrack")}),
    Option("match-0.8", "default but match_thresh 0.8 (Ultralytics')", {}, {"params": {"match_thresh": 0.8}}),
    Option("thresh-0.25", "default but track_high_thresh / new_track_thresh 0.25 (Ultralytics')", {},
           {"params": {"track_high_thresh": 0.25, "new_track_thresh": 0.25}}),
    Option("buffer-30", "default but track_buffer 30 (Ultralytics')", {}, {"params": {"track_buffer": 30}}),
    Option("confidence-0.3", "detector confidence 0.3 (boxes 0.1-0.3 no longer reach the 2nd association)",
           {"confidence": 0.3}),
    Option("min-height-40", "detector.min_height 40 px (drops the far field: a sign, unannotated walkers)",
           {"min_height": 40}),
    # Buffered IoU (C-BIoU): boxes grown by a share of their size before the first association; the plateau
    # around the chosen value is part of the evidence (IDF1 on 400 frames hangs on a few crossings).
    *(Option(f"iou-buffer-{b}", f"ByteTrack with boxes grown by {b} x their size for matching", {},
             {"params": {"iou_buffer": b}}) for b in (0.1, 0.15, 0.2, 0.3, 0.4)),
    Option("every-2-iou-buffer-0.2", "detect on every 2nd frame, iou_buffer 0.2", {"every": 2},
           {"params": {"iou_buffer": 0.2}}),
    # The Kalman filter's velocity noise (std_weight_velocity, a share of the box height; the default 1/60, the
    # library's 1/160), on every frame and on a stride; the plateau around the default is part of the evidence.
    *(Option(f"velocity-{d}", f"std_weight_velocity 1/{d}", {}, {"params": {"std_weight_velocity": 1 / d}})
      for d in (160, 80, 40)),
    *(Option(f"every-{n}-velocity-{d}", f"detect on one frame in {n}, std_weight_velocity 1/{d}", {"every": n},
             {"params": {"std_weight_velocity": 1 / d}}) for n in (2, 3) for d in (160, 80, 40)),
    # Buffered IoU in the second (low-score) association (default 0.3; 0 is the library's plain IoU), on every
    # frame and on a stride, with the values around the default.
    *(Option(f"{'' if n == 1 else f'every-{n}-'}low-buffer-{b}",
             ("" if n == 1 else f"detect on one frame in {n}, ") + f"low-score association with boxes grown by {b}",
             {"every": n}, {"params": {"low_score_iou_buffer": b}})
      for n in (1, 2, 3) for b in (0, 0.15, 0.2, 0.4)),
    # Detection on a stride: the tracker's motion model places the tracks on the frames between (capacity).
    Option("every-2", "detect on every 2nd frame, motion between", {"every": 2}),
    Option("every-3", "detect on every 3rd frame, motion between", {"every": 3}),
    Option("input-512-every-2", "input 512, detect on every 2nd frame", {"input_size": 512, "every": 2}),
    # Smaller inputs on a stride (capacity), and their neighbours: where a figure stands on a plateau.
    *(Option(f"input-{size}-every-{n}", f"input {size}, detect on one frame in {n} (not in the default run)",
             {"input_size": size, "every": n}) for size in (448, 480, 544, 576) for n in (2, 3)),
    *(Option(f"input-{size}", f"input {size}, default tracker (not in the default run)", {"input_size": size})
      for size in (448, 480, 544)),
    # Smaller inputs on every frame (the rows above detect on the default stride): a smaller input on every frame
    # is the other way to halve the detector's work.
    *(Option(f"input-{size}-every-1", f"input {size}, detect on every frame (not in the default run)",
             {"input_size": size, "every": 1}) for size in (416, 448, 480, 512, 544, 576)),
    # The same network in another runtime: OpenVINO in its CPU's default precision (bfloat16 where the CPU has AMX
    # / AVX-512 BF16) and forced to float32.
    Option("openvino", "YOLOX in OpenVINO, the CPU's default precision (bf16 with AMX)", {"runtime": "openvino"}),
    Option("openvino-f32", "YOLOX in OpenVINO, float32", {"runtime": "openvino", "precision": "f32"}),
    Option("botsort", "BoT-SORT, static-camera params (GMC off)", {}, {"type": "botsort"}),
    Option("botsort-velocity-60", "BoT-SORT with ByteTrack's std_weight_velocity 1/60", {},
           {"type": "botsort", "params": {"std_weight_velocity": 1 / 60}}),
    Option("botsort-every-2", "BoT-SORT, detect on every 2nd frame", {"every": 2}, {"type": "botsort"}),
    Option("botsort-every-2-velocity-60", "BoT-SORT, every 2nd frame, std_weight_velocity 1/60", {"every": 2},
           {"type": "botsort", "params": {"std_weight_velocity": 1 / 60}}),
    Option("botsort-gmc", "BoT-SORT with sparse optical flow GMC (Ultralytics' default)", {},
           {"type": "botsort", "params": {"gmc_method": "sparseOptFlow"}}),
)


def read_frames(video: Path, count: int) -> list[np.ndarray]:
    cap = cv2.VideoCapture(str(video))
    frames = []
    try:
        while len(frames) < count:
            ok, frame = cap.read()
            if not ok:
                raise SystemExit(f"{video} ended after {len(frames)} frames; expected {count}")
            frames.append(frame)
    finally:
        cap.release()
    return frames


def detect_all(det: DetectorConfig, frames: list[np.ndarray]) -> tuple[list, float]:
    """Detections of every frame and the mean detect ms/frame."""
    detector = detector_from_config(det)
    detector.detect(frames[:1])  # warm-up: ONNX Runtime plans its first run
    t = time.perf_counter()
    detections = [detector.detect([f])[0] for f in frames]
    return detections, 1000 * (time.perf_counter() - t) / len(frames)


def track_all(tracker_cfg: TrackerConfig, detections: list, frames: list[np.ndarray], out_file: Path,
              every: int = 1, phase: int = 0) -> float:
    """Write the tracks in MOT format; the mean track ms/frame. With `every` > 1 only every n-th frame's
    detections are used, as `pipeline run` does with `detector.every`: the tracker predicts the frames between.
    `phase`: the first detected frame (0 .. every-1); frames before it are detected too, so every phase
    starts its tracks at frame 0."""
    tracker = tracker_from_config(tracker_cfg)
    spent = 0.0
    with open(out_file, "w") as fh:
        for i, (frame, dets) in enumerate(zip(frames, detections)):
            t = time.perf_counter()
            due = i < phase or (i - phase) % every == 0
            tracks = tracker.update(dets, frame) if due else tracker.predict(frame)
            spent += time.perf_counter() - t
            write_mot_rows(fh, i, tracks)
    return 1000 * spent / len(frames)


def trackeval_results(gt_dir: Path, trackers_dir: Path, names: list[str], seq_info: dict[str, int]) -> dict[str, dict]:
    """TrackEval's combined pedestrian results (HOTA, CLEAR, Identity) per tracker folder, MOT15 protocol;
    `seq_info`: sequence name -> length. benchmarks/tracking_synthcc.py scores with it too."""
    import trackeval

    dataset_cfg = trackeval.datasets.MotChallenge2DBox.get_default_dataset_config()
    dataset_cfg.update(GT_FOLDER=str(gt_dir), TRACKERS_FOLDER=str(trackers_dir), BENCHMARK="MOT15",
                       SEQ_INFO=seq_info, SKIP_SPLIT_FOL=True, TRACKERS_TO_EVAL=names, PRINT_CONFIG=False)
    eval_cfg = trackeval.Evaluator.get_default_eval_config()
    eval_cfg.update(PRINT_RESULTS=False, PRINT_CONFIG=False, OUTPUT_SUMMARY=False, OUTPUT_DETAILED=False,
                    PLOT_CURVES=False, OUTPUT_EMPTY_CLASSES=False, TIME_PROGRESS=False, DISPLAY_LESS_PROGRESS=True,
                    USE_PARALLEL=False)
    with contextlib.redirect_stdout(io.StringIO()):  # TrackEval prints its progress and each metric's config
        metrics = [trackeval.metrics.HOTA(), trackeval.metrics.CLEAR(), trackeval.metrics.Identity()]
        res, _ = trackeval.Evaluator(eval_cfg).evaluate([trackeval.datasets.MotChallenge2DBox(dataset_cfg)], metrics)
    return {name: res["MotChallenge2DBox"][name]["COMBINED_SEQ"]["pedestrian"] for name in names}


def trackeval_scores(gt_dir: Path, trackers_dir: Path, names: list[str], seq_len: int) -> dict[str, dict]:
    """HOTA, IDF1, MOTA and ID switches per tracker folder (TrackEval, MOT15 protocol)."""
    out = {}
    for name, r in trackeval_results(gt_dir, trackers_dir, names, {SEQ: seq_len}).items():
        out[name] = {"HOTA": float(np.mean(r["HOTA"]["HOTA"])), "IDF1": float(r["Identity"]["IDF1"]),
                     "MOTA": float(r["CLEAR"]["MOTA"]), "IDSW": int(r["CLEAR"]["IDSW"])}
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default=str(ROOT.parent / "shared" / "data" / "pets09-s2l1"))
    ap.add_argument("--options", default=",".join(o.name for o in OPTIONS if "not in the default run" not in o.what),
                    help="comma-separated option names (default: all but the extra input sizes; --list shows them)")
    ap.add_argument("--list", action="store_true", help="list the options and exit")
    args = ap.parse_args()
    by_name = {o.name: o for o in OPTIONS}
    if args.list:
        for o in OPTIONS:
            print(f"{o.name:20s} {o.what}")
        return 0
    unknown = [n for n in args.options.split(",") if n not in by_name]
    if unknown:
        ap.error(f"unknown option(s) {unknown}; known: {', '.join(by_name)}")
    chosen = [by_name[n] for n in args.options.split(",")]
    # Validated exactly as a config file's sections are: a bad option fails here, not halfway through.
    # Every option but `default` detects every frame unless it names a stride: the rows were defined (and the
    # README's tables measured) when that was the pipeline's default; `default` is the pipeline's own (one in 2).
    configs = {o.name: (DetectorConfig.model_validate(o.detector if o.name == "default"
                                                      else {"every": 1, **o.detector}),
                        TrackerConfig.model_validate(o.tracker))
               for o in chosen}

    data = Path(args.data)
    seqinfo = configparser.ConfigParser()
    seqinfo.read(data / "seqinfo_dev.ini")
    seq_len = int(seqinfo["Sequence"]["seqLength"])
    frames = read_frames(data / "vtest.avi", seq_len)

    detected: dict[str, tuple[list, float]] = {}  # detector section (JSON) -> detections, ms/frame
    track_ms: dict[str, float] = {}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        gt_dir = tmp / "gt"
        (gt_dir / SEQ / "gt").mkdir(parents=True)
        shutil.copy(data / "gt" / "gt_dev.txt", gt_dir / SEQ / "gt" / "gt.txt")
        shutil.copy(data / "seqinfo_dev.ini", gt_dir / SEQ / "seqinfo.ini")
        for o in chosen:
            det_cfg, tracker_cfg = configs[o.name]
            key = det_cfg.model_copy(update={"every": 1}).model_dump_json()  # the stride reuses the detections
            if key not in detected:
                detected[key] = detect_all(det_cfg, frames)
            # A stride is scored at each phase (which frame of `every` the detector sees): on 400 frames one
            # crossing falling on a detected or a skipped frame moves IDF1 by several points.
            for phase in range(det_cfg.every):
                run = _run_name(o.name, phase, det_cfg.every)
                (tmp / "trackers" / run / "data").mkdir(parents=True)
                ms = track_all(tracker_cfg, detected[key][0], frames, tmp / "trackers" / run / "data" / f"{SEQ}.txt",
                               det_cfg.every, phase)
                track_ms[o.name] = track_ms.get(o.name, 0.0) + ms / det_cfg.every
            print(f"ran {o.name}", file=sys.stderr, flush=True)
        runs = {o.name: [_run_name(o.name, p, configs[o.name][0].every) for p in range(configs[o.name][0].every)]
                for o in chosen}
        per_run = trackeval_scores(gt_dir, tmp / "trackers", [r for names in runs.values() for r in names], seq_len)
        scores = {name: [per_run[r] for r in names] for name, names in runs.items()}

    print(f"PETS09-S2L1 dev frames 1-{seq_len}, TrackEval MOT15 protocol; "
          f"`nice -n 15 .venv/bin/python benchmarks/mot_pets.py --options {','.join(o.name for o in chosen)}`")
    print(f"machine: {describe_machine()}, onnxruntime CPU; date {date.today().isoformat()}")
    print()
    print("A stride (`every` n) is scored at each of its n phases: mean, then the phases in brackets.")
    print()
    print("| option | what | frames detected | HOTA | IDF1 | MOTA | ID switches | detect ms/frame | track ms/frame "
          "| frames/s |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for o in chosen:
        det_cfg = configs[o.name][0]
        # ms per frame of the stream: a stride detects one frame in `every`
        det_ms = detected[det_cfg.model_copy(update={"every": 1}).model_dump_json()][1] / det_cfg.every
        cells = [_phases([100 * s[k] for s in scores[o.name]], ".1f") for k in ("HOTA", "IDF1", "MOTA")]
        cells.append(_phases([s["IDSW"] for s in scores[o.name]], ".1f", whole=True))
        detected_share = "all" if det_cfg.every == 1 else f"1 in {det_cfg.every}"
        print(f"| {o.name} | {o.what} | {detected_share} | {' | '.join(cells)} | {det_ms:.1f} | "
              f"{track_ms[o.name]:.2f} | {1000 / (det_ms + track_ms[o.name]):.1f} |")
    return 0


def _run_name(option: str, phase: int, every: int) -> str:
    return option if every == 1 else f"{option}@{phase}"


def _phases(values: list, fmt: str, whole: bool = False) -> str:
    """One cell: the value, or for a stride the mean over its phases and each phase's value."""
    if len(values) == 1:
        return f"{values[0]}" if whole else f"{values[0]:{fmt}}"
    each = ", ".join(f"{v}" if whole else f"{v:{fmt}}" for v in values)
    return f"{float(np.mean(values)):{fmt}} ({each})"


if __name__ == "__main__":
    sys.exit(main())
