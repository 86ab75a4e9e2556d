"""Per-camera colour levelling: a camera's colour cast taken away in the runtime (real PETS crops) and in training
and evaluation (the model declares its reference; `reid eval` and the pipeline level to it)."""

import re
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
import yaml

from reid.checkpoint import load_checkpoint
from reid.datasets import load_dataset
from reid.datasets.levelling import level_dataset, load_for_model
from reid.export import pets_crops
from reid.inference.base import PreprocessSpec
from reid.inference.levelling import SPEC_KEY, BackgroundModel, CameraLevels, centre_mean, reference_of, region_of
from reid.transforms import read_record
from tests.reid_fixtures import make_synthcc

REPO = Path(__file__).resolve().parents[1]
CAST = np.array([0.7, 1.0, 1.3])  # B, G, R gains of a warm camera

pytestmark = pytest.mark.usefixtures("restore_torch_globals")


def _cast(img: np.ndarray, gains=CAST) -> np.ndarray:
    return np.clip(img.astype(np.float64) * gains + 0.5, 0, 255).astype(np.uint8)


def _mean(crops) -> np.ndarray:
    return np.mean([centre_mean(c) for c in crops], axis=0)


@pytest.fixture(scope="module")
def crops(shared_video):
    return pets_crops(shared_video["pets"], shared_video["pets_gt"], max_crops=48)


def test_camera_levels_take_a_cameras_cast_away(crops):
    reference = _mean(crops)
    levels = CameraLevels(reference, prior_crops=5)
    plain, warm = crops, [_cast(c) for c in crops]
    before = np.abs(_mean(warm) - _mean(plain))
    assert before.max() > 15  # the cast is visible: red up, blue down
    for _ in range(3):  # a camera's mean settles as its crops come in
        out = levels.level(["plain"] * len(plain) + ["warm"] * len(warm), plain + warm)
    lv_plain, lv_warm = out[:len(plain)], out[len(plain):]
    after = np.abs(_mean(lv_warm) - _mean(lv_plain))
    assert after.max() < 0.15 * before.max(), (before, after)
    # the people stay themselves: levelled warm crops are close to the plain crops, pixel by pixel
    diff_before = np.mean([np.abs(w.astype(int) - p.astype(int)).mean() for w, p in zip(warm, plain)])
    diff_after = np.mean([np.abs(w.astype(int) - p.astype(int)).mean() for w, p in zip(lv_warm, lv_plain)])
    assert diff_after < 0.4 * diff_before, (diff_before, diff_after)
    assert np.allclose(levels.gains("warm") * CAST, levels.gains("plain"), rtol=0.1)


def test_a_cameras_first_crops_are_barely_changed(crops):
    levels = CameraLevels(_mean(crops), prior_crops=50)
    warm = _cast(crops[0])
    out = levels.level(["new"], [warm])[0]
    assert np.abs(centre_mean(out) - centre_mean(warm)).max() < 0.05 * np.abs(centre_mean(warm) - centre_mean(crops[0])).max() + 1.5


def test_a_cameras_mean_forgets_beyond_its_horizon(crops):
    levels = CameraLevels(_mean(crops), prior_crops=0, horizon=10)
    levels.level(["a"] * len(crops), list(crops))
    warm = [_cast(c) for c in crops]
    for _ in range(3):
        levels.level(["a"] * len(warm), warm)
    assert levels.summary()["a"][0] == 10
    # the plain crops are forgotten: the mean is the (latest) warm crops', far from the plain ones
    gap = np.abs(_mean(warm) - _mean(crops)).max()
    assert np.abs(levels.camera_mean("a") - _mean(warm)).max() < 0.35 * gap
    assert np.abs(levels.camera_mean("a") - _mean(crops)).max() > 0.65 * gap
    saved = levels.state()
    fresh = CameraLevels(_mean(crops), prior_crops=0, horizon=10)
    fresh.restore(saved)
    assert np.allclose(fresh.camera_mean("a"), levels.camera_mean("a"))


def test_measured_gains_must_be_sane():
    from pydantic import ValidationError

    from pipeline.config import CameraConfig

    assert CameraConfig(id="a", source="x.mp4", colour_gains=[1.1, 1.0, 0.9]).colour_gains == (1.1, 1.0, 0.9)
    for bad in ([0, 1, 1], [1, 1], [1, 1, 9]):
        with pytest.raises(ValidationError, match="colour_gains"):
            CameraConfig(id="a", source="x.mp4", colour_gains=bad)


