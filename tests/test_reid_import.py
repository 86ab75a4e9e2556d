"""`python -m reid import`: Simple-CCReID (CAL) and FIRe² checkpoints, in the layout their code saves, onto ReIDModel.

The source files are built here from the authors' published module names: torchvision's resnet50 children
without avgpool/fc wrapped in an `nn.Sequential` (`base` in Simple-CCReID, `backbone` in FIRe²), the BN neck
(`bn` / `bottleneck`), FIRe²'s FAR head and both papers' classifiers, saved in the dict form of their main.py.
The imported model's features are compared with a forward pass written here from the same tensors.
"""

from __future__ import annotations

import json
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
import torchvision
from safetensors import safe_open
from torch import nn

from reid.__main__ import main
from reid.checkpoint import load_checkpoint
from reid.import_weights import WeightImportError, import_checkpoint

HEIGHT, WIDTH = 384, 192
NUM_IDS, NUM_CLOTHES = 150, 300


def authors_trunk(seed: int) -> nn.Sequential:
    """resnet50 with layer4's stride set to 1 and its avgpool/fc cut off, as both papers' models build it; every
    BatchNorm gets its own random affine and statistics measured on noise, so no two layers are alike."""
    torch.manual_seed(seed)
    net = torchvision.models.resnet50(weights=None)
    net.layer4[0].conv2.stride = (1, 1)
    net.layer4[0].downsample[0].stride = (1, 1)
    base = nn.Sequential(*list(net.children())[:-2])
    for m in base.modules():
        if isinstance(m, nn.BatchNorm2d):
            with torch.no_grad():
                m.weight.uniform_(0.5, 1.5)
                m.bias.uniform_(-0.2, 0.2)
            m.momentum = None  # cumulative average over the calibration batch
    base.train()
    with torch.no_grad():
        base(torch.randn(2, 3, 64, 32))
    return base.eval()


def random_neck(dim: int, bias: bool, seed: int) -> nn.BatchNorm1d:
    g = torch.Generator().manual_seed(seed)
    bn = nn.BatchNorm1d(dim)
    with torch.no_grad():
        bn.weight.copy_(0.5 + torch.rand(dim, generator=g))
        bn.bias.copy_((torch.rand(dim, generator=g) - 0.5) * 0.4 if bias else torch.zeros(dim))
        bn.running_mean.copy_(torch.rand(dim, generator=g) * 0.5)
        bn.running_var.copy_(0.5 + torch.rand(dim, generator=g) * 1.5)
        bn.num_batches_tracked.fill_(1234)
    return bn.eval()


def prefixed(prefix: str, module: nn.Module) -> dict[str, torch.Tensor]:
    return {f"{prefix}.{k}": v.clone() for k, v in module.state_dict().items()}


def reference_features(trunk: nn.Sequential, neck: nn.BatchNorm1d, x: torch.Tensor, pooling: str,
                       p: float | None = None) -> torch.Tensor:
    """The papers' eval forward, written out: trunk -> global pooling -> BatchNorm1d (running statistics)."""
    with torch.no_grad():
        fmap = trunk(x)
        if pooling == "maxavg":
            pooled = torch.cat([F.adaptive_max_pool2d(fmap, 1), F.adaptive_avg_pool2d(fmap, 1)], dim=1)
        elif pooling == "gem":
            pooled = F.avg_pool2d(fmap.clamp(min=1e-6).pow(p), fmap.shape[2:]).pow(1.0 / p)
        else:
            pooled = F.adaptive_avg_pool2d(fmap, 1)
        return F.batch_norm(pooled.flatten(1), neck.running_mean, neck.running_var, neck.weight, neck.bias,
                            training=False, eps=neck.eps)


def as_numpy1_pickle(path: Path) -> None:
    """Rewrite a torch zip checkpoint so its NumPy scalars carry NumPy 1.x module names, as the released files
    (written with NumPy 1.x) do."""
    with zipfile.ZipFile(path) as zin:
        entries = [(info.filename, zin.read(info.filename)) for info in zin.infolist()]
    with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as zout:
        for name, data in entries:
            if name.endswith("/data.pkl"):
                assert b"numpy._core.multiarray" in data or b"numpy.core.multiarray" in data
                data = data.replace(b"numpy._core.multiarray", b"numpy.core.multiarray")
            zout.writestr(name, data)


