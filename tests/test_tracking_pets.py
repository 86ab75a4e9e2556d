"""Per-camera tracking accuracy on real video with the pipeline's default config: PETS09-S2L1 dev frames 1-400,
detector and tracker built from a config holding only `cameras` (pipeline.perception, the code `pipeline run`
uses), scored with TrackEval (MOT15 protocol) against gt_dev.txt. Nothing here reads the held-back frames
401-795.

The floor is issue 15's bar: IDF1 >= 75 on the dev frames with the default config. Measured with
benchmarks/mot_pets.py (2-core AMD EPYC, 2026-12-04): the default (YOLOX-nano at 640, ByteTrack's static-camera
params, Kalman velocity noise 1/60) 81.6 / MOTA 73.4; the previous defaults fall below a floor: 416 input 67.6 /
72.6, Ultralytics' tracker params 64.8 / 50.7, both 55.1 / 54.2. (Kalman noise back at 1/160 gives 78.2 / 72.1
here; tests/test_components.py guards that lever.) The test scored frames 1-100 until 2026-12-04; there one
crossing decides IDF1 (76.0 with the 1/160 filter, 70.0 with 1/60), so it now scores the 400 frames every
tracking figure of the README uses.
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
    from pipeline.annotate import write_mot_rows
    from pipeline.config import parse_config
    from pipeline.perception import detector_from_config, tracker_from_config

    config = parse_config({"cameras": [{"id": "pets", "source": str(shared_video["pets"])}]})
    detector, tracker = detector_from_config(config.detector), tracker_from_config(config.tracker)
    cap = cv2.VideoCapture(str(shared_video["pets"]))
    mot = tmp_path / "pets.txt"
    try:
        with open(mot, "w") as fh:
            for index in range(FRAMES):
                ok, frame = cap.read()
                assert ok, f"{shared_video['pets']} ended at frame {index}"
                write_mot_rows(fh, index, tracker.update(detector.detect([frame])[0], frame))
    finally:
        cap.release()
    gt = np.loadtxt(shared_video["pets_gt"], delimiter=",", ndmin=2)
    scores = _score(gt[gt[:, 0] <= FRAMES], mot, tmp_path / "eval")
    print(f"PETS09-S2L1 frames 1-{FRAMES}, default config: {scores}")
    assert scores["IDF1"] >= IDF1_FLOOR, scores
    assert scores["MOTA"] >= MOTA_FLOOR, scores