def test_int8_calibration_images_are_levelled_for_a_levelled_model(crops, tmp_path):
    from reid.export import calibration_images

    warm = [_cast(c) for c in crops]
    for k, img in enumerate(warm):
        cv2.imwrite(str(tmp_path / f"{k:03d}.png"), img)
    reference = _mean(crops)
    levelled = calibration_images(tmp_path, 100, PreprocessSpec(extra={SPEC_KEY: {"reference": list(reference)}}))
    assert len(levelled) == len(warm)
    assert np.abs(_mean(levelled) - reference).max() < 2.0
    # a plain model calibrates on the images as they are
    assert np.abs(_mean(calibration_images(tmp_path, 100, PreprocessSpec())) - _mean(warm)).max() < 0.01


def test_reference_read_from_the_spec_and_bad_entries_fail():
    assert reference_of(PreprocessSpec()) is None
    assert reference_of(PreprocessSpec(extra={SPEC_KEY: {"reference": [100, 110, 120]}})) == [100.0, 110.0, 120.0]
    with pytest.raises(ValueError, match="expected"):
        reference_of(PreprocessSpec(extra={SPEC_KEY: {"reference": [1, 2]}}))
    with pytest.raises(ValueError, match="positive"):
        CameraLevels([0, 1, 1])


@pytest.fixture(scope="module")
def warm_set(tmp_path_factory):
    """Toy SynthCC tree whose camera 2 sees everything through a warm cast."""
    root = make_synthcc(tmp_path_factory.mktemp("synthcc_warm"), n_train=6, n_test=4, size=(32, 16))
    for path in root.rglob("*_c02_*.png"):
        if "masks" not in path.parts:
            cv2.imwrite(str(path), _cast(cv2.imread(str(path))))
    return root


def _camera_means(records):
    by_cam = {}
    for r in records:
        by_cam.setdefault(r.camid, []).append(read_record(r))
    return {cam: _mean(imgs) for cam, imgs in by_cam.items()}


def test_level_dataset_brings_every_camera_to_the_reference(warm_set):
    ds = load_dataset("synthcc", warm_set)
    raw = _camera_means(ds.train)
    levelled, reference = level_dataset(ds)
    assert np.allclose(reference, np.mean(list(raw.values()), axis=0))
    train_means = _camera_means(levelled.train)
    assert all(np.abs(m - reference).max() < 2.0 for m in train_means.values()), train_means
    test_records = [r for s in levelled.eval_splits for r in (*s.query, *s.gallery)]
    assert all(r.gains is not None for r in test_records)
    test_means = _camera_means(test_records)
    test_raw = _camera_means([r for s in ds.eval_splits for r in (*s.query, *s.gallery)])
    # (not to zero: the toy test people are redder than the training people, and gains above 1 clip at 255)
    assert np.ptp(np.stack(list(test_means.values())), axis=0).max() < \
        0.2 * np.ptp(np.stack(list(test_raw.values())), axis=0).max()
    # evaluation of a model that declares the reference levels only the test splits, to that reference
    spec = PreprocessSpec(extra={SPEC_KEY: {"reference": [v + 10 for v in reference]}})
    for_model = load_for_model("synthcc", warm_set, spec)
    assert all(r.gains is None for r in for_model.train)
    for r in (r for s in for_model.eval_splits for r in (*s.query, *s.gallery)):
        assert np.allclose(r.gains, np.add(reference, 10) / test_raw[r.camid], rtol=1e-6)
    assert all(r.gains is None for s in load_for_model("synthcc", warm_set, PreprocessSpec()).eval_splits
               for r in s.query)


def test_level_dataset_over_person_pixels_uses_the_masks(warm_set):
    ds = load_dataset("synthcc", warm_set)
    _, centre_reference = level_dataset(ds)
    levelled, reference = level_dataset(ds, region="person")
    # computed here from the masks: each training camera's mean over its images' person pixels, then their mean
    by_cam = {}
    for r in ds.train:
        img, mask = cv2.imread(r.path), cv2.imread(r.mask_path, cv2.IMREAD_UNCHANGED)
        by_cam.setdefault(r.camid, []).append(img[mask > 0].mean(0))
    assert np.allclose(reference, np.mean([np.mean(v, axis=0) for v in by_cam.values()], axis=0))
    assert not np.allclose(reference, centre_reference, atol=1.0)  # the toy people's bodies are not their crops
    # every camera's person pixels reach the reference (the warm camera too)
    for cam in by_cam:
        recs = [r for r in levelled.train if r.camid == cam]
        means = [read_record(r)[cv2.imread(r.mask_path, cv2.IMREAD_UNCHANGED) > 0].mean(0) for r in recs]
        assert np.abs(np.mean(means, axis=0) - reference).max() < 2.0, cam
    # a model levelled over person pixels, evaluated on a set without masks, falls back to the box centres
    spec = PreprocessSpec(extra={SPEC_KEY: {"reference": reference, "region": "person"}})
    assert region_of(spec) == "person" and region_of(PreprocessSpec()) == "centre"
    with pytest.raises(ValueError, match="region"):
        region_of(PreprocessSpec(extra={SPEC_KEY: {"reference": reference, "region": "sky"}}))
    masked = load_for_model("synthcc", warm_set, spec)
    assert any("(person)" in n for n in masked.notes)


