"""Training framework: reproducibility, resume, checkpoints, CLI, CAL update order, model parts."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from reid.checkpoint import load_checkpoint
from reid.config import RecipeError, load_recipe
from reid.inference.base import PreprocessSpec, preprocess_crops
from reid.models import ArchConfig, build_model
from reid.train import Trainer
from reid.transforms import TrainImages, build_train_transform, read_bgr
from tests.reid_fixtures import make_synthcc

REPO = Path(__file__).resolve().parents[1]


# Trainer switches on deterministic algorithms and sets the thread count; undo for other tests.
pytestmark = pytest.mark.usefixtures("restore_torch_globals")


@pytest.fixture(scope="module")
def synth_root(tmp_path_factory):
    return make_synthcc(tmp_path_factory.mktemp("synthcc"), n_train=6, n_test=4, size=(32, 16))


def _recipe(root, out, epochs=2, **over):
    raw = {
        "name": "test", "seed": 3, "device": "cpu", "threads": 1, "output_dir": str(out),
        "data": {"dataset": "synthcc", "root": str(root), "height": 32, "width": 16, "batch_size": 8,
                 "num_instances": 2, "num_workers": 0, "cache_images": True},
        "model": {"backbone": "resnet_lite", "lite_widths": [8, 8, 16, 16]},
        "loss": {"method": "cal", "triplet_weight": 1.0, "start_epoch_cal": 1},
        "optim": {"epochs": epochs, "lr": 1e-3, "milestones": [1]},
        "eval": {"every": 1, "batch_size": 32},
    }
    for k, v in over.items():
        node = raw
        *parents, leaf = k.split(".")
        for p in parents:
            node = node[p]
        node[leaf] = v
    path = Path(out).with_suffix(".yaml")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(raw))
    return path


def _train(path, resume=None):
    t = Trainer(load_recipe(path), log=lambda *_: None, progress=False)
    if resume:
        t.resume(resume)
    return t, t.run()


def test_same_seed_gives_identical_metrics_and_resume_matches(synth_root, tmp_path):
    _, a = _train(_recipe(synth_root, tmp_path / "a", epochs=3))
    _, b = _train(_recipe(synth_root, tmp_path / "b", epochs=3))
    assert a["last"] == b["last"]
    ha = [json.loads(x)["train"] for x in (tmp_path / "a" / "history.jsonl").read_text().splitlines()]
    hb = [json.loads(x)["train"] for x in (tmp_path / "b" / "history.jsonl").read_text().splitlines()]
    assert ha == hb
    # 2 epochs, then resume to 3: same result as 3 straight epochs
    _train(_recipe(synth_root, tmp_path / "c", epochs=2))
    _, c = _train(_recipe(synth_root, tmp_path / "c", epochs=3), resume=tmp_path / "c" / "last.safetensors")
    assert c["last"] == a["last"]
    # a different seed gives a different run
    _, d = _train(_recipe(synth_root, tmp_path / "d", epochs=3, seed=4))
    assert d["last"] != a["last"] or ha != [json.loads(x)["train"] for x in
                                            (tmp_path / "d" / "history.jsonl").read_text().splitlines()]


def test_checkpoint_rebuilds_model_from_file_alone(synth_root, tmp_path):
    trainer, summary = _train(_recipe(synth_root, tmp_path / "r", epochs=1))
    model, spec = load_checkpoint(tmp_path / "r" / "model_last.safetensors")
    assert isinstance(spec, PreprocessSpec) and (spec.height, spec.width) == (32, 16)
    assert spec.identity_dim == model.feature_dim and spec.method == "cal" and spec.train_dataset == "synthcc"
    assert model.id_head is None and not hasattr(model, "clothes_head")  # heads are training-only
    x = torch.randn(3, 3, 32, 16)
    trainer.model.eval()
    with torch.no_grad():
        assert torch.allclose(model(x), trainer.model(x))
    assert (tmp_path / "r" / "model_best.safetensors").is_file()
    assert summary["last_epoch"] == 1 and summary["best_epoch"] == 1


def test_cal_clothes_head_updates_only_from_start_epoch(synth_root, tmp_path):
    t = Trainer(load_recipe(_recipe(synth_root, tmp_path / "o", epochs=2)), log=lambda *_: None, progress=False)
    head = t.method.heads["clothes"]
    w0 = head.weight.detach().clone()
    assert all(p is not head.weight for g in t.opt.param_groups for p in g["params"])
    stats = t.train_epoch(0)  # before start_epoch_cal: no clothes head step, no L_CA
    assert torch.equal(head.weight, w0) and stats["adv_loss"] == 0
    stats = t.train_epoch(1)
    assert not torch.equal(head.weight, w0) and stats["adv_loss"] > 0


def test_baseline_has_no_clothes_head(synth_root, tmp_path):
    t = Trainer(load_recipe(_recipe(synth_root, tmp_path / "b", **{"loss.method": "baseline"})),
                log=lambda *_: None, progress=False)
    assert len(t.method.heads) == 0 and "clothes" not in t.optimizers


def test_train_transform_without_augmentation_equals_runtime_preprocessing(synth_root):
    spec = PreprocessSpec(height=32, width=16)
    tf = build_train_transform(spec, random_crop_p=0, hflip_p=0, erasing_p=0)
    from reid.datasets import load_dataset

    recs = load_dataset("synthcc", synth_root).train[:4]
    ds = TrainImages(recs, spec, tf)
    ref = preprocess_crops([read_bgr(r.path) for r in recs], spec)
    got = np.stack([ds[i][0].numpy() for i in range(4)])
    np.testing.assert_allclose(got, ref, atol=1e-5)


def test_last_stride_one_and_pooling_dims():
    m = build_model(ArchConfig(backbone="resnet18", last_stride=1, pooling="maxavg"))
    assert m.backbone(torch.zeros(1, 3, 64, 32)).shape[-2:] == (4, 2)
    m2 = build_model(ArchConfig(backbone="resnet18", last_stride=2, pooling="gem"))
    assert m2.backbone(torch.zeros(1, 3, 64, 32)).shape[-2:] == (2, 1)
    assert m.feature_dim == 1024 and m2.feature_dim == 512


def test_pretrained_weights_load_from_local_torchvision_file(tmp_path):
    from torchvision.models import resnet18

    ref = resnet18(weights=None)
    torch.save(ref.state_dict(), tmp_path / "r18.pth")
    m = build_model(ArchConfig(backbone="resnet18", pretrained=str(tmp_path / "r18.pth")))
    assert torch.equal(m.backbone.layer3[0].conv1.weight, ref.layer3[0].conv1.weight)
    with pytest.raises(FileNotFoundError, match="not found"):
        build_model(ArchConfig(backbone="resnet18", pretrained=str(tmp_path / "missing.pth")))


def test_recipe_unknown_key_is_an_error_with_its_path(tmp_path):
    p = tmp_path / "bad.yaml"
    p.write_text(yaml.safe_dump({"name": "x", "data": {"dataset": "synthcc", "root": ".", "hieght": 3}}))
    with pytest.raises(RecipeError, match=r"data\.hieght"):
        load_recipe(p)


def test_cli_eval_and_bad_recipe_exit_codes(synth_root, tmp_path):
    _train(_recipe(synth_root, tmp_path / "e", epochs=1))
    out = subprocess.run([sys.executable, "-m", "reid", "eval", "--weights", str(tmp_path / "e" / "model_last.safetensors"),
                          "--dataset", "synthcc", "--root", str(synth_root), "--threads", "1", "--no-progress",
                          "--json", str(tmp_path / "e.json")], cwd=REPO, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert "test/cloth_changing" in out.stdout
    res = json.loads((tmp_path / "e.json").read_text())
    assert set(res) == {"test/general", "test/cloth_changing", "test/same_clothes"}
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: x\nfoo: 1\ndata: {dataset: synthcc, root: .}\n")
    out = subprocess.run([sys.executable, "-m", "reid", "train", str(bad)], cwd=REPO, capture_output=True, text=True)
    assert out.returncode == 2 and "foo" in out.stderr


@pytest.mark.parametrize("recipe", sorted((REPO / "configs" / "reid").glob("*.yaml")), ids=lambda p: p.name)
def test_shipped_recipes_validate(recipe):
    r = load_recipe(recipe)
    assert r.data.batch_size % r.data.num_instances == 0


def test_fire2_neck_and_classifier_options_freeze_the_bias(synth_root, tmp_path):
    """FIRe²'s code: BN neck bias frozen at 0, bias-free identity classifier (model.neck_bias / model.id_bias)."""
    path = _recipe(synth_root, tmp_path / "nb", epochs=1, **{"loss.method": "baseline"})
    raw = yaml.safe_load(path.read_text())
    raw["model"].update(neck_bias=False, id_bias=False)
    path.write_text(yaml.safe_dump(raw))
    t, _ = _train(path)
    assert t.model.id_head.bias is None
    assert not t.model.bn.bias.requires_grad and torch.count_nonzero(t.model.bn.bias) == 0
    assert all(p is not t.model.bn.bias for g in t.opt.param_groups for p in g["params"])
    # ... while the weights did train, and the default (CAL) keeps a trained bias.
    t2, _ = _train(_recipe(synth_root, tmp_path / "b2", epochs=1, **{"loss.method": "baseline"}))
    assert t2.model.id_head.bias is not None and torch.count_nonzero(t2.model.bn.bias) > 0


