"""`model.backbone: onnx`: a pretrained ONNX ReID model (Intel's 0267, real file from ../shared/models) cut at a
feature map becomes a trainable trunk; it matches onnxruntime, rebuilds from a checkpoint without the file,
fails clearly on bad settings, and trains + exports through the real CLI on the recipe; `reid eval` scores the
exported ONNX file as it scores the checkpoint."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
import torch

from reid.checkpoint import load_checkpoint, save_checkpoint
from reid.export import pets_crops
from reid.inference.base import PreprocessSpec, preprocess_crops
from reid.models import ArchConfig, build_model
from reid.models.onnx_trunk import cut_graph
from tests.reid_fixtures import make_synthcc

REPO = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.usefixtures("restore_torch_globals")

# 0267 takes RGB 0-255 (it normalises each image itself).
SPEC = PreprocessSpec(height=128, width=64, mean=(0.0, 0.0, 0.0), std=(1 / 255, 1 / 255, 1 / 255))


def _arch(model_file: Path, **over) -> ArchConfig:
    fields = {"backbone": "onnx", "pretrained": str(model_file), "onnx_feature": "1150", "pooling": "maxavg",
              "num_classes": 5}
    return ArchConfig(**{**fields, **over})


@pytest.fixture(scope="module")
def crops(shared_video):
    return pets_crops(shared_video["pets"], shared_video["pets_gt"], max_crops=24)


def test_trunk_matches_onnxruntime_on_real_crops(shared_models, crops):
    model = build_model(_arch(shared_models["reid"])).eval()
    x = preprocess_crops(crops, SPEC.__class__(**{**SPEC.__dict__, "height": 256, "width": 128}))  # the file's size
    cut = cut_graph(shared_models["reid"], "1150")
    want = ort.InferenceSession(cut.SerializeToString(), providers=["CPUExecutionProvider"]).run(
        None, {cut.graph.input[0].name: x})[0]
    with torch.no_grad():
        got = model.backbone(torch.from_numpy(x)).numpy()
    assert got.shape == want.shape == (len(crops), 256, 16, 8)
    assert np.abs(got - want).max() < 1e-3 * np.abs(want).max()
    assert model.backbone.out_dim == 256 and model.feature_dim == 512


def test_checkpoint_rebuilds_without_the_original_file(shared_models, crops, tmp_path):
    model = build_model(_arch(shared_models["reid"])).eval()
    with torch.no_grad():  # move the weights off the file's, so a rebuild from the file would differ
        for p in model.backbone.parameters():
            p.mul_(1.01)
    x = torch.from_numpy(preprocess_crops(crops[:6], SPEC))
    with torch.no_grad():
        want = model(x)
    path = tmp_path / "m.safetensors"
    save_checkpoint(path, model, SPEC, inference_only=True)
    loaded, spec = load_checkpoint(path)
    assert loaded.arch.pretrained is None and len(loaded.arch.onnx_graph) < 100_000  # structure, not weights
    with torch.no_grad():
        assert torch.allclose(loaded(x), want, atol=1e-5)
    assert spec.std == SPEC.std


def test_bad_settings_fail_clearly(shared_models, tmp_path):
    with pytest.raises(ValueError, match="is not a tensor of"):
        build_model(_arch(shared_models["reid"], onnx_feature="no_such_tensor"))
    with pytest.raises(ValueError, match="feature map"):
        build_model(_arch(shared_models["reid"], onnx_feature=None))  # the file's output is a vector
    with pytest.raises(FileNotFoundError, match="not found"):
        build_model(_arch(tmp_path / "missing.onnx"))
    with pytest.raises(ValueError, match="SHA-256"):
        build_model(_arch(shared_models["reid"], pretrained_sha256="0" * 64))
    with pytest.raises(ValueError, match="bsga"):
        build_model(_arch(shared_models["reid"], bsga=True))


def test_cli_trains_the_recipe_and_exports_with_parity(shared_models, shared_video, tmp_path):
    from reid.__main__ import main

    root = make_synthcc(tmp_path / "data", n_train=6, n_test=4, size=(64, 32))
    out = tmp_path / "run"
    cmd = [sys.executable, "-m", "reid", "train", str(REPO / "configs/reid/synthcc_cpu_cre_omz0267.yaml"),
           "--root", str(root), "--output-dir", str(out), "--epochs", "1", "--threads", "1", "--no-progress",
           "--set", "data.height=64", "--set", "data.width=32", "--set", "data.batch_size=8",
           "--set", f"model.pretrained={shared_models['reid']}"]
    run = subprocess.run(cmd, check=False, cwd=REPO, capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr[-2000:]
    hist = json.loads((out / "history.jsonl").read_text().splitlines()[0])["train"]
    assert hist["xtri_loss"] > 0 and hist["cre_share"] > 0
    weights = out / "model_last.safetensors"
    trained, _ = load_checkpoint(weights)
    start = build_model(_arch(shared_models["reid"]))
    moved = [not torch.equal(a, b) for a, b in zip(trained.backbone.parameters(), start.backbone.parameters())]
    assert sum(moved) > len(moved) // 2  # the pretrained trunk was fine-tuned, not frozen
    assert main(["export", "--weights", str(weights), "--format", "onnx", "--threads", "1",
                 "--parity-video", str(shared_video["pets"]), "--parity-gt", str(shared_video["pets_gt"])]) == 0
    report = json.loads((out / "model_last.onnx.export.json").read_text())
    assert report["passed"] and report["parity"][0]["cosine_min"] >= 0.999
    # `reid eval` scores the checkpoint and its ONNX export (run by the pipeline's embedder) alike.
    scores = {}
    for name in ("model_last.safetensors", "model_last.onnx"):
        js = tmp_path / f"{name}.json"
        assert main(["eval", "--weights", str(out / name), "--dataset", "synthcc", "--root", str(root),
                     "--threads", "1", "--no-progress", "--json", str(js)]) == 0
        scores[name] = json.loads(js.read_text())
    a, b = scores["model_last.safetensors"], scores["model_last.onnx"]
    assert set(a) == set(b) and "test/cloth_changing" in a
    for key in a:
        assert abs(a[key]["mAP"] - b[key]["mAP"]) < 1.0, (key, a[key], b[key])
    # Per image: the embedder path's flip-summed features are the checkpoint's.
    from reid.datasets import load_dataset
    from reid.inference.factory import create_embedder
    from reid.train import extract_features

    records = load_dataset("synthcc", str(root)).eval_splits[0].gallery
    embedder = create_embedder(out / "model_last.onnx", backend="onnxruntime", threads=1, device="cpu")
    cpu = torch.device("cpu")
    want = extract_features(trained, records, embedder.spec, cpu, batch_size=16)
    got = extract_features(embedder, records, embedder.spec, cpu, batch_size=16)
    assert got.shape == want.shape and float((got * want).sum(axis=1).min()) >= 0.999
    broken = tmp_path / "broken.onnx"
    broken.write_bytes(b"not an onnx file")
    assert main(["eval", "--weights", str(broken), "--dataset", "synthcc", "--root", str(root)]) == 2