@pytest.fixture(scope="module")
def images() -> torch.Tensor:
    """Two crops at the papers' 384x192."""
    return torch.randn(2, 3, HEIGHT, WIDTH, generator=torch.Generator().manual_seed(7))


@pytest.fixture(scope="module")
def small_images() -> torch.Tensor:
    """The model is fully convolutional: smaller crops check the mapping as well, at a fraction of the CPU time."""
    return torch.randn(2, 3, HEIGHT // 2, WIDTH // 2, generator=torch.Generator().manual_seed(8))


@pytest.fixture(scope="module")
def simple_ccreid(tmp_path_factory):
    """A Simple-CCReID checkpoint as main.py saves it: models/img_resnet.py ResNet50 (base, globalpooling, bn),
    models/classifier.py Classifier + NormalizedClassifier, rank-1 as a NumPy float."""
    trunk = authors_trunk(1)
    neck = random_neck(4096, bias=True, seed=2)
    model_sd = {**prefixed("base", trunk), **prefixed("bn", neck)}
    ckpt = {
        "model_state_dict": model_sd,
        "classifier_state_dict": {"classifier.weight": torch.randn(NUM_IDS, 4096) * 1e-3,
                                  "classifier.bias": torch.zeros(NUM_IDS)},
        "clothes_classifier_state_dict": {"weight": torch.randn(NUM_CLOTHES, 4096)},
        "rank1": np.float64(0.413),
        "epoch": 59,
    }
    path = tmp_path_factory.mktemp("cal") / "best_model.pth.tar"
    torch.save(ckpt, path)
    as_numpy1_pickle(path)
    return path, trunk, neck, model_sd


@pytest.fixture(scope="module")
def fire2(tmp_path_factory):
    """A FIRe² checkpoint as its main.py saves it: model/fire.py FIRe (backbone, bottleneck, FAR_bottleneck,
    FAR_classifier), the bias-free Classifier, the Adam state, rank-1 / mAP as NumPy floats."""
    trunk = authors_trunk(3)
    neck = random_neck(4096, bias=False, seed=4)
    far_bn = random_neck(4096, bias=False, seed=5)  # same shapes as the neck: importing it instead must fail
    model_sd = {**prefixed("backbone", trunk), **prefixed("bottleneck", neck), **prefixed("FAR_bottleneck", far_bn),
                "FAR_classifier.weight": torch.randn(NUM_IDS, 4096) * 1e-3}
    classifier = nn.Linear(4096, NUM_IDS, bias=False)
    opt = torch.optim.Adam([{"params": list(classifier.parameters()), "initial_lr": 3.5e-4}], lr=3.5e-4)
    classifier(torch.randn(2, 4096)).sum().backward()
    opt.step()
    ckpt = {
        "model_state_dict": model_sd,
        "classifier_state_dict": {f"classifier.{k}": v for k, v in classifier.state_dict().items()},
        "optimizer_state_dict": opt.state_dict(),
        "rank1": np.float64(0.65),
        "mAP": np.float64(0.631),
        "epoch": 29,
    }
    path = tmp_path_factory.mktemp("fire2") / "best_rank1_model.pth"
    torch.save(ckpt, path)
    return path, trunk, neck, model_sd


def test_simple_ccreid_import_matches_the_papers_forward(simple_ccreid, images, tmp_path, caplog):
    path, trunk, neck, _ = simple_ccreid
    out = tmp_path / "cal_prcc.safetensors"
    with caplog.at_level("INFO", logger="reid.import"):
        rc = main(["import", "--from", "simple-ccreid", "--weights", str(path), "--arch", "resnet50",
                   "--out", str(out), "--dataset", "prcc"])
    assert rc == 0
    # Classifiers and bookkeeping are left out and named in the log, never required.
    logged = caplog.text
    for name in ("classifier_state_dict.classifier.weight", "clothes_classifier_state_dict.weight", "rank1",
                 "epoch"):
        assert name in logged, logged
    model, spec = load_checkpoint(out)
    assert (spec.height, spec.width, spec.colour) == (384, 192, "rgb")
    assert spec.mean == (0.485, 0.456, 0.406) and spec.std == (0.229, 0.224, 0.225)
    assert spec.method == "cal" and spec.train_dataset == "prcc" and spec.identity_dim == 4096
    assert spec.extra["imported"]["from"] == "simple-ccreid"
    assert model.arch.pooling == "maxavg" and model.arch.last_stride == 1 and model.arch.neck_bias
    with torch.no_grad():
        got = model(images)
    want = reference_features(trunk, neck, images, "maxavg")
    assert got.shape == (2, 4096)
    torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-4 * float(want.abs().max()))