def test_pad_and_crop_augmentation_shifts_with_zero_border():
    """augment.crop_mode: pad (FIRe², CSSC): pad 10 black pixels, crop back at a random offset, always."""
    spec = PreprocessSpec(height=32, width=16, mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0))
    tf = build_train_transform(spec, hflip_p=0, erasing_p=0, crop_mode="pad", crop_pad=4)
    img = torch.full((3, 32, 16), 200, dtype=torch.uint8)
    torch.manual_seed(0)
    outs = [tf(img) for _ in range(40)]
    zero_rows = [int((o[0] == 0).all(dim=1).sum()) + int((o[0] == 0).all(dim=0).sum()) for o in outs]
    assert all(o.shape == (3, 32, 16) for o in outs)
    assert sum(z > 0 for z in zero_rows) >= 30  # almost every draw shows some of the black border
    assert max(zero_rows) <= 8  # never more than the padding on each axis
    assert all(((o == 0) | torch.isclose(o, torch.tensor(200 * spec.scale))).all() for o in outs)  # no resampling
    with pytest.raises(ValueError, match="crop_mode"):
        build_train_transform(spec, crop_mode="zoom")


def test_extra_training_sets_add_their_people_after_the_main_ones(synth_root, tmp_path):
    """data.extra_train: another set's training people join as people of their own (pids and outfits after
    the main set's, pid2clothes block-diagonal), the CAL head covers every outfit, evaluation stays on the
    main set's test split, and a training step runs over both."""
    from reid.datasets import load_dataset

    extra_root = make_synthcc(tmp_path / "extra", n_train=3, n_test=2, size=(32, 16), seed=9)
    main, extra = load_dataset("synthcc", synth_root), load_dataset("synthcc", extra_root)
    path = _recipe(synth_root, tmp_path / "x", epochs=1,
                   **{"data.extra_train": [{"dataset": "synthcc", "root": str(extra_root)}]})
    t = Trainer(load_recipe(path), log=lambda *_: None, progress=False)
    ds = t.dataset
    assert ds.num_train_pids == main.num_train_pids + extra.num_train_pids
    assert ds.num_train_clothes == main.num_train_clothes + extra.num_train_clothes
    assert len(ds.train) == len(main.train) + len(extra.train)
    by_path = {r.path: r for r in ds.train}
    for r in extra.train:  # the same image, its labels shifted past the main set's
        assert (by_path[r.path].pid, by_path[r.path].clothes) == (r.pid + main.num_train_pids,
                                                                  r.clothes + main.num_train_clothes)
    for r in ds.train:
        assert ds.pid2clothes[r.pid, r.clothes]
    assert (ds.pid2clothes.sum(axis=0) == 1).all()
    assert not ds.pid2clothes[:main.num_train_pids, main.num_train_clothes:].any()
    assert [s.query for s in ds.eval_splits] == [s.query for s in main.eval_splits]
    assert t.method.pid2clothes.shape == (ds.num_train_pids, ds.num_train_clothes)
    assert t.model.id_head.weight.shape[0] == ds.num_train_pids
    t.run()


