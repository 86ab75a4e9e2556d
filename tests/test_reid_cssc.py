"""CSSC: SMR modules (shapes, pooling orders, refinement at test time), branch duplication, the pre-BN
retrieval feature, clear recipe errors, and a tiny `python -m reid train` + `export` with its parity check."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

from reid.config import RecipeError, load_recipe
from reid.methods.cssc import SMRHead
from reid.models import ArchConfig, build_model
from reid.models.cssc import CSSCTrunk, global_pool
from reid.train import Trainer
from tests.reid_fixtures import make_synthcc

REPO = Path(__file__).resolve().parents[1]

# Trainer switches on deterministic algorithms and sets the thread count; undo for other tests.
pytestmark = pytest.mark.usefixtures("restore_torch_globals")

ARCH = {"backbone": "resnet_lite", "lite_widths": (8, 8, 16, 16), "lite_blocks": (1, 1, 1, 3), "trunk": "cssc",
        "pooling": "max", "feature": "pooled", "neck_bias": False, "id_bias": False}


@pytest.fixture(scope="module")
def synth_root(tmp_path_factory):
    return make_synthcc(tmp_path_factory.mktemp("cssc"), n_train=6, n_test=4, size=(64, 32))


def _recipe(root: Path, out: Path, **over) -> Path:
    raw = {
        "name": "cssc-test", "seed": 2, "device": "cpu", "threads": 1, "output_dir": str(out),
        "data": {"dataset": "synthcc", "root": str(root), "height": 64, "width": 32, "batch_size": 8,
                 "num_instances": 2, "num_workers": 0, "cache_images": True},
        "model": {k: list(v) if isinstance(v, tuple) else v for k, v in ARCH.items()},
        "loss": {"method": "cssc", "triplet_weight": 1.0, "triplet_distance": "euclidean", "triplet_start_epoch": 0,
                 "cssc": {"stripes": 4, "local_dim": 8}},
        "optim": {"epochs": 1, "lr": 1e-3, "milestones": [5]},
        "eval": {"every": 1, "batch_size": 32},
    }
    for k, v in over.items():
        node = raw
        *parents, leaf = k.split(".")
        for p in parents:
            node = node[p]
        node[leaf] = v
    path = out.with_suffix(".yaml")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(raw))
    return path


def test_smr_taps_shapes_and_both_pooling_orders():
    torch.manual_seed(0)
    model = build_model(ArchConfig(**ARCH)).train()
    trunk = model.backbone
    assert isinstance(trunk, CSSCTrunk) and len(trunk.branch1) == len(trunk.branch2) == 2
    # branch 1: SMR-C then SMR-S; branch 2: SMR-S then SMR-C (opposite orders)
    assert trunk.layout == [("smr11", "avg"), ("smr12", "max"), ("smr21", "max"), ("smr22", "avg")]
    x = torch.randn(4, 3, 64, 32)
    out = model.forward_train(x)
    assert out.fmap.shape == (4, 16, 4, 2) and out.pooled.shape == out.neck.shape == (4, 16)
    assert [t.name for t in out.taps] == ["smr11", "smr12", "smr21", "smr22"]
    for tap in out.taps:
        assert tap.fmap.shape == (4, 16, 4, 2) and tap.g.shape == (4, 16)
        assert torch.equal(tap.g, global_pool(tap.fmap, tap.pool))  # the raw pooled input, not a BN of it
    smr = trunk.smr1[0]
    refined, g = smr(out.taps[0].fmap)
    a = smr.attention(g)
    assert ((a > 0) & (a < 1)).all() and torch.allclose(refined, out.taps[0].fmap * a[:, :, None, None])
    head = SMRHead(16, stripes=4, local_dim=8, num_classes=5)
    locals_ = head.local_features(out.taps[1].fmap, "max")
    assert len(locals_) == 4 and all(v.shape == (4, 8) for v in locals_)
    assert head(out.taps[1].fmap, out.taps[1].g, "max").shape == (4, 5)
    assert head.classifier.in_features == 16 + 4 * 8 and head.classifier.bias is None
    assert not head.bn.bias.requires_grad
    # stripes of H // P rows from the top: with 5 rows and 2 stripes, the last row belongs to none
    fmap = torch.randn(2, 16, 5, 2)
    two = SMRHead(16, stripes=2, local_dim=8, num_classes=5).eval()
    with torch.no_grad():
        got = two.local_features(fmap, "max")
        assert torch.allclose(got[1], two.local[1](fmap[:, :, 2:4].amax(dim=(2, 3))))
    # max- vs average-pooled stripes differ: each SMR pools its stripes with its own kind
    assert not torch.allclose(head.local_features(out.taps[1].fmap, "avg")[0], locals_[0])


def test_retrieval_feature_is_pre_bn_max_pool_and_refinement_runs_at_test_time():
    torch.manual_seed(0)
    model = build_model(ArchConfig(**ARCH)).eval()
    x = torch.randn(3, 3, 64, 32)
    with torch.no_grad():
        f = model(x)
        assert f.shape == (3, model.feature_dim) == (3, 16)
        assert torch.equal(f, model.backbone(x).amax(dim=(2, 3)))
        model.backbone.smr2[1].fc2.bias.add_(3.0)  # a different attention must change the test-time feature
        assert not torch.allclose(model(x), f)
    nosmr = build_model(ArchConfig(**{**ARCH, "smr": False}))
    assert nosmr.backbone.smr1 is None and nosmr.forward_train(x).taps == []


def test_centred_feature_is_pooled_minus_the_neck_running_mean_and_loads_from_any_file(tmp_path):
    """`feature: centred` (what `reid eval/export --feature centred` select) shifts CSSC's post-ReLU vector by the
    running mean training kept, which spreads people's cosines apart without changing any Euclidean distance."""
    from reid.checkpoint import save_checkpoint
    from reid.inference.base import PreprocessSpec
    from reid.models import load_checkpoint

    torch.manual_seed(0)
    model = build_model(ArchConfig(**ARCH))
    x = torch.randn(6, 3, 64, 32)
    model.train()
    with torch.no_grad():
        for _ in range(30):  # the running mean follows training forwards (momentum 0.1)
            model.forward_train(x)
    model.eval()
    assert model.bn.running_mean.abs().sum() > 0
    with torch.no_grad():
        pooled = model(x)
        centred = build_model(ArchConfig(**{**ARCH, "feature": "centred"}))
        centred.load_state_dict(model.state_dict())
        c = centred.eval()(x)
    assert torch.allclose(c, pooled - model.bn.running_mean)
    assert torch.allclose(torch.cdist(c, c), torch.cdist(pooled, pooled), atol=1e-4)
    unit = lambda f: torch.nn.functional.normalize(f, dim=1)  # noqa: E731
    off = ~torch.eye(6, dtype=torch.bool)
    assert (unit(c) @ unit(c).T)[off].mean() < (unit(pooled) @ unit(pooled).T)[off].mean() - 0.05
    path = tmp_path / "m.safetensors"
    save_checkpoint(path, model, PreprocessSpec(height=64, width=32, method="cssc"), inference_only=True)
    loaded, _ = load_checkpoint(path, "cpu", "centred")
    assert loaded.arch.feature == "centred" and torch.allclose(loaded(x), c, atol=1e-6)
    assert load_checkpoint(path)[0].arch.feature == "pooled"