def test_level_dataset_over_person_pixels_needs_masks(warm_set):
    from dataclasses import replace

    ds = load_dataset("synthcc", warm_set)
    ds = replace(ds, train=[replace(r, mask_path=None) for r in ds.train])
    with pytest.raises(ValueError, match="needs a parts mask"):
        level_dataset(ds, region="person")


def _pets_frames(shared_video, n: int):
    gt = np.loadtxt(shared_video["pets_gt"], delimiter=",", ndmin=2)
    cap = cv2.VideoCapture(str(shared_video["pets"]))
    for index in range(1, n + 1):
        ok, frame = cap.read()
        assert ok, f"{shared_video['pets']}: frame {index} unreadable"
        rows = gt[gt[:, 0] == index]
        yield frame, np.c_[rows[:, 2], rows[:, 3], rows[:, 2] + rows[:, 4], rows[:, 3] + rows[:, 5]].clip(0)
    cap.release()


def test_background_model_finds_the_people_of_a_static_camera(shared_video):
    model = BackgroundModel()
    for index, (frame, boxes) in enumerate(_pets_frames(shared_video, 80), start=1):
        assert (model.person_mask(frame, boxes[0]) is None) == (index <= 2 * model.warmup - 1)
        model.update(frame, boxes)
    people = [model.person_mask(frame, b) for b in boxes if b[3] - b[1] >= 48]
    assert len(people) >= 3
    fractions = [m.mean() for m in people]
    assert min(fractions) > 0.2 and max(fractions) < 0.95, fractions
    # the same boxes moved to where nobody is: the background, nearly no pixel taken for a person
    w = frame.shape[1]
    empty = []
    for b in boxes:
        bw = b[2] - b[0]
        for x in np.arange(0, w - bw, bw):
            moved = np.array([x, b[1], x + bw, b[3]])
            if all(moved[2] <= o[0] - 4 or moved[0] >= o[2] + 4 or moved[3] <= o[1] or moved[1] >= o[3] for o in boxes):
                empty.append(model.person_mask(frame, moved).mean())
    assert len(empty) >= 5 and np.median(empty) < 0.03, empty
    # a cast on the whole view (background learnt through it too) shows in the person pixels' mean as it is
    cast = BackgroundModel()
    for frame, boxes in _pets_frames(shared_video, 80):
        cast.update(_cast(frame), boxes)
    for b in boxes:
        plain, warm = model.person_mean(frame, b), cast.person_mean(_cast(frame), b)
        if plain is not None and warm is not None:
            assert np.allclose(warm / plain, CAST, rtol=0.12), (warm / plain)


def test_a_person_standing_still_is_never_learnt_as_background(shared_video, crops):
    frame, _ = next(_pets_frames(shared_video, 1))
    person = cv2.resize(crops[0], (40, 100))
    still = frame.copy()
    still[300:400, 500:540] = person
    box = np.array([[500, 300, 540, 400]])
    behind = np.abs(frame[300:400, 500:540].astype(int) - person.astype(int)).max(axis=2) > 30
    model = BackgroundModel(every=1)
    for _ in range(model.warmup):
        model.update(frame, np.zeros((0, 4)))
    for _ in range(60):  # someone who arrives and stays put, inside their box
        model.update(still, box)
    mask = model.person_mask(still, box[0])
    assert mask[behind].mean() > 0.95  # all of them where they differ from what is behind them
    # someone already there in the first frame: what is behind them is unknown, so none of it is called theirs
    first = BackgroundModel(every=1)
    for _ in range(60):
        first.update(still, box)
    assert not first.person_mask(still, box[0]).any()
    first.update(frame, np.zeros((0, 4)))  # they leave: the background behind them is seen
    assert first.person_mask(still, box[0])[behind].mean() > 0.95


