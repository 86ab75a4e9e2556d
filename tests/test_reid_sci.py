"""SCI (methods.md §4): the SSE separation maths, prompt token shapes, which parameters train in each stage, SIM as
the identity at alpha = 0, loading CLIP checkpoints in the official key layouts (built here: nothing is fetched),
clear errors for a missing / wrong CLIP file, and a tiny `python -m reid train` + `export` whose ONNX file the
pipeline's embedder runs without the text side."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from reid.config import RecipeError, load_recipe
from reid.methods.base import MethodConfigError
from reid.methods.sci import orthogonalise, separation_loss, supervised_contrastive
from reid.train import Trainer
from tests.reid_fixtures import make_ltcc, make_synthcc

REPO = Path(__file__).resolve().parents[1]
RECIPE = REPO / "configs" / "reid" / "synthcc_cpu_sci.yaml"

pytestmark = pytest.mark.usefixtures("restore_torch_globals")

# a tiny CLIP: 32x16 inputs, 8x8 patches (4x2 grid), width 32, one layer each side
TINY = {"data.height": 32, "data.width": 16, "data.batch_size": 8, "data.num_instances": 2,
        "model.clip_width": 32, "model.clip_layers": 1, "model.clip_heads": 2, "model.clip_patch": 8,
        "model.clip_embed_dim": 16, "loss.sci.text_width": 32, "loss.sci.text_layers": 1, "loss.sci.text_heads": 2,
        "loss.sci.stage1_epochs": 4, "loss.sci.stage1_batch_size": 8, "loss.sci.stage1_lr": 0.01, "loss.start_epoch_cal": 0,
        "optim.warmup_epochs": 0, "optim.epochs": 1, "threads": 1, "eval.every": 1, "optim.lr": 1e-3}


@pytest.fixture(scope="module")
def synth_root(tmp_path_factory):
    return make_synthcc(tmp_path_factory.mktemp("sci"), n_train=6, n_test=4, size=(32, 16))


def trainer(root: Path, out: Path, **over) -> Trainer:
    sets = {**TINY, "data.root": str(root), "output_dir": str(out), **over}
    return Trainer(load_recipe(RECIPE, sets), log=lambda *_: None, progress=False)


# ------------------------------------------------------------------------------------------- SSE maths

def test_gram_schmidt_removes_the_clothes_direction_and_the_printed_formula_only_rescales():
    g = torch.Generator().manual_seed(0)
    f_id, f_clo = torch.randn(50, 16, generator=g), torch.randn(50, 16, generator=g)
    ort = orthogonalise(f_id, f_clo, "gram_schmidt")
    assert F.cosine_similarity(ort, f_clo, dim=1).abs().max() < 1e-5  # F_ort is orthogonal to F_clo
    coef = (f_id * f_clo).sum(1, keepdim=True) / (f_clo * f_clo).sum(1, keepdim=True)
    assert torch.allclose(ort + coef * f_clo, f_id, atol=1e-5)  # and F_id = F_ort + its clothes component
    printed = orthogonalise(f_id, f_clo, "printed")  # Eqs. 4-5 as printed: a rescaled F_id
    assert torch.allclose(F.cosine_similarity(printed, f_id, dim=1).abs(), torch.ones(50), atol=1e-5)
    # L_sim with the Gram-Schmidt F_ort: lambda_2's cosine is 0, lambda_1's term is 1 - sqrt(1 - cos^2(id, clo))
    c = F.cosine_similarity(f_id, f_clo, dim=1)
    want = (1 - torch.sqrt(1 - c ** 2)).mean()
    assert torch.allclose(separation_loss(ort, f_id, f_clo, 1.0, 1.0), want, atol=1e-5)


def test_separation_term_pushes_identity_and_clothes_text_features_apart():
    g = torch.Generator().manual_seed(1)
    base = torch.randn(8, 16, generator=g)
    f_id = (base + 0.3 * torch.randn(8, 16, generator=g)).requires_grad_(True)
    f_clo = (base + 0.3 * torch.randn(8, 16, generator=g)).requires_grad_(True)  # start strongly aligned
    start = F.cosine_similarity(f_id, f_clo, dim=1).abs().mean().item()
    opt = torch.optim.Adam([f_id, f_clo], lr=0.05)
    for _ in range(300):
        loss = separation_loss(orthogonalise(f_id, f_clo), f_id, f_clo, 1.0, 1.0)
        opt.zero_grad()
        loss.backward()
        opt.step()
    end = F.cosine_similarity(f_id, f_clo, dim=1).abs().mean().item()
    assert start > 0.8 and end < 0.25, (start, end)


def test_supervised_contrastive_averages_over_positives():
    a = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    b = torch.tensor([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0]])
    la, lb = torch.tensor([0, 1]), torch.tensor([0, 0, 1])
    logp = torch.log_softmax(2.0 * a @ b.t(), dim=1)
    want = (-(logp[0, 0] + logp[0, 1]) / 2 - logp[1, 2]) / 2
    assert torch.allclose(supervised_contrastive(a, b, la, lb, 2.0), want)


# ------------------------------------------------------------------------------------------- prompts

def test_prompt_token_shapes_and_template_errors(synth_root, tmp_path):
    t = trainer(synth_root, tmp_path / "p")
    prompts, text = t.method.heads["prompts"], t.method.heads["text"]
    n, m, w, ctx = 6, 4, 32, 16
    assert prompts.ctx_id.shape == prompts.ctx_clo.shape == (n, m, w)
    # "<start> a photo of a X X X X person . <end>": 5 tokens before the placeholders, the end token at 11
    assert prompts.id_prefix.shape == (1, 5, w) and prompts.id_suffix.shape == (1, ctx - 5 - m, w)
    assert prompts.eot == {"id": 11, "clo": 11}
    labels = torch.tensor([0, 3, 3])
    emb = prompts.embeddings("id", labels)
    assert emb.shape == (3, ctx, w)
    assert torch.equal(emb[:, 5:9], prompts.ctx_id[labels]) and torch.equal(emb[1], emb[2])
    # the fixed parts are the text tower's embeddings of the template's own tokens
    assert torch.equal(emb[0, :5], text.tower.token_embedding(prompts.id_tokens[0, :5]))
    assert torch.equal(prompts.embeddings("clo", labels)[:, 5:9], prompts.ctx_clo[labels])
    f_id, f_clo, f_ort = t.method.text_features(labels)
    assert f_id.shape == f_clo.shape == f_ort.shape == (3, 16)
    with pytest.raises(MethodConfigError, match="prompt_tokens"):
        trainer(synth_root, tmp_path / "q", **{"loss.sci.id_template": "A photo of a X X person."})
    with pytest.raises(MethodConfigError, match="context_length"):
        trainer(synth_root, tmp_path / "r", **{"loss.sci.context_length": 8})


# ------------------------------------------------------------------------------------------- stages

def _snapshot(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


def _changed(before: dict, module: torch.nn.Module) -> set[str]:
    return {k for k, v in module.state_dict().items() if not torch.equal(before[k], v)}


def test_which_parameters_train_in_each_stage(synth_root, tmp_path):
    t = trainer(synth_root, tmp_path / "s")
    model, heads = t.model, t.method.heads
    m0, h0 = _snapshot(model), _snapshot(heads)
    start = t.method.epoch_start(t, 0)  # stage 1: encoders frozen, only the prompt tokens train
    stage1 = start.stats["stage1"]
    assert _changed(h0, heads) == {"prompts.ctx_id", "prompts.ctx_clo", "prompts.bank", "prompts.done"}
    assert _changed(m0, model) == {"backbone.sim.bank"}  # the frozen text bank, nothing trained
    bank = heads["prompts"].bank
    assert torch.equal(model.backbone.sim.bank, bank) and bank.abs().sum() > 0
    assert stage1["after"]["cos_id_clo"] < stage1["before"]["cos_id_clo"]  # SSE separated the two prompts
    assert abs(stage1["after"]["cos_ort_clo"]) < 1e-4
    assert stage1["last"]["i2t"] < stage1["first"]["i2t"]
    assert not any(p.requires_grad for p in heads["text"].parameters())
    assert not any(p.requires_grad for p in heads["prompts"].parameters())
    m1, h1 = _snapshot(model), _snapshot(heads)
    stats = t.train_epoch(0)  # stage 2: image side trains; the stage-1 hook does not run again
    assert stats["i2t_loss"] > 0 and stats["adv_loss"] > 0 and stats["tri_loss"] > 0
    changed = _changed(m1, model)
    assert {"backbone.visual.conv1.weight", "backbone.visual.proj", "backbone.sim.alpha", "bn.weight",
            "id_head.weight"} <= changed
    assert "backbone.sim.bank" not in changed
    assert _changed(h1, heads) <= {k for k in h1 if k.startswith("clothes.")}  # text side frozen
    assert model.backbone.sim.alpha.abs().sum() > 0


def test_resume_keeps_stage1_and_gives_the_same_run(synth_root, tmp_path):
    def run(out, epochs, resume=False):
        t = trainer(synth_root, out, **{"optim.epochs": epochs})
        if resume:
            t.resume(out / "last.safetensors")
        return t, t.run()

    _, straight = run(tmp_path / "a", 2)
    run(tmp_path / "b", 1)
    t, resumed = run(tmp_path / "b", 2, resume=True)
    assert int(t.method.heads["prompts"].done) == 1
    assert resumed["last"] == straight["last"]
    history = [json.loads(line) for line in (tmp_path / "b" / "history.jsonl").read_text().splitlines()]
    assert "stage1" in history[0]["sci"] and "stage1" not in history[1]["sci"]


def test_sim_at_alpha_zero_is_the_identity_and_then_reads_the_bank():
    from reid.models import ArchConfig, build_model

    arch = dict(backbone="clip_vit", clip_width=32, clip_layers=1, clip_heads=2, clip_patch=8, clip_embed_dim=16,
                clip_image_size=(32, 16), sim_bank=5)
    torch.manual_seed(0)
    with_sim = build_model(ArchConfig(**arch)).eval()
    without = build_model(ArchConfig(**{**arch, "sim": False})).eval()
    without.load_state_dict({k: v for k, v in with_sim.state_dict().items() if ".sim." not in k})
    x = torch.randn(3, 3, 32, 16)
    with torch.no_grad():
        assert torch.equal(with_sim(x), without(x))
        with_sim.backbone.sim.alpha.normal_()
        with_sim.backbone.sim.bank.normal_()
        a = with_sim(x)
        assert not torch.allclose(a, without(x))
        with_sim.backbone.sim.bank.normal_()
        assert not torch.allclose(with_sim(x), a)


# ------------------------------------------------------------------------------------------- CLIP files

def _official_clip(path: Path, layout: str = "openai") -> tuple[object, str]:
    """A tiny CLIP in open_clip's / OpenAI's key layout (visual.*, token_embedding.weight, transformer.*, ...),
    pretrained at 32x32 (a 4x4 grid of 8x8 patches), saved as `layout`; returns (the CLIP model, sha256)."""
    from open_clip.model import CLIP, CLIPTextCfg, CLIPVisionCfg

    torch.manual_seed(3)
    clip = CLIP(16, CLIPVisionCfg(layers=1, width=32, head_width=16, patch_size=8, image_size=32),
                CLIPTextCfg(context_length=20, width=32, heads=2, layers=1), quick_gelu=True).eval()
    sd = clip.state_dict()
    if layout == "openai":
        torch.save({**sd, "input_resolution": torch.tensor(32), "context_length": torch.tensor(20)}, path)
    elif layout == "open_clip_text":  # CustomTextCLIP: text tower under text.*, wrapped as a training checkpoint
        text_keys = ("token_embedding", "positional_embedding", "transformer.", "ln_final", "text_projection")
        torch.save({"state_dict": {("module.text." + k if k.startswith(text_keys) else "module." + k): v
                                   for k, v in sd.items()}, "epoch": 3}, path)
    else:
        from safetensors.torch import save_file

        save_file({k: v.contiguous() for k, v in sd.items()}, str(path))
    return clip, hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.mark.parametrize("layout", ["openai", "open_clip_text", "safetensors"])
def test_loading_a_clip_checkpoint_in_the_official_key_layout(synth_root, tmp_path, layout):
    path = tmp_path / ("clip.safetensors" if layout == "safetensors" else "clip.pt")
    clip, sha = _official_clip(path, layout)
    over = {"model.pretrained": str(path), "model.pretrained_sha256": sha, "model.sim": False,
            "data.height": 32, "data.width": 32, "loss.sci.context_length": 20}
    t = trainer(synth_root, tmp_path / "o", **over)
    enc, text = t.model.backbone, t.method.heads["text"].tower
    assert torch.equal(enc.visual.conv1.weight, clip.visual.conv1.weight)
    assert torch.equal(text.token_embedding.weight, clip.token_embedding.weight)
    assert torch.equal(text.transformer.resblocks[0].attn.in_proj_weight, clip.transformer.resblocks[0].attn.in_proj_weight)
    assert t.method.scale == pytest.approx(float(clip.logit_scale.detach().exp()))
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():  # at the pre-training size our encoder's projection is CLIP's image feature
        assert torch.allclose(enc(x)[:, 32:], clip.encode_image(x), atol=1e-5)
        ids = t.method.heads["prompts"].id_tokens
        assert torch.allclose(t.method.heads["text"](text.token_embedding(ids), int(ids.argmax())),
                              clip.encode_text(ids), atol=1e-5)
    # at 64x32 (an 8x4 grid) the 4x4 positional grid is resized bilinearly, the class position kept
    t2 = trainer(synth_root, tmp_path / "o2", **{**over, "data.height": 64, "data.width": 32})
    pos, src = t2.model.backbone.visual.positional_embedding, clip.visual.positional_embedding
    assert pos.shape == (1 + 8 * 4, 32) and torch.equal(pos[0], src[0])
    grid = F.interpolate(src[1:].reshape(1, 4, 4, 32).permute(0, 3, 1, 2), size=(8, 4), mode="bilinear",
                         align_corners=False)
    assert torch.allclose(pos[1:], grid.permute(0, 2, 3, 1).reshape(32, 32))


def test_wrong_or_missing_clip_files_fail_at_start_naming_the_key(synth_root, tmp_path):
    path = tmp_path / "clip.pt"
    _, sha = _official_clip(path)
    base = {"model.pretrained": str(path), "model.pretrained_sha256": sha, "data.height": 32, "data.width": 32,
            "loss.sci.context_length": 20}
    with pytest.raises(RecipeError, match=r"has sha256 [0-9a-f]{64}, not model.pretrained_sha256 0+"):
        trainer(synth_root, tmp_path / "a", **{**base, "model.pretrained_sha256": "0" * 64})
    with pytest.raises(RecipeError, match="pretrained_sha256 is not set"):
        trainer(synth_root, tmp_path / "b", **{**base, "model.pretrained_sha256": None})
    with pytest.raises(RecipeError, match=r"visual.class_embedding has shape \[32\], the configured encoder \[64\]; "
                                          r"set model.clip_width"):
        trainer(synth_root, tmp_path / "c", **{**base, "model.clip_width": 64})
    sd = torch.load(path, weights_only=True)
    del sd["visual.ln_post.weight"]
    torch.save(sd, tmp_path / "cut.pt")
    cut = hashlib.sha256((tmp_path / "cut.pt").read_bytes()).hexdigest()
    with pytest.raises(RecipeError, match=r"lacks visual.ln_post.weight"):
        trainer(synth_root, tmp_path / "d", **{**base, "model.pretrained": str(tmp_path / "cut.pt"),
                                               "model.pretrained_sha256": cut})
    with pytest.raises(RecipeError, match="loss.sci.text_width"):
        trainer(synth_root, tmp_path / "e", **{**base, "loss.sci.text_width": 64})
    with pytest.raises(RecipeError, match="model.backbone: clip_vit"):
        trainer(synth_root, tmp_path / "f", **{"model.backbone": "resnet_lite"})


def test_vitb16_recipe_without_the_clip_file_stops_with_one_line(tmp_path, capsys):
    from reid.__main__ import main

    root = make_ltcc(tmp_path / "data")
    code = main(["train", str(REPO / "configs/reid/ltcc_sci_vitb16.yaml"), "--root", str(root), "--output-dir",
                 str(tmp_path / "o"), "--set", "model.pretrained=" + str(tmp_path / "ViT-B-16.pt"), "--no-progress"])
    assert code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "model.pretrained" in err[0] and "ViT-B-16.pt" in err[0] and "not found" in err[0], err
    assert "5806e77cd80f8b59890b7e101eabd078d9fb84e6937f9e85e4ecb61988df416f" in err[0]


@pytest.mark.parametrize("name", ["ltcc_sci_vitb16", "prcc_sci_vitb16", "vcclothes_sci_vitb16", "synthcc_cpu_sci"])
def test_sci_recipes_parse(name):
    from reid.models.clip import CLIP_MEAN, CLIP_STD, OPENAI_VITB16_SHA256

    r = load_recipe(REPO / "configs" / "reid" / f"{name}.yaml")
    assert r.loss.method == "sci" and r.model.backbone == "clip_vit" and r.model.sim
    assert tuple(r.data.mean) == CLIP_MEAN and tuple(r.data.std) == CLIP_STD
    if name.endswith("vitb16"):
        assert r.model.pretrained == "weights/ViT-B-16.pt" and r.model.pretrained_sha256 == OPENAI_VITB16_SHA256
        assert (r.model.clip_width, r.model.clip_layers, r.model.clip_patch, r.loss.sci.text_width) == (768, 12, 16, 512)
    else:
        assert r.model.pretrained is None


def test_benchmark_rows_sci():
    import importlib.util

    from reid.__main__ import _parse_set

    spec = importlib.util.spec_from_file_location("reid_synthcc", REPO / "benchmarks" / "reid_synthcc.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    for label in ("sci", "sci_nosim"):
        recipe, sets, knobs = bench.ROWS[label]
        r = load_recipe(REPO / "configs" / "reid" / f"{recipe}.yaml", _parse_set(sets))
        assert r.loss.method == "sci" and r.model.sim == (label == "sci") and not knobs
        assert "NO pretrained CLIP" in bench.TITLES[label] or "from scratch" in bench.TITLES[label]


# ------------------------------------------------------------------------------------------- export

def test_cli_train_export_parity_and_the_pipeline_embedder(synth_root, tmp_path, shared_video):
    from reid.__main__ import main

    out = tmp_path / "run"  # `python -m reid train` and `export`, in this process (saves two interpreter starts)
    cmd = ["train", str(RECIPE), "--root", str(synth_root), "--output-dir", str(out), "--no-progress"]
    assert main(cmd + [a for k, v in TINY.items() for a in ("--set", f"{k}={json.dumps(v)}")]) == 0
    hist = json.loads((out / "history.jsonl").read_text().splitlines()[0])
    assert hist["train"]["i2t_loss"] > 0 and "stage1" in hist["sci"]
    weights = out / "model_last.safetensors"
    from safetensors import safe_open

    with safe_open(str(weights), framework="pt") as f:  # the inference file holds the image side only
        keys = list(f.keys())
    assert any(k.startswith("model.backbone.visual.") for k in keys) and "model.backbone.sim.bank" in keys
    assert not any(("token_embedding" in k or "prompts" in k or k.startswith(("heads.", "model.id_head")))
                   for k in keys)
    # give SIM a clearly non-zero gate so the parity check covers it, then export
    from reid.checkpoint import load_checkpoint, save_checkpoint

    from reid.models.clip import CLIP_MEAN, CLIP_STD

    model, spec = load_checkpoint(weights)
    assert (spec.mean, spec.std) == (CLIP_MEAN, CLIP_STD)  # the recipe's CLIP normalisation travels with the file
    with torch.no_grad():
        model.backbone.sim.alpha.normal_(0, 0.5)
    gated = out / "gated.safetensors"
    save_checkpoint(gated, model, spec, inference_only=True)
    assert main(["export", "--weights", str(gated), "--format", "onnx", "--threads", "1", "--parity-video",
                 str(shared_video["pets"]), "--parity-gt", str(shared_video["pets_gt"])]) == 0
    report = json.loads((out / "gated.onnx.export.json").read_text())
    assert report["passed"] and report["parity"][0]["cosine_min"] >= 0.999
    assert report["spec"]["identity_dim"] == 48 and report["spec"]["mean"] == list(spec.mean)
    # the pipeline's embedder runs the file from its own metadata, without open_clip or any training code
    code = ("import sys, json, numpy as np\n"
            "from reid.inference.factory import create_embedder\n"
            f"e = create_embedder({str(out / 'gated.onnx')!r}, backend='onnxruntime', threads=1)\n"
            "crops = [np.random.default_rng(i).integers(0, 255, (70, 30, 3), dtype=np.uint8) for i in range(3)]\n"
            "b = e.embed(crops)\n"
            "bad = [m for m in sys.modules if m.split('.')[0] == 'open_clip' or m in ('reid.methods', 'reid.train')]\n"
            "print(json.dumps({'bad': bad, 'mean': list(e.spec.mean), 'f': b.identity.tolist()}))\n")
    res = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-2000:]
    got = json.loads(res.stdout.strip().splitlines()[-1])
    assert got["bad"] == [] and got["mean"] == list(spec.mean)
    from reid.inference.base import l2_normalise, preprocess_crops

    crops = [np.random.default_rng(i).integers(0, 255, (70, 30, 3), dtype=np.uint8) for i in range(3)]
    with torch.no_grad():
        ref = l2_normalise(model(torch.from_numpy(preprocess_crops(crops, spec))).numpy())
    assert (np.asarray(got["f"]) * ref).sum(1).min() >= 0.999
