"""End to end through a clothing change: a clothes-changing model trained here with `python -m reid`,
calibrated with `python -m reid calibrate --write`, runs in `python -m pipeline run` (a subprocess, a private
redis-server) on two camera videos made by `python -m synth scenes --script`:

- person 1 walks through camera 1 in one outfit and through camera 2 in another: one identity, and an
  `identity.outfit_changed` event on the camera-2 track;
- persons 2 and 3 wear the very same outfit (camera 1 and camera 2 respectively) but have clearly different
  bodies (skin, hair, height): two identities, neither of them person 1's.

The model is small and trained for minutes on SynthCC people whose bodies are disjoint from the scene's, so the
scene asks for clear cases only: what the test checks is that the pipeline carries the model's clothes-invariant
feature, the model file's calibrated thresholds and the outfit descriptor through to the right decisions. Break any
of these (the default same-clothes model, thresholds left at the same-clothes defaults, outfit decisions off) and
one of the assertions fails.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections import Counter, defaultdict
from pathlib import Path

import pytest
import yaml

from synth.truth import outfit_event_check, track_people

# Its setup trains a model (about 2 min on a quiet 2-core CPU; 13 min was seen under a load of 5): more than
# the suite-wide 600 s limit allows under load, so this module gets its own.
pytestmark = [pytest.mark.slow, pytest.mark.timeout(1800)]

ROOT = Path(__file__).resolve().parent.parent

SCRIPT = {
    "people": 3,
    "outfits_per_person": 2,
    "visits": [
        {"person": 1, "camera": 1, "outfit": 1, "start": 0},
        {"person": 2, "camera": 1, "outfit": 1, "start": 40},
        {"person": 1, "camera": 2, "outfit": 2, "start": 90},
        {"person": 3, "camera": 2, "outfit": 1, "start": 130},
    ],
    "shared": [{"person": 3, "outfit": 1, "as_person": 2, "as_outfit": 1}],
    "bodies": {2: {"skin_tone": 0.1, "hair_rgb": [0.85, 0.72, 0.4], "height_m": 1.9},
               3: {"skin_tone": 0.95, "hair_rgb": [0.06, 0.05, 0.05], "height_m": 1.6}},
}
MIN_TRACK_BOXES = 5
SCENE_SEED = 4  # walks of 21-55 frames, every visit seen; chosen for visit lengths, before any model ran on it


def _module(*args: str, timeout: int = 900) -> subprocess.CompletedProcess:
    proc = subprocess.run([sys.executable, "-m", *map(str, args)], cwd=ROOT, capture_output=True, text=True,
                          timeout=timeout)
    assert proc.returncode == 0, f"python -m {' '.join(map(str, args))} failed:\n{proc.stderr[-3000:]}"
    return proc


@pytest.fixture(scope="module")
def cc_model(tmp_path_factory) -> tuple[Path, dict]:
    """CAL on SynthCC `tiny` people with many outfits each (so no outfit names its wearer), then calibrated
    against a gallery the size of the scene's; (model file, the calibration's JSON report)."""
    work = tmp_path_factory.mktemp("cc_model")
    # 48 people x 8 outfits x 2 cameras (768 crops), 16 epochs: about 3.5 min on 2 cores (13 s an epoch).
    _module("synth", "people", "--preset", "tiny", "--seed", 5, "--out", work / "people",
            "--set", "n_train=48", "--set", "train_outfits_per_person=8", "--set", "train_images_per_cam=1")
    _module("reid", "train", "configs/reid/synthcc_cpu_cal.yaml", "--root", work / "people", "--output-dir",
            work / "cal", "--epochs", 16, "--set", "optim.milestones=[12]", "--set", "loss.start_epoch_cal=6",
            "--no-progress")
    model = work / "cal" / "model_last.safetensors"
    _module("reid", "calibrate", "--weights", model, "--root", work / "people", "--gallery-people", 2, "--write",
            "--json", work / "calibration.json")
    return model, json.loads((work / "calibration.json").read_text())


@pytest.fixture(scope="module")
def scene(tmp_path_factory) -> Path:
    work = tmp_path_factory.mktemp("cc_scene")
    (work / "plan.yaml").write_text(yaml.safe_dump(SCRIPT))
    _module("synth", "scenes", "--preset", "tiny", "--seed", SCENE_SEED, "--script", work / "plan.yaml",
            "--out", work / "scene", "--set", "n_cameras=2", "--set", "frames=220", "--set", "width=640",
            "--set", "height=360")
    return work / "scene"


def test_one_identity_through_a_clothing_change_and_two_for_one_outfit_on_two_people(cc_model, scene, redis_server,
                                                                                  tmp_path):
    cameras = yaml.safe_load((scene / "cameras.yaml").read_text())["cameras"]
    # threshold, outfit_threshold and merge_threshold come from the model file (calibrate --write); the
    # optional same-outfit rule is set from the calibration's printout, as its README says to do where people
    # may share an outfit (uniforms). Measured here (2026-12-03, same recipe, scene-crop means): person 1
    # across the change 0.48, persons 2 and 3 in one outfit 0.16, calibrated threshold 0.36. The rule keeps the
    # shared-outfit case from resting on the model's margin alone (a 20-epoch model passed without it too).
    model, calibration = cc_model
    same_outfit = calibration["same_outfit_threshold"]
    cfg = tmp_path / "cams.yaml"
    cfg.write_text(yaml.safe_dump({
        "cameras": [{**c, "source": str(scene / c["source"])} for c in cameras],
        "store": redis_server.url,
        "reid": {"model": str(model)},
        "matcher": {"same_outfit_threshold": same_outfit["value"]},
        "output": {"video": False},
    }))
    run = _module("pipeline", "run", cfg, "--output-dir", tmp_path / "out", "--mot-dir", tmp_path / "mot",
                  "--no-progress", timeout=600)
    assert "matcher thresholds from the model file's calibration" in run.stderr
    events = [json.loads(line) for line in
              _module("pipeline", "events", "--store", redis_server.url, "--from-start").stdout.splitlines()]

    from pipeline.store import IdentityStore

    store = IdentityStore(redis_server.client())
    final = {(e["camera_id"], e["track_id"]): store.resolve(e["identity_id"])
             for e in events if e["type"] == "track.ended" and e["identity_id"] is not None}
    people = track_people(scene, tmp_path / "mot")  # (camera, track) -> (person, outfit uid)
    # A track of a few frames on a person who is already tracked is a duplicate box of the tracker (one was
    # seen here: 2 frames while the person's own track went on); the identities of people's walks are judged.
    boxes = Counter((mot.stem, int(line.split(",")[1])) for mot in (tmp_path / "mot").glob("*.txt")
                    for line in mot.read_text().splitlines())
    people = {key: who for key, who in people.items() if boxes[key] >= MIN_TRACK_BOXES}
    identities: dict[int, set[int]] = defaultdict(set)  # person -> final identities of their tracks
    for key, (person, _) in people.items():
        assert key in final, f"track {key} of person {person} ended without an identity"
        identities[person].add(final[key])
    summary = {p: sorted(ids) for p, ids in sorted(identities.items())}
    assert set(identities) == {1, 2, 3}, f"the tracker must follow all three people: {summary}"

    # Person 1, through the change of clothes: one identity, and the change said so.
    assert len(identities[1]) == 1, f"person 1 split over identities across the outfit change: {summary}"
    outfit_events, right = outfit_event_check(events, final, people)
    assert right >= 1, (f"no identity.outfit_changed event for person 1's new outfit ({outfit_events} outfit "
                        f"events in all): {summary}")
    # Persons 2 and 3, one outfit on two bodies: two identities, and neither is person 1's.
    assert identities[2].isdisjoint(identities[3]), f"two people in one outfit were made one identity: {summary}"
    assert identities[1].isdisjoint(identities[2] | identities[3]), f"a stranger joined person 1: {summary}"