def _denormals(tensors) -> int:
    """float32 denormals, counted from the bits (a float comparison would itself be flushed where flush-to-zero
    is on, as it is after a Trainer has run)."""
    n = 0
    for t in tensors:
        assert t.dtype != torch.float64 and t.dtype != torch.float16
        if t.dtype == torch.float32:
            raw = t.detach().view(torch.int32)
            n += int((((raw >> 23) & 0xFF) == 0).logical_and((raw & 0x7FFFFF) != 0).sum())
    return n


def _make_denormal(t: torch.Tensor) -> None:
    t.detach().view(torch.int32).fill_(1)  # the smallest float32 denormal, written as bits (a float fill would flush)


def test_training_leaves_no_denormal_weights_or_moments(synth_root, tmp_path):
    """Denormal floats make CPU training and inference several times slower (a 48-epoch run went from 41 to 235 s
    an epoch): after an epoch none is left in the weights, the heads or the optimisers' moments, including in
    tensors the step does not update (the CAL clothes head before its start epoch)."""
    t = Trainer(load_recipe(_recipe(synth_root, tmp_path / "dn", epochs=2)), log=lambda *_: None, progress=False)
    t.train_epoch(0)  # the optimisers now hold their moments
    head = t.method.heads["clothes"].weight
    conv = next(p for p in t.model.parameters() if p.dim() == 4)
    moments = [v for s in t.opt.state.values() for v in s.values() if torch.is_tensor(v) and v.dim() > 0]
    _make_denormal(head[:2])
    _make_denormal(conv.view(-1)[:50])
    for v in moments[:4]:
        _make_denormal(v.view(-1)[:10])
    states = lambda: [*t.model.parameters(), *t.method.heads.parameters(),  # noqa: E731
                      *(v for o in t.optimizers.values() for s in o.state.values() for v in s.values()
                        if torch.is_tensor(v))]
    assert _denormals(states()) >= 2 * head.shape[1] + 50 + 4  # moments: at least one element each
    t.train_epoch(0)  # epoch 0 again: the clothes head takes no step
    assert _denormals(states()) == 0
    assert torch.equal(head[:2], torch.zeros_like(head[:2]))