def test_fire2_import_matches_the_papers_forward_and_drops_far(fire2, small_images, tmp_path, caplog):
    path, trunk, neck, _ = fire2
    out = tmp_path / "fire2_ltcc.safetensors"
    with caplog.at_level("INFO", logger="reid.import"):
        result = import_checkpoint(path, out, "fire2", dataset="ltcc")
    assert result.pooling == "maxavg" and result.feature_dim == 4096
    model, spec = load_checkpoint(out)
    with torch.no_grad():
        got = model(small_images)
    # The neck is `bottleneck`, not FAR's BN of the same shape.
    want = reference_features(trunk, neck, small_images, "maxavg")
    torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-4 * float(want.abs().max()))
    assert spec.method == "fire2" and spec.train_dataset == "ltcc" and (spec.height, spec.width) == (384, 192)
    assert not model.arch.neck_bias and not model.bn.bias.requires_grad
    for name in ("FAR_bottleneck.weight", "FAR_bottleneck.running_var", "FAR_classifier.weight",
                 "classifier_state_dict.classifier.weight", "optimizer_state_dict", "mAP"):
        assert any(d.startswith(name) for d in result.dropped), result.dropped
        assert name in caplog.text
    with safe_open(str(out), framework="pt") as f:
        assert not [k for k in f.keys() if "FAR" in k or "classifier" in k or "head" in k]


def test_bare_and_wrapped_forms_import_the_same_tensors(fire2, tmp_path):
    """{'state_dict': ...}, a bare state dict and DataParallel's `module.` prefix all give the same file."""
    path, _, _, model_sd = fire2
    first = tmp_path / "a.safetensors"
    import_checkpoint(path, first, "fire2")
    forms = {"state_dict": {"state_dict": model_sd, "epoch": 3},
             "bare_module": {f"module.{k}": v for k, v in model_sd.items()}}
    with safe_open(str(first), framework="pt") as f:
        reference = {k: f.get_tensor(k) for k in f.keys()}
    for name, obj in forms.items():
        src, dst = tmp_path / f"{name}.pth.tar", tmp_path / f"{name}.safetensors"
        torch.save(obj, src)
        import_checkpoint(src, dst, "fire2")
        with safe_open(str(dst), framework="pt") as f:
            assert sorted(f.keys()) == sorted(reference)
            for k, want in reference.items():
                assert torch.equal(f.get_tensor(k), want), (name, k)


def test_gem_pooling_imports_its_learned_exponent(simple_ccreid, tmp_path):
    """Simple-CCReID's GeM keeps p as a 1-element parameter (models/utils/pooling.py); with a 2048-d neck."""
    trunk = simple_ccreid[1]
    neck = random_neck(2048, bias=True, seed=9)
    sd = {**prefixed("base", trunk), "globalpooling.p": torch.tensor([2.7]), **prefixed("bn", neck)}
    src, out = tmp_path / "gem.pth.tar", tmp_path / "gem.safetensors"
    torch.save({"model_state_dict": sd, "epoch": 1}, src)
    result = import_checkpoint(src, out, "simple-ccreid")
    assert result.pooling == "gem" and result.feature_dim == 2048
    model, _ = load_checkpoint(out)
    x = torch.randn(1, 3, 64, 32, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        got = model(x)
    want = reference_features(trunk, neck, x, "gem", p=2.7)
    torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-4 * float(want.abs().max()))
    # A 2048-d neck without GeM's exponent is avg or max pooling: the file cannot tell, so it must be named.
    del sd["globalpooling.p"]
    torch.save({"model_state_dict": sd}, src)
    with pytest.raises(WeightImportError, match="--pooling avg or --pooling max"):
        import_checkpoint(src, out, "simple-ccreid")
    assert import_checkpoint(src, out, "simple-ccreid", pooling="avg").pooling == "avg"
    with pytest.raises(WeightImportError, match="--pooling maxavg does not fit"):
        import_checkpoint(src, out, "simple-ccreid", pooling="maxavg")


