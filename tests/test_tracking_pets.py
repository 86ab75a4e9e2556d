"""Per-camera tracking accuracy on real video with the pipeline's default config: PETS09-S2L1 dev frames 1-400,
detector and tracker built from a config holding only `cameras` (pipeline.perception, the code `pipeline run`
uses), scored with TrackEval (MOT15 protocol) against gt_dev.txt. Nothing here reads the held-back frames
401-795.

The floor is issue 15's bar: IDF1 >= 75 on the dev frames with the default config, at each phase of its stride.
Measured with benchmarks/mot_pets.py (2-core AMD EPYC, 2026-12-05): the default (YOLOX-nano at 640 on one frame
in 2, ByteTrack's static-camera params, Kalman velocity noise 1/60, buffered IoU 0.3 in the low-score association)
78.9 / 80.7 at its two phases (MOTA 70.3 / 71.6); with the library's plain IoU there the first phase falls to
74.9, below the floor (tests/test_components.py guards that lever too); every frame 81.6 / 73.4. The previous
defaults fall far below: 416 input 67.6 / 72.6, Ultralytics' tracker params 64.8 / 50.7, both 55.1 / 54.2, every
frame. The test scored frames 1-100 until 2026-12-04; there one crossing decides IDF1, so it now scores the 400
frames every tracking figure of the README uses.
"""

from __future__ import annotations

import contextlib
import io
from pathlib import Path

import cv2
import numpy as np
import pytest

pytestmark = pytest.mark.slow

FRAMES = 400
SEQ = "PETS09-S2L1-dev"
IDF1_FLOOR = 75.0
MOTA_FLOOR = 70.0


def _score(gt_rows: np.ndarray, mot_file: Path, work: Path) -> dict[str, float]:
    import trackeval

    (work / "gt" / SEQ / "gt").mkdir(parents=True)
    np.savetxt(work / "gt" / SEQ / "gt" / "gt.txt", gt_rows, delimiter=",", fmt="%g")
    (work / "gt" / SEQ / "seqinfo.ini").write_text(
        f"[Sequence]\nname={SEQ}\nframeRate=7\nseqLength={FRAMES}\nimWidth=768\nimHeight=576\n")
    (work / "trackers" / "pipeline" / "data").mkdir(parents=True)
    (work / "trackers" / "pipeline" / "data" / f"{SEQ}.txt").write_text(mot_file.read_text())
    dataset_cfg = trackeval.datasets.MotChallenge2DBox.get_default_dataset_config()
    dataset_cfg.update(GT_FOLDER=str(work / "gt"), TRACKERS_FOLDER=str(work / "trackers"), BENCHMARK="MOT15",
                       SEQ_INFO={SEQ: FRAMES}, SKIP_SPLIT_FOL=True, TRACKERS_TO_EVAL=["pipeline"], PRINT_CONFIG=False)
    eval_cfg = trackeval.Evaluator.get_default_eval_config()
    eval_cfg.update(PRINT_RESULTS=False, PRINT_CONFIG=False, OUTPUT_SUMMARY=False, OUTPUT_DETAILED=False,
                    PLOT_CURVES=False, OUTPUT_EMPTY_CLASSES=False, TIME_PROGRESS=False, DISPLAY_LESS_PROGRESS=True,
                    USE_PARALLEL=False)
    with contextlib.redirect_stdout(io.StringIO()):  # TrackEval prints its progress and configs
        res, _ = trackeval.Evaluator(eval_cfg).evaluate([trackeval.datasets.MotChallenge2DBox(dataset_cfg)],
                                                        [trackeval.metrics.CLEAR(), trackeval.metrics.Identity()])
    r = res["MotChallenge2DBox"]["pipeline"]["COMBINED_SEQ"]["pedestrian"]
    return {"IDF1": 100 * float(r["Identity"]["IDF1"]), "MOTA": 100 * float(r["CLEAR"]["MOTA"]),
            "IDSW": int(r["CLEAR"]["IDSW"])}


def test_default_config_tracks_pets_people_above_the_measured_floor(tmp_path, shared_video, shared_models):
    """With a stride (`detector.every` n > 1) the tracker predicts the frames between detections, as the runner
    does; every phase (which frame of n the detector sees: the runner's is 0) must clear the floor, since on 400
    frames one crossing on a skipped frame moves IDF1 by several points."""
    from pipeline.annotate import write_mot_rows
    from pipeline.config import parse_config
    from pipeline.perception import detector_from_config, tracker_from_config

    config = parse_config({"cameras": [{"id": "pets", "source": str(shared_video["pets"])}]})
    detector, every = detector_from_config(config.detector), config.detector.every
    cap = cv2.VideoCapture(str(shared_video["pets"]))
    frames, detections = [], []
    try:
        for index in range(FRAMES):
            ok, frame = cap.read()
            assert ok, f"{shared_video['pets']} ended at frame {index}"
            frames.append(frame)
            detections.append(detector.detect([frame])[0])
    finally:
        cap.release()
    gt = np.loadtxt(shared_video["pets_gt"], delimiter=",", ndmin=2)
    scores = {}
    for phase in range(every):
        tracker, mot = tracker_from_config(config.tracker), tmp_path / f"pets-{phase}.txt"
        with open(mot, "w") as fh:
            for index, (frame, dets) in enumerate(zip(frames, detections)):
                due = index < phase or (index - phase) % every == 0  # frames before the phase start the tracks
                write_mot_rows(fh, index, tracker.update(dets, frame) if due else tracker.predict(frame))
        scores[phase] = _score(gt[gt[:, 0] <= FRAMES], mot, tmp_path / f"eval-{phase}")
    print(f"PETS09-S2L1 frames 1-{FRAMES}, default config (detector.every {every}), by phase: {scores}")
    for phase, phase_scores in scores.items():
        assert phase_scores["IDF1"] >= IDF1_FLOOR, (phase, scores)
        assert phase_scores["MOTA"] >= MOTA_FLOOR, (phase, scores)
