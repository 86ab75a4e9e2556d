"""`python -m reid calibrate`: the rules behind the suggested thresholds, the model-file round trip, and the
pipeline taking a model's thresholds only where its config is silent."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
import torch

from pipeline.config import MatcherConfig
from pipeline.matcher import thresholds_from_model
from reid.calibrate import (Sightings, calibrate_sightings, format_calibration, gallery_cut, rate_cut,
                            with_thresholds, write_thresholds, youden_cut)
from reid.checkpoint import save_checkpoint
from reid.export import ExportOptions, run_export
from reid.inference.base import PreprocessSpec
from reid.inference.factory import create_embedder
from reid.models import ArchConfig, build_model

SPEC = PreprocessSpec(height=128, width=64, method="test resnet_lite", train_dataset="none")
SUGGESTED = {"threshold": 0.42, "outfit_threshold": 0.61, "merge_threshold": 0.77, "calibrated_on": "test"}


def test_youden_cut_separates_and_reports_its_rates():
    cut = youden_cut(np.array([0.5, 0.6, 0.9]), np.array([0.1, 0.2, 0.3]))
    assert cut.value == 0.5 and cut.accept_positive == 1.0 and cut.accept_negative == 0.0
    # Overlap: the best cut keeps 2 of 3 positives and lets 1 of 4 negatives through, not more.
    cut = youden_cut(np.array([0.2, 0.7, 0.8]), np.array([0.1, 0.3, 0.4, 0.75]))
    assert cut.value == pytest.approx(0.7) and cut.accept_positive == pytest.approx(2 / 3)
    assert cut.accept_negative == pytest.approx(0.25)
    with pytest.raises(ValueError, match="positive and negative"):
        youden_cut(np.array([]), np.array([0.1]))


def test_merge_cut_is_a_false_rate_never_below_the_floor():
    neg = np.linspace(0, 1, 10001)
    cut = rate_cut(np.array([0.95, 0.99]), neg, 0.001, floor=0.5)
    assert cut.value == pytest.approx(0.999, abs=1e-4) and cut.accept_negative <= 0.0011
    assert rate_cut(np.array([0.9]), np.array([0.1, 0.2]), 0.001, floor=0.6).value == 0.6


def _grid(people: int, same_person: float, strangers: float):
    """Sightings (person, outfit, camera) of `people` people in 2 outfits x 2 cameras, with one cosine for
    every pair of one person and another for every pair of two people."""
    rows = [(p, 2 * p + o, c) for p in range(people) for o in range(2) for c in range(2)]
    person, outfit, camera = (np.array([r[k] for r in rows]) for k in range(3))
    cos = np.where(person[:, None] == person[None, :], same_person, strangers)
    return cos, person, outfit, camera


def test_gallery_cut_joins_returning_people_and_leaves_new_people_alone():
    cos, person, outfit, camera = _grid(12, same_person=0.6, strangers=0.2)
    cut = gallery_cut(cos, person, outfit, camera, gallery_people=5)
    assert 0.2 < cut.value <= 0.6 and cut.accept_positive == 1.0 and cut.accept_negative == 0.0
    # The bigger the gallery, the higher the strangers' best cosine and so the higher the threshold.
    rng = np.random.default_rng(1)
    noisy = np.clip(cos + rng.normal(0, 0.15, cos.shape), -1, 1)
    noisy = (noisy + noisy.T) / 2
    small = gallery_cut(noisy, person, outfit, camera, gallery_people=2)
    big = gallery_cut(noisy, person, outfit, camera, gallery_people=11)
    assert big.value >= small.value
    with pytest.raises(ValueError, match="two outfits"):
        gallery_cut(cos, person, np.zeros_like(outfit), camera, gallery_people=5)


def _sightings(people: int = 6, outfits: int = 2, cams: int = 2, clothes_weight: float = 0.8) -> Sightings:
    """Identity = body direction + a clothes direction (a model that is partly clothes-sensitive); the outfit
    descriptor sees clothes only."""
    rng = np.random.default_rng(0)
    body = rng.normal(size=(people, 32))
    clothes = rng.normal(size=(people, outfits, 32))
    rows = [(p, p * outfits + o, c) for p in range(people) for o in range(outfits) for c in range(cams)]
    ident = np.stack([body[p] + clothes_weight * clothes[p, o % outfits] + 0.1 * rng.normal(size=32)
                      for p, o, _ in rows])
    look = np.stack([clothes[p, o % outfits] + 0.2 * rng.normal(size=32) for p, o, _ in rows])
    unit = lambda x: (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)  # noqa: E731
    return Sightings(np.array([r[0] for r in rows]), np.array([r[1] for r in rows]), np.array([r[2] for r in rows]),
                     unit(ident), unit(look))


def test_calibration_puts_each_threshold_between_the_populations_it_must_separate():
    c = calibrate_sightings(_sightings(), "m", "d", "hand-made outfit descriptor", gallery_people=30)
    q = {d.label: d.quantiles for d in c.identity}
    assert q["same person, same outfit"]["p50"] > q["same person, other outfit"]["p50"] > q["different people"]["p50"]
    # Against 5 strangers: links most returning people to themselves and few new people to anybody.
    assert c.gallery_people == 5
    assert c.threshold.accept_positive >= 0.8 and c.threshold.accept_negative <= 0.1
    assert q["different people"]["p95"] < c.threshold.value <= q["same person, other outfit"]["p50"]
    o = {d.label: d.quantiles for d in c.outfit}
    assert o["same person, other outfit"]["p95"] < c.outfit_threshold.value <= o["same person, same outfit"]["p5"]
    assert c.merge_threshold.value >= c.threshold.value and c.merge_threshold.accept_negative <= 0.002
    s = c.suggested()
    assert set(s) == {"threshold", "outfit_threshold", "merge_threshold", "window_threshold", "calibrated_on"}
    assert c.same_outfit_threshold.value >= c.threshold.value
    assert s["threshold"] == round(c.threshold.value, 3)
    # Inside a transit window the rule runs against fewer people (default 4): never a higher threshold, and
    # against 1 stranger one well below the whole gallery's on this noisy grid.
    assert c.window_people == 4 and c.window_threshold.value <= c.threshold.value
    assert s["window_threshold"] == round(c.window_threshold.value, 3)
    one = calibrate_sightings(_noisy_sightings(), "m", "d", "hand-made outfit descriptor", gallery_people=30,
                              window_people=1)
    assert one.window_threshold.value < one.threshold.value
    assert one.window_threshold.accept_positive > one.threshold.accept_positive


def test_a_feature_without_cosine_margin_is_named_with_its_fix():
    """A raw post-ReLU feature (CSSC's pre-BN pooled vector) puts everyone near cosine 1: calibration warns and
    names the export that centres it; the same people centred get no warning."""
    s = _sightings()
    offset = 40.0 * np.ones_like(s.identity[0])  # a shared positive direction much larger than the people's spread
    crowded = Sightings(s.person, s.outfit, s.camera,
                        ((s.identity + offset) / np.linalg.norm(s.identity + offset, axis=1, keepdims=True)), s.look)
    c = calibrate_sightings(crowded, "m", "d", "hand-made outfit descriptor")
    assert c.crowded and "--feature centred" in format_calibration(c)
    plain = calibrate_sightings(s, "m", "d", "hand-made outfit descriptor")
    assert not plain.crowded and "warning" not in format_calibration(plain)


def _noisy_sightings() -> Sightings:
    """Many people whose other-outfit cosines overlap the strangers': the gallery's size decides the threshold."""
    return _sightings(people=24, outfits=2, cams=2, clothes_weight=1.6)


def test_the_pipeline_takes_model_thresholds_only_where_its_config_is_silent():
    spec = with_thresholds(SPEC, SUGGESTED)
    cfg, taken = thresholds_from_model(MatcherConfig(), spec)
    assert taken == {"threshold": 0.42, "outfit_threshold": 0.61, "merge_threshold": 0.77}
    assert (cfg.threshold, cfg.outfit_threshold, cfg.merge_threshold) == (0.42, 0.61, 0.77)
    cfg, taken = thresholds_from_model(MatcherConfig.model_validate({"threshold": 0.3, "merge_threshold": None}), spec)
    assert taken == {"outfit_threshold": 0.61}
    assert (cfg.threshold, cfg.outfit_threshold, cfg.merge_threshold) == (0.3, 0.61, None)
    cfg, taken = thresholds_from_model(MatcherConfig(), SPEC)  # an uncalibrated model changes nothing
    assert taken == {} and cfg.threshold == MatcherConfig().threshold


def test_an_outfit_model_sets_the_descriptor_thresholds_from_its_own_level():
    """reid.outfit_model: the descriptor is that model's feature, so the identity model's calibrated
    outfit_threshold (measured on another descriptor) is not taken; both descriptor thresholds become the outfit
    model's calibrated threshold, or the default model's threshold default; the config still wins."""
    spec = with_thresholds(SPEC, SUGGESTED)
    cfg, taken = thresholds_from_model(MatcherConfig(), spec, outfit_model=True, outfit_spec=SPEC)
    assert taken == {"threshold": 0.42, "merge_threshold": 0.77, "outfit_threshold": 0.55, "outfit_link_threshold": 0.55}
    assert MatcherConfig.model_fields["threshold"].default == 0.55
    cfg, taken = thresholds_from_model(MatcherConfig(), spec, True, with_thresholds(SPEC, {**SUGGESTED, "threshold": 0.6}))
    assert (cfg.outfit_threshold, cfg.outfit_link_threshold, cfg.threshold) == (0.6, 0.6, 0.42)
    assert cfg.outfit_merge_threshold is None  # merging on the outfit descriptor is opt-in
    cfg, taken = thresholds_from_model(MatcherConfig.model_validate({"outfit_link_threshold": 0.7}), spec, True, SPEC)
    assert (cfg.outfit_threshold, cfg.outfit_link_threshold) == (0.55, 0.7) and "outfit_link_threshold" not in taken
    cfg, taken = thresholds_from_model(MatcherConfig.model_validate({"outfit_merge_threshold": 0.8}), spec, True, SPEC)
    assert cfg.outfit_merge_threshold == 0.8 and "outfit_merge_threshold" not in taken  # the config's, kept
    cfg, _ = thresholds_from_model(MatcherConfig(), spec)  # no outfit model: no outfit links or merges
    assert cfg.outfit_link_threshold is None and cfg.outfit_threshold == 0.61 and cfg.outfit_merge_threshold is None


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    torch.manual_seed(0)
    model = build_model(ArchConfig(backbone="resnet_lite", lite_widths=(16, 32, 64, 128))).eval()
    path = tmp_path_factory.mktemp("ckpt") / "lite.safetensors"
    save_checkpoint(path, model, SPEC, inference_only=True)
    return path


def test_thresholds_travel_from_checkpoint_to_onnx_and_openvino(checkpoint, shared_video, tmp_path):
    before = create_embedder(checkpoint, "torch").embed([np.full((90, 40, 3), 120, np.uint8)]).identity
    write_thresholds(checkpoint, SUGGESTED)
    embedder = create_embedder(checkpoint, "torch")
    assert embedder.spec.extra["matcher"] == SUGGESTED
    # The weights are untouched.
    np.testing.assert_allclose(embedder.embed([np.full((90, 40, 3), 120, np.uint8)]).identity, before, atol=1e-6)
    for fmt, name in (("onnx", "m.onnx"), ("openvino", "m.xml")):
        report = run_export(ExportOptions(checkpoint, fmt, out=tmp_path / name, parity_video=shared_video["pets"],
                                          parity_gt=shared_video["pets_gt"], parity_crops=8, threads=1),
                            log=lambda *_: None)
        assert report.passed
        assert create_embedder(tmp_path / name, "auto" if fmt == "openvino" else "onnxruntime").spec.extra["matcher"] == SUGGESTED
    # An ONNX file can be re-calibrated in place; an IR cannot (export it again instead).
    write_thresholds(tmp_path / "m.onnx", {**SUGGESTED, "threshold": 0.5})
    assert create_embedder(tmp_path / "m.onnx", "onnxruntime").spec.extra["matcher"]["threshold"] == 0.5
    with pytest.raises(ValueError, match="export"):
        write_thresholds(tmp_path / "m.xml", SUGGESTED)


def test_calibrate_cli_says_what_is_wrong(checkpoint, tmp_path):
    r = subprocess.run([sys.executable, "-m", "reid", "calibrate", "--weights", str(checkpoint), "--root",
                        str(tmp_path / "nowhere")], capture_output=True, text=True)
    assert r.returncode == 2 and "nowhere" in r.stderr and "Traceback" not in r.stderr
    r = subprocess.run([sys.executable, "-m", "reid", "calibrate", "--weights", str(tmp_path / "none.safetensors"),
                        "--root", str(tmp_path)], capture_output=True, text=True)
    assert r.returncode == 2 and "none.safetensors" in r.stderr and "Traceback" not in r.stderr


@pytest.mark.slow
def test_a_run_takes_the_model_files_thresholds_unless_its_config_sets_them(checkpoint, shared_video, tmp_path):
    write_thresholds(checkpoint, SUGGESTED)

    def run(matcher: str, reid: str = "") -> str:
        name = f"{len(matcher)}-{len(reid)}"
        cfg = tmp_path / f"cams{name}.yaml"
        cfg.write_text(f"cameras:\n  - {{id: pets, source: {shared_video['pets']}}}\n"
                       f"reid: {{model: {checkpoint}{reid}}}\noutput: {{video: false}}\n{matcher}")
        proc = subprocess.run([sys.executable, "-m", "pipeline", "run", str(cfg), "--max-frames", "5",
                               "--output-dir", str(tmp_path / f"out{name}"), "--no-progress"],
                              capture_output=True, text=True, timeout=300)
        assert proc.returncode == 0, proc.stderr[-2000:]
        return proc.stderr

    log = run("")
    assert "matcher thresholds from the model file's calibration (test)" in log
    assert "threshold 0.420, outfit_threshold 0.610, merge_threshold 0.770" in log
    assert "flip-summed" not in log  # calibrated as the run embeds
    # Thresholds measured on unmirrored features, a run that flip-sums: said, with the fix.
    log = run("", ", flip_sum: true")
    assert "calibrated without flip-summed features but reid.flip_sum is true" in log
    assert "again with --flip-sum" in log
    assert "centred" not in log  # neither calibrated nor run with centring
    # Thresholds measured on uncentred features, a run that centres per camera: said, with the fix.
    log = run("", ", centring: camera")
    assert "calibrated on features centred 'none' but reid.centring is 'camera'" in log
    assert "--centre camera" in log
    log = run("matcher: {threshold: 0.3}\n")
    assert "outfit_threshold 0.610, merge_threshold 0.770" in log and "threshold 0.420" not in log


def test_calibrating_flip_summed_features_says_so_in_the_thresholds(checkpoint, tmp_path):
    from reid.calibrate import calibrate
    from tests.reid_fixtures import make_synthcc

    root = make_synthcc(tmp_path / "synthcc", n_train=2, n_test=4, size=(64, 32))
    plain = calibrate(checkpoint, "synthcc", root, backend="torch", threads=1, gallery_people=2)
    mirrored = calibrate(checkpoint, "synthcc", root, backend="torch", threads=1, gallery_people=2, flip_sum=True)
    assert "flip_sum" not in plain.suggested()  # files calibrated before the setting existed read the same
    assert mirrored.suggested()["flip_sum"] is True
    # The features were embedded the other way, not just labelled: the cosine distributions differ.
    assert plain.identity[2].quantiles != mirrored.identity[2].quantiles


def test_calibrating_features_centred_per_camera_says_so_and_measures_them_centred(checkpoint, tmp_path):
    from reid.calibrate import calibrate
    from tests.reid_fixtures import make_synthcc

    root = make_synthcc(tmp_path / "synthcc", n_train=2, n_test=4, size=(64, 32))
    plain = calibrate(checkpoint, "synthcc", root, backend="torch", threads=1, gallery_people=2)
    centred = calibrate(checkpoint, "synthcc", root, backend="torch", threads=1, gallery_people=2, centring="camera")
    assert "centring" not in plain.suggested()  # files calibrated before the setting existed read the same
    assert centred.suggested()["centring"] == "camera"
    # Centred features of different people no longer share the cameras' common part: their cosines fall.
    assert centred.identity[2].quantiles["p50"] < plain.identity[2].quantiles["p50"]
    with pytest.raises(ValueError, match="centring"):
        calibrate(checkpoint, "synthcc", root, backend="torch", threads=1, gallery_people=2, centring="scene")