def test_model_files_carry_no_denormal_weights(tmp_path):
    """A model file written for inference has its denormal weights set to zero (ONNX Runtime ran such a model 5x
    slower), and a file written before that, or by another tool, loads without them; nothing else changes."""
    from safetensors.torch import load_file

    from reid.checkpoint import save_checkpoint

    model = build_model(ArchConfig(backbone="resnet_lite", lite_widths=[8, 8, 16, 16], num_classes=0))
    spec = PreprocessSpec(height=32, width=16, identity_dim=model.feature_dim)
    conv = next(p for p in model.parameters() if p.dim() == 4)
    _make_denormal(conv.view(-1)[:7])
    before = {k: v.clone() for k, v in model.state_dict().items()}
    save_checkpoint(tmp_path / "m.safetensors", model, spec, inference_only=True)
    save_checkpoint(tmp_path / "t.safetensors", model, spec, inference_only=False)
    assert _denormals(load_file(tmp_path / "m.safetensors").values()) == 0
    assert _denormals(load_file(tmp_path / "t.safetensors").values()) == 7  # a training checkpoint: exact state
    assert _denormals(model.state_dict().values()) == 7  # the model in memory is not touched
    for name in ("m", "t"):
        loaded, _ = load_checkpoint(tmp_path / f"{name}.safetensors")
        state = loaded.state_dict()
        assert _denormals(state.values()) == 0
        for k, v in before.items():
            expect = v.clone()
            if v.dtype == torch.float32:
                raw = expect.view(torch.int32)
                raw[((raw >> 23) & 0xFF) == 0] = 0
            assert torch.equal(state[k].reshape(-1).view(torch.uint8), expect.reshape(-1).view(torch.uint8)), k  # bit for bit