def test_branches_start_equal_and_diverge_after_training(synth_root, tmp_path):
    t = Trainer(load_recipe(_recipe(synth_root, tmp_path / "d")), log=lambda *_: None, progress=False)
    b1, b2 = t.model.backbone.branch1.state_dict(), t.model.backbone.branch2.state_dict()
    assert b1.keys() == b2.keys() and all(torch.equal(b1[k], b2[k]) for k in b1)
    assert all(p.data_ptr() != q.data_ptr() for p, q in
               zip(t.model.backbone.branch1.parameters(), t.model.backbone.branch2.parameters()))
    stats = t.train_epoch(0)
    b1, b2 = t.model.backbone.branch1.state_dict(), t.model.backbone.branch2.state_dict()
    assert any(not torch.equal(b1[k], b2[k]) for k in b1 if b1[k].is_floating_point())
    # five identity and five triplet terms, each logged
    names = ["id", "tri"] + [f"smr{b}{i}_{k}" for b in (1, 2) for i in (1, 2) for k in ("id", "tri")]
    assert all(stats[f"{n}_loss"] > 0 for n in names)


def test_triplets_wait_for_their_start_epoch(synth_root, tmp_path):
    t = Trainer(load_recipe(_recipe(synth_root, tmp_path / "s", **{"loss.triplet_start_epoch": 1})),
                log=lambda *_: None, progress=False)
    stats = t.train_epoch(0)
    assert stats["tri_loss"] == 0 and stats["smr11_tri_loss"] == 0 and stats["smr11_id_loss"] > 0


def test_bad_cssc_recipes_say_what_to_fix(synth_root, tmp_path):
    with pytest.raises(RecipeError, match="lite_blocks"):  # resnet_lite's default last stage has 2 blocks
        Trainer(load_recipe(_recipe(synth_root, tmp_path / "a", **{"model.lite_blocks": [1, 1, 1, 2]})),
                log=lambda *_: None, progress=False)
    with pytest.raises(RecipeError, match="model.trunk: cssc"):
        Trainer(load_recipe(_recipe(synth_root, tmp_path / "b", **{"model.trunk": "resnet"})),
                log=lambda *_: None, progress=False)
    with pytest.raises(RecipeError, match="model.feature: pooled"):
        Trainer(load_recipe(_recipe(synth_root, tmp_path / "c", **{"model.feature": "neck"})),
                log=lambda *_: None, progress=False)
    t = Trainer(load_recipe(_recipe(synth_root, tmp_path / "e", **{"loss.cssc.stripes": 8})),
                log=lambda *_: None, progress=False)
    with pytest.raises(RecipeError, match="loss.cssc.stripes"):  # 4 rows at 64x32
        t.train_epoch(0)