def test_imported_model_exports_to_onnx_with_parity(simple_ccreid, shared_video, tmp_path, monkeypatch, capsys):
    import reid.export

    path = simple_ccreid[0]
    weights = tmp_path / "cal.safetensors"
    assert main(["import", "--from", "simple-ccreid", "--weights", str(path), "--out", str(weights)]) == 0
    real = reid.export.pets_crops
    # Two real crops keep resnet50 at 384x192 within the CPU budget; the parity gate itself is unchanged.
    monkeypatch.setattr(reid.export, "pets_crops", lambda video, gt, n=64, **kw: real(video, gt, min(n, 2), **kw))
    out = tmp_path / "cal.onnx"
    rc = main(["export", "--weights", str(weights), "--out", str(out), "--threads", "2",
               "--parity-video", str(shared_video["pets"]), "--parity-gt", str(shared_video["pets_gt"])])
    assert rc == 0, capsys.readouterr().err
    report = json.loads(Path(str(out) + ".export.json").read_text())
    assert report["passed"] is True and report["precision"] == "fp32"
    [p] = report["parity"]
    assert p["crops"] == 2 and p["passed"] and p["cosine_min"] >= reid.export.COSINE_FP32
    assert report["spec"]["method"] == "cal" and report["spec"]["height"] == 384


def _cli_error(args: list[str], capsys) -> str:
    assert main(["import", *args]) == 2
    return capsys.readouterr().err


def test_missing_unknown_and_wrong_source_are_listed(simple_ccreid, fire2, tmp_path, capsys):
    cal_path, _, _, cal_sd = simple_ccreid
    fire_path = fire2[0]
    out = str(tmp_path / "x.safetensors")

    # Missing tensors: named as the source names them.
    sd = {k: v for k, v in cal_sd.items() if k not in ("bn.running_var", "base.7.2.conv3.weight")}
    torch.save({"model_state_dict": sd}, tmp_path / "missing.pth.tar")
    err = _cli_error(["--from", "simple-ccreid", "--weights", str(tmp_path / "missing.pth.tar"), "--out", out], capsys)
    assert "2 missing tensors" in err and "bn.running_var" in err and "base.7.2.conv3.weight" in err
    assert str(tmp_path / "missing.pth.tar") in err

    # Unknown tensors: a stray key and a stage index the layout does not have.
    sd = {**cal_sd, "base.8.weight": torch.zeros(3), "attention.query": torch.zeros(4)}
    torch.save({"model_state_dict": sd}, tmp_path / "unknown.pth.tar")
    err = _cli_error(["--from", "simple-ccreid", "--weights", str(tmp_path / "unknown.pth.tar"), "--out", out], capsys)
    assert "2 unknown tensors" in err and "base.8.weight" in err and "attention.query" in err

    # The wrong --from: every key is listed as unknown and the hint names the right source.
    err = _cli_error(["--from", "simple-ccreid", "--weights", str(fire_path), "--out", out], capsys)
    assert "unknown tensors" in err and "backbone.0.weight" in err and "--from fire2" in err
    err = _cli_error(["--from", "fire2", "--weights", str(cal_path), "--out", out], capsys)
    assert "base.0.weight" in err and "--from simple-ccreid" in err
    err = _cli_error(["--from", "cal", "--weights", str(cal_path), "--out", out], capsys)
    assert "simple-ccreid" in err and "fire2" in err

    # A torchvision ImageNet classifier file is not a re-id checkpoint.
    tv = torchvision.models.resnet18(weights=None).state_dict()
    torch.save(tv, tmp_path / "resnet18-f37072fd.pth")
    err = _cli_error(["--from", "fire2", "--weights", str(tmp_path / "resnet18-f37072fd.pth"), "--out", out], capsys)
    assert "conv1.weight" in err and "bn1.running_mean" in err and "torchvision ImageNet classifier" in err

    # Shapes that do not fit, and a file needing pickled objects beyond tensors and numbers.
    sd = dict(cal_sd, **{"bn.weight": torch.ones(1024)})
    torch.save({"model_state_dict": sd}, tmp_path / "shape.pth.tar")
    err = _cli_error(["--from", "simple-ccreid", "--weights", str(tmp_path / "shape.pth.tar"), "--out", out], capsys)
    assert "bn.weight" in err and "[1024]" in err
    torch.save({"model_state_dict": cal_sd, "args": Path("x")}, tmp_path / "pickled.pth.tar")
    err = _cli_error(["--from", "simple-ccreid", "--weights", str(tmp_path / "pickled.pth.tar"), "--out", out], capsys)
    assert "pickled Python objects" in err and "weights_only" in err
    assert not Path(out).exists()