def test_person_region_counts_only_the_crops_with_person_pixels(crops):
    reference = _mean(crops)
    levels = CameraLevels(reference, prior_crops=0, region="person")
    with pytest.raises(ValueError, match="person mean"):
        levels.level(["a"], [crops[0]])
    levels.level(["a", "a", "a"], list(crops[:3]), [reference * CAST, None, reference * CAST])
    assert levels.summary()["a"][0] == 2
    assert np.allclose(levels.gains("a"), 1 / CAST)
    with pytest.raises(ValueError, match="region"):
        CameraLevels(reference, region="sky")


def _recipe(root, out, levelling=True) -> Path:
    raw = {
        "name": "levelled", "seed": 3, "device": "cpu", "threads": 1, "output_dir": str(out),
        "data": {"dataset": "synthcc", "root": str(root), "height": 32, "width": 16, "batch_size": 8,
                 "num_instances": 2, "num_workers": 0, "cache_images": True, "colour_levelling": levelling},
        "model": {"backbone": "resnet_lite", "lite_widths": [8, 8, 16, 16]},
        "loss": {"method": "cal", "triplet_weight": 1.0, "start_epoch_cal": 1},
        "optim": {"epochs": 1, "lr": 1e-3, "milestones": [1]},
        "eval": {"every": 1, "batch_size": 32},
    }
    path = Path(out).with_suffix(".yaml")
    path.write_text(yaml.safe_dump(raw))
    return path


@pytest.fixture(scope="module")
def levelled_model(warm_set, tmp_path_factory):
    out = tmp_path_factory.mktemp("levelled") / "run"
    done = subprocess.run([sys.executable, "-m", "reid", "train", str(_recipe(warm_set, out)), "--no-progress"],
                          cwd=REPO, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-3000:]
    return out / "model_last.safetensors"