def test_resume_restores_the_smr_heads(synth_root, tmp_path):
    def train(out, epochs, resume=None):
        t = Trainer(load_recipe(_recipe(synth_root, out, **{"optim.epochs": epochs})), log=lambda *_: None,
                    progress=False)
        if resume:
            t.resume(resume)
        return t, t.run()

    _, straight = train(tmp_path / "a", 2)
    train(tmp_path / "b", 1)
    t, resumed = train(tmp_path / "b", 2, resume=tmp_path / "b" / "last.safetensors")
    assert resumed["last"] == straight["last"]
    assert {k.split(".")[0] for k in t.method.heads.state_dict()} == {"smr11", "smr12", "smr21", "smr22"}


def test_benchmark_rows_cssc_and_cssc_nosmr(synth_root, tmp_path):
    import importlib.util

    from reid.__main__ import _parse_set

    spec = importlib.util.spec_from_file_location("reid_synthcc", REPO / "benchmarks" / "reid_synthcc.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    for label in ("cssc", "cssc_nosmr"):
        recipe, sets, knobs = bench.ROWS[label]
        r = load_recipe(REPO / "configs" / "reid" / f"{recipe}.yaml", _parse_set(sets))
        assert r.loss.method == "cssc" and r.model.smr == (label == "cssc") and not knobs
    # the ablation trains: no SMR heads, only the final identity and triplet terms
    t = Trainer(load_recipe(_recipe(synth_root, tmp_path / "n", **{"model.smr": False})), log=lambda *_: None,
                progress=False)
    stats = t.train_epoch(0)
    assert len(t.method.heads) == 0 and set(stats) == {"loss", "id_loss", "tri_loss", "id_acc"}


@pytest.mark.parametrize("name", ["prcc_cssc_r50", "ltcc_cssc_r50", "celebreid_cssc_r50", "synthcc_cpu_cssc"])
def test_cssc_recipes_parse(name):
    r = load_recipe(REPO / "configs" / "reid" / f"{name}.yaml")
    assert r.loss.method == "cssc" and r.model.trunk == "cssc" and r.model.feature == "pooled"
    assert r.loss.triplet_distance == "euclidean"


def test_cli_train_then_export_onnx_passes_parity(synth_root, tmp_path, shared_video):
    out = tmp_path / "run"
    cmd = [sys.executable, "-m", "reid", "train", str(REPO / "configs/reid/synthcc_cpu_cssc.yaml"),
           "--root", str(synth_root), "--output-dir", str(out), "--epochs", "1", "--threads", "1", "--no-progress",
           "--set", "data.height=64", "--set", "data.width=32", "--set", "data.batch_size=8",
           "--set", "data.num_instances=2", "--set", "model.lite_widths=[8,8,16,16]",
           "--set", "loss.cssc.stripes=4", "--set", "loss.cssc.local_dim=8", "--set", "loss.triplet_start_epoch=0",
           "--set", "optim.warmup_epochs=0"]
    run = subprocess.run(cmd, check=False, cwd=REPO, capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr[-2000:]
    hist = json.loads((out / "history.jsonl").read_text().splitlines()[0])
    assert hist["train"]["smr22_tri_loss"] > 0
    export = [sys.executable, "-m", "reid", "export", "--weights", str(out / "model_last.safetensors"),
              "--format", "onnx", "--threads", "1", "--parity-video", str(shared_video["pets"]),
              "--parity-gt", str(shared_video["pets_gt"])]
    exp = subprocess.run(export, check=False, cwd=REPO, capture_output=True, text=True, timeout=600)
    assert exp.returncode == 0, exp.stdout[-2000:] + exp.stderr[-2000:]
    report = json.loads((out / "model_last.onnx.export.json").read_text())
    assert report["passed"] and report["parity"][0]["cosine_min"] >= 0.999
    assert report["spec"]["identity_dim"] == 16
    assert report["spec"]["extra"]["retrieval_feature"] == "pooled"
    # the same weights exported with the centred feature: parity against the centred PyTorch model, and the
    # graph's output is the pooled one minus the neck's running mean
    centred_out = out / "centred.onnx"
    exp = subprocess.run(export + ["--feature", "centred", "--out", str(centred_out)], check=False, cwd=REPO,
                         capture_output=True, text=True, timeout=600)
    assert exp.returncode == 0, exp.stdout[-2000:] + exp.stderr[-2000:]
    report = json.loads((out / "centred.onnx.export.json").read_text())
    assert report["passed"] and report["spec"]["extra"]["retrieval_feature"] == "centred"
    import onnxruntime as ort
    from safetensors import safe_open

    with safe_open(str(out / "model_last.safetensors"), "pt") as f:
        mean = f.get_tensor("model.bn.running_mean").numpy()
    x = torch.randn(3, 3, 64, 32).numpy()
    raw = ort.InferenceSession(str(out / "model_last.onnx")).run(None, {"images": x})[0]
    cen = ort.InferenceSession(str(centred_out)).run(None, {"images": x})[0]
    assert abs(mean).sum() > 0 and abs(cen - (raw - mean)).max() < 1e-4