def test_training_stores_the_reference_and_eval_levels_to_it(warm_set, levelled_model, tmp_path):
    import torch

    _, spec = load_checkpoint(levelled_model, torch.device("cpu"))
    reference = reference_of(spec)
    _, expected = level_dataset(load_dataset("synthcc", warm_set))
    assert reference == pytest.approx(expected)
    out = subprocess.run([sys.executable, "-m", "reid", "eval", "--weights", str(levelled_model), "--dataset",
                          "synthcc", "--root", str(warm_set), "--threads", "1", "--no-progress"],
                         cwd=REPO, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr[-3000:]
    assert "colour levelled per camera" in out.stdout


def test_pipeline_levels_the_crops_of_a_levelled_model(levelled_model, shared_video, shared_models, tmp_path):
    from reid.export import ExportOptions, run_export

    onnx_path = tmp_path / "levelled.onnx"
    report = run_export(ExportOptions(levelled_model, "onnx", out=onnx_path, parity_video=shared_video["pets"],
                                      parity_gt=shared_video["pets_gt"], parity_crops=8, threads=1),
                        log=lambda *_: None)
    assert report.passed, report
    runs = {}
    for levelling in (True, False):
        cfg = tmp_path / f"run-{levelling}.yaml"
        cfg.write_text(yaml.safe_dump({
            # camera b's cast was measured once (a grey card): its gains are those, never the running estimate
            "cameras": [{"id": "a", "source": str(shared_video["pets"])},
                        {"id": "b", "source": str(shared_video["pets"]), "colour_gains": [1.1, 1.0, 0.9]}],
            "output": {"video": False},
            "reid": {"model": str(onnx_path), "colour_levelling": levelling, "colour_levelling_prior": 0,
                     "min_height": 32}}))
        runs[levelling] = subprocess.run(
            [sys.executable, "-m", "pipeline", "run", str(cfg), "--output-dir", str(tmp_path / f"out-{levelling}"),
             "--max-frames", "20", "--no-progress"], cwd=REPO, capture_output=True, text=True, timeout=600)
        assert runs[levelling].returncode == 0, runs[levelling].stderr[-3000:]
    assert "colour levelling: each camera's crops to the model's reference" in runs[True].stderr
    # every embedded crop went through the camera's levelling, and PETS's colours are not the toy set's
    found = re.search(r"colour levelling: camera a: (\d+) crops, gains B ([\d.]+) G ([\d.]+) R ([\d.]+)",
                      runs[True].stderr)
    assert found, runs[True].stderr[-3000:]
    measured = re.search(r"colour levelling: camera b: (\d+) crops, gains B 1.100 G 1.000 R 0.900",
                         runs[True].stderr)
    assert measured, runs[True].stderr[-3000:]
    embedded = re.search(r"crops embedded (\d+)", runs[True].stdout + runs[True].stderr)
    assert embedded and int(found.group(1)) + int(measured.group(1)) == int(embedded.group(1))
    assert int(found.group(1)) > 0 and int(measured.group(1)) > 0
    gains = np.array([float(found.group(k)) for k in (2, 3, 4)])
    assert np.abs(gains - 1).max() > 0.05, gains
    assert "colour levelling: camera" not in runs[False].stderr
    # a second run on the same store continues each camera's mean from the first run's crops
    again = subprocess.run(
        [sys.executable, "-m", "pipeline", "run", str(tmp_path / "run-True.yaml"), "--output-dir",
         str(tmp_path / "out-True"), "--max-frames", "20", "--no-progress"],
        cwd=REPO, capture_output=True, text=True, timeout=600)
    assert again.returncode == 0, again.stderr[-3000:]
    first = int(found.group(1))
    assert f"colour levelling: camera a continues from {first} crops of earlier runs" in again.stderr
    later = re.search(r"colour levelling: camera a: (\d+) crops", again.stderr)
    assert later and int(later.group(1)) == 2 * first  # the same frames again: as many new crops
    assert "trained on colour-levelled cameras" in runs[False].stderr


def test_store_keeps_cameras_colour_statistics_and_skips_broken_entries(redis_client, caplog):
    from pipeline.store import IdentityStore

    store = IdentityStore(redis_client, "lvl")
    store.save_camera_colour({"a": ([1000.0, 2000.0, 3000.0], 10.0), "b": ([5.0, 6.0, 7.0], 1.0)})
    # statistics over person pixels are another measure: a model levelling over box centres never takes them
    store.save_camera_colour({"p": ([9.0, 9.0, 9.0], 1.0)}, region="person")
    assert store.camera_colour("person") == {"p": ([9.0, 9.0, 9.0], 1.0)}
    redis_client.hset(store.camera_colour_key, "broken", "{not json")
    redis_client.hset(store.camera_colour_key, "short", '{"sum": [1, 2], "n": 3}')
    with caplog.at_level("WARNING"):
        saved = store.camera_colour()
    assert saved == {"a": ([1000.0, 2000.0, 3000.0], 10.0), "b": ([5.0, 6.0, 7.0], 1.0)}
    assert "camera broken: colour statistics unreadable" in caplog.text and "camera short" in caplog.text
    assert "camera p: colour statistics were taken over 'person'" in caplog.text
    levels = CameraLevels([100, 200, 300], prior_crops=0)
    levels.restore(saved)
    assert np.allclose(levels.camera_mean("a"), [100, 200, 300])


@pytest.fixture(scope="module")
def person_levelled_model(warm_set, tmp_path_factory):
    out = tmp_path_factory.mktemp("person_levelled") / "run"
    done = subprocess.run([sys.executable, "-m", "reid", "train", str(_recipe(warm_set, out, "person")),
                           "--no-progress"], cwd=REPO, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-3000:]
    return out / "model_last.safetensors"


def test_pipeline_levels_over_person_pixels_against_each_cameras_background(person_levelled_model, warm_set,
                                                                            shared_video, tmp_path):
    import torch

    _, spec = load_checkpoint(person_levelled_model, torch.device("cpu"))
    assert region_of(spec) == "person"
    assert reference_of(spec) == pytest.approx(level_dataset(load_dataset("synthcc", warm_set), region="person")[1])
    cfg = tmp_path / "run.yaml"
    cfg.write_text(yaml.safe_dump({
        "cameras": [{"id": "a", "source": str(shared_video["pets"])}], "output": {"video": False},
        "reid": {"model": str(person_levelled_model), "colour_levelling_prior": 0, "min_height": 32}}))
    run = subprocess.run([sys.executable, "-m", "pipeline", "run", str(cfg), "--output-dir", str(tmp_path / "out"),
                          "--max-frames", "50", "--no-progress"], cwd=REPO, capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr[-3000:]
    assert "cameras' means over person pixels" in run.stderr
    # crops before the camera's background is learnt are levelled but not counted; later ones are
    found = re.search(r"colour levelling: camera a: (\d+) crops, gains B ([\d.]+) G ([\d.]+) R ([\d.]+)", run.stderr)
    embedded = re.search(r"crops embedded (\d+)", run.stdout + run.stderr)
    assert found and embedded, run.stderr[-3000:]
    assert 0 < int(found.group(1)) < int(embedded.group(1))
    gains = np.array([float(found.group(k)) for k in (2, 3, 4)])
    assert np.abs(gains - 1).max() > 0.05, gains
