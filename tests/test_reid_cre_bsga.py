"""Mu et al. (method `cre_bsga`): part masks through the augmentations, clothes erasing (CRE), the body-shape
attention (BSGA), the batch cross-clothes triplet, the outfit-aware sampler, parsing-map layouts, clear errors,
and a tiny `python -m reid train` + `export` (parity) + `eval` on the recipe."""

from __future__ import annotations

import json
import subprocess
import sys
from collections import Counter, defaultdict
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
import yaml
from PIL import Image

from reid.config import RecipeError, load_recipe
from reid.datasets import load_dataset
from reid.datasets.base import DatasetLayoutError
from reid.datasets.masks import BODY_ROLES, CLOTHES_ROLES, IGNORE, attach_masks, read_mask
from reid.inference.base import PreprocessSpec
from reid.losses import CrossClothesTripletLoss
from reid.methods.base import MethodConfigError
from reid.methods.cre_bsga import body_targets, bsga_loss, erase_clothes
from reid.models import ArchConfig, build_model
from reid.samplers import OutfitPKBatchSampler, PKBatchSampler, chunks_without_cross_outfit_positive
from reid.train import Trainer
from reid.transforms import MaskedTrainTransform, build_train_transform
from tests.reid_fixtures import make_ltcc, make_synthcc

REPO = Path(__file__).resolve().parents[1]

# Trainer switches on deterministic algorithms and sets the thread count; undo for other tests.
pytestmark = pytest.mark.usefixtures("restore_torch_globals")

SPEC = PreprocessSpec(height=64, width=32)
MEAN, STD = np.array(SPEC.mean), np.array(SPEC.std)


@pytest.fixture(scope="module")
def synth_root(tmp_path_factory):
    return make_synthcc(tmp_path_factory.mktemp("crebsga"), n_train=6, n_test=4, size=(64, 32))


def _recipe(root: Path, out: Path, **over) -> Path:
    raw = {
        "name": "cre-bsga-test", "seed": 3, "device": "cpu", "threads": 1, "output_dir": str(out),
        "data": {"dataset": "synthcc", "root": str(root), "height": 64, "width": 32, "batch_size": 8,
                 "num_instances": 4, "num_workers": 0, "cache_images": True, "sampler": "outfits"},
        "model": {"backbone": "resnet_lite", "lite_widths": [8, 8, 16, 16], "bsga": True},
        "loss": {"method": "cre_bsga", "triplet_weight": 1.0},
        "optim": {"epochs": 1, "lr": 1e-3, "milestones": [5]},
        "eval": {"every": 1, "batch_size": 32},
    }
    for k, v in over.items():
        node = raw
        *parents, leaf = k.split(".")
        for p in parents:
            node = node.setdefault(p, {})
        node[leaf] = v
    path = out.with_suffix(".yaml")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(raw))
    return path


def _trainer(root, out, **over) -> Trainer:
    return Trainer(load_recipe(_recipe(root, out, **over)), log=lambda *_: None, progress=False)


# ------------------------------------------------------------------------------------------------ CRE

def test_erasing_touches_only_clothes_pixels():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(6, 3, 16, 8, generator=g)
    masks = torch.randint(0, 8, (6, 16, 8), generator=g).to(torch.uint8)
    masks[0, :2] = IGNORE
    clothes = torch.isin(masks, torch.tensor(CLOTHES_ROLES, dtype=torch.uint8))
    for fill in ("mean", "random"):
        torch.manual_seed(1)
        y, chosen = erase_clothes(x, masks, CLOTHES_ROLES, 1.0, fill, SPEC.mean, SPEC.std)
        assert chosen.all()
        keep = ~clothes[:, None].expand_as(x)
        assert torch.equal(y[keep], x[keep])  # every non-clothes pixel (background, skin, hair, accessory, ignored)
        assert not torch.isclose(y[~keep], x[~keep]).any()  # every clothes pixel changed
        if fill == "mean":
            assert (y[~keep] == 0).all()  # the normalisation mean
        else:
            pix = y.permute(0, 2, 3, 1)[clothes] * torch.tensor(SPEC.std) + torch.tensor(SPEC.mean)
            assert pix.min() >= -1e-6 and pix.max() <= 1 + 1e-6 and pix.std() > 0.2  # random valid pixels
    torch.manual_seed(2)
    y, chosen = erase_clothes(x, masks, CLOTHES_ROLES, 0.5, "mean", SPEC.mean, SPEC.std)
    assert 0 < chosen.sum() < 6
    assert torch.equal(y[~chosen], x[~chosen])  # images not drawn are untouched
    assert torch.equal(erase_clothes(x, masks, CLOTHES_ROLES, 0.0, "mean", SPEC.mean, SPEC.std)[0], x)


def test_cre_schedule_and_share_logged(synth_root, tmp_path):
    t = _trainer(synth_root, tmp_path / "s", **{"loss.cre_bsga.cre_p": 1.0, "loss.cre_bsga.cre_start_epoch": 1,
                                               "loss.cre_bsga.cre_end_epoch": 2, "optim.epochs": 3})
    assert [t.method.cre_on(e) for e in range(3)] == [False, True, False]
    assert t.train_epoch(0)["cre_share"] == 0
    assert t.train_epoch(1)["cre_share"] == 1.0


# ------------------------------------------------------------------------------- masks and augmentation

PALETTE = np.array([[0, 0, 0], [250, 10, 10], [10, 250, 10], [10, 10, 250], [250, 250, 10], [10, 250, 250],
                    [250, 10, 250], [130, 130, 130]], np.uint8)


def _coded_pair(h=64, w=32) -> tuple[torch.Tensor, torch.Tensor]:
    """A mask of 8-pixel blocks of roles 1-7 (none on the border) and an image coloured by role."""
    rng = np.random.default_rng(5)
    mask = np.kron(rng.integers(1, 8, (h // 8, w // 8)), np.ones((8, 8), np.int64)).astype(np.uint8)
    mask[:, :2] = 0
    return torch.from_numpy(PALETTE[mask]).permute(2, 0, 1).contiguous(), torch.from_numpy(mask)


@pytest.mark.parametrize("aug", [
    {"crop_mode": "enlarge", "random_crop_p": 1.0, "hflip_p": 0.0, "erasing_p": 0.0},
    {"crop_mode": "pad", "crop_pad": 6, "hflip_p": 0.0, "erasing_p": 0.0},
    {"random_crop_p": 0.0, "hflip_p": 1.0, "erasing_p": 0.0},
    {"random_crop_p": 0.0, "hflip_p": 0.0, "erasing_p": 1.0},
    {"random_crop_p": 0.5, "hflip_p": 0.5, "erasing_p": 0.5},
    {"crop_mode": "pad", "hflip_p": 0.5, "erasing_p": 0.5, "erasing_fill": (0.0, 0.0, 0.0)},
])
def test_mask_and_image_stay_aligned_through_every_augmentation(aug):
    img, mask = _coded_pair()
    joint = MaskedTrainTransform(SPEC, **aug)
    plain = build_train_transform(SPEC, **aug)
    fill = np.array(aug.get("erasing_fill", (0.4914, 0.4822, 0.4465)))
    erased_seen = 0
    for seed in range(12):
        torch.manual_seed(seed)
        x, m = joint(img, mask)
        torch.manual_seed(seed)
        assert torch.equal(x, plain(img))  # the image path is exactly the mask-free transform's
        assert x.shape == (3, 64, 32) and m.shape == (64, 32) and m.dtype == torch.uint8
        m = m.numpy()
        xn = x.permute(1, 2, 0).numpy()
        ign = m == IGNORE
        erased_seen += ign.any()
        assert np.allclose(xn[ign], fill, atol=1e-6)  # the mask's IGNORE area is exactly the erased rectangle
        pix = np.clip((xn * STD + MEAN) * 255, 0, 255)
        # interior pixels (3x3 neighbourhood of one role in the mask) carry their role's colour
        interior = ~ign
        for dy in (-1, 0, 1):
            for dx in (-1, 0, 1):
                interior &= np.roll(np.roll(m, dy, 0), dx, 1) == m
        interior[[0, -1]] = False
        interior[:, [0, -1]] = False
        err = np.abs(pix[interior] - PALETTE[m[interior]].astype(float)).max(axis=1)
        assert interior.sum() > 500 and err.max() < 12, f"seed {seed}: image and mask disagree by {err.max():.0f}"
    if aug.get("erasing_p") == 1.0:
        assert erased_seen == 12


def test_masked_train_images_read_and_cache_the_masks(synth_root):
    from reid.transforms import MaskedTrainImages

    ds = load_dataset("synthcc", synth_root)
    joint = MaskedTrainTransform(SPEC, random_crop_p=0, hflip_p=0, erasing_p=0)
    items = MaskedTrainImages(ds.train[:3], SPEC, joint, cache=True)
    x, pid, clothes, cam, m = items[0]
    want = cv2.imread(ds.train[0].mask_path, cv2.IMREAD_UNCHANGED)
    assert torch.equal(m, torch.from_numpy(want)) and x.shape == (3, 64, 32)


# ------------------------------------------------------------------------------------------------ BSGA

def test_bsga_targets_loss_and_inference_without_mask():
    masks = torch.zeros(1, 16, 8, dtype=torch.uint8)
    masks[0, 0:8, 0:4] = 1  # top-left cell all skin (body)
    masks[0, 0:8, 4:8] = 7  # top-right all accessory (not body shape)
    masks[0, 8:16, 0:4] = 3  # bottom-left top (clothes are body shape too)
    masks[0, 8:12, 4:8] = 4
    masks[0, 12:16, 4:8] = IGNORE  # bottom-right half body, half hidden by random erasing
    share, readable = body_targets(masks, (2, 2), (1, 2, 3, 4, 5, 6))
    assert share[0, 0].tolist() == [[1.0, 0.0], [1.0, 1.0]]
    assert readable[0, 0].tolist() == [[1.0, 1.0], [1.0, 0.5]]
    logits = torch.zeros(1, 1, 2, 2, requires_grad=True)
    loss, inside = bsga_loss(logits, masks, (1, 2, 3, 4, 5, 6))
    assert loss.item() == pytest.approx(np.log(2)) and inside.item() == pytest.approx(2.5 / 3.5)
    loss.backward()
    assert logits.grad[0, 0, 0, 1] > 0 and logits.grad[0, 0, 0, 0] < 0  # push off the accessory, onto the body

    torch.manual_seed(0)
    model = build_model(ArchConfig(backbone="resnet_lite", lite_widths=(8, 8, 16, 16), bsga=True)).eval()
    x = torch.randn(2, 3, 64, 32)
    with torch.no_grad():
        f = model(x)  # no mask anywhere at inference
        fmap, att = model.backbone.forward_attention(x)
        assert att.shape == (2, 1, 4, 2) and torch.equal(f, model.bn(model.pool(fmap)))
        model.backbone.attention.out.bias.add_(5.0)  # another attention changes the retrieval feature
        assert not torch.allclose(model(x), f)
    with pytest.raises(ValueError, match="plain trunk"):
        build_model(ArchConfig(backbone="resnet_lite", lite_blocks=(1, 1, 1, 3), trunk="cssc", bsga=True))


# ------------------------------------------------------------------------------- cross-clothes triplet

def test_cross_clothes_triplet_picks_cross_outfit_positives_only():
    loss_fn = CrossClothesTripletLoss(margin=0.3, distance="euclidean")
    pids = torch.tensor([0, 0, 0, 1, 1])
    clothes = torch.tensor([0, 0, 1, 2, 3])
    feats = torch.tensor([[0.0, 0.0], [0.1, 0.0], [1.0, 0.0], [0.0, 0.8], [0.0, 2.0]])
    loss, stats = loss_fn(feats, pids, clothes)
    d = torch.cdist(feats, feats)
    # pairs (anchor, cross-outfit positive): (0,2) (1,2) (2,0) (2,1) (3,4) (4,3); hardest negative per anchor
    neg = [d[0, 3:].min(), d[1, 3:].min(), d[2, 3:].min(), d[3, :3].min(), d[4, :3].min()]
    pairs = [(0, 2), (1, 2), (2, 0), (2, 1), (3, 4), (4, 3)]
    want = sum(torch.relu(0.3 + d[a, p] - neg[a]) for a, p in pairs) / len(pairs)
    assert loss.item() == pytest.approx(want.item(), abs=1e-5)
    assert stats["xtri_anchors"].item() == 1.0
    # a same-outfit positive (image 1 of anchor 0) plays no part as a positive: moving it far away changes
    # nothing as long as it is nobody's hardest negative
    moved = feats.clone()
    moved[1] = torch.tensor([0.2, 0.0])
    d2 = torch.cdist(moved, moved)
    want2 = sum(torch.relu(0.3 + d2[a, p] - min(d2[a, j] for j in range(5) if pids[j] != pids[a]))
                for a, p in pairs) / len(pairs)
    assert loss_fn(moved, pids, clothes)[0].item() == pytest.approx(want2.item(), abs=1e-5)
    # anchors without a cross-outfit positive add nothing; a batch without any gives 0 (and a gradient path)
    one_outfit = torch.tensor([0, 0, 1, 2, 2])
    f = feats.clone().requires_grad_(True)
    loss3, stats3 = loss_fn(f, pids, one_outfit)
    assert stats3["xtri_anchors"].item() == pytest.approx(0.6)  # identity 0's three images; identity 1 has none
    l0, s0 = loss_fn(f, pids, torch.tensor([0, 0, 0, 2, 2]))
    assert l0.item() == 0 and s0["xtri_anchors"].item() == 0
    l0.backward()


# ------------------------------------------------------------------------------------------- sampler

def _labels(outfits_per_id, per_outfit):
    pids, clothes, c = [], [], 0
    for pid, (n_out, n_img) in enumerate(zip(outfits_per_id, per_outfit)):
        for _ in range(n_out):
            pids += [pid] * n_img
            clothes += [c] * n_img
            c += 1
    return pids, clothes


@pytest.mark.parametrize("k,outfits", [(4, 2), (4, 3), (6, 2)])
def test_outfit_sampler_guarantees_outfits_per_identity(k, outfits):
    # identities with 12, 3, 2 and 1 outfits; outfits of 1 to 5 images
    n_out = [12, 3, 2, 1, 12, 5, 2, 4, 3, 2, 6, 2]
    per = [3, 5, 1, 6, 2, 3, 4, 2, 1, 5, 3, 2]
    pids, clothes = _labels(n_out, per)
    outfits_of = defaultdict(set)
    for p, c in zip(pids, clothes):
        outfits_of[p].add(c)
    s = OutfitPKBatchSampler(pids, clothes, 3, k, seed=4, outfits=outfits)
    for epoch in range(4):
        s.set_epoch(epoch)
        batches = list(s)
        assert batches and all(len(b) == 3 * k for b in batches)
        used = Counter()
        for b in batches:
            groups = defaultdict(list)
            for i in b:
                groups[pids[i]].append(clothes[i])
            assert len(groups) == 3 and all(len(v) == k for v in groups.values())
            for p, cs in groups.items():
                assert len(set(cs)) >= min(outfits, len(outfits_of[p])), (epoch, p, cs)
            used.update(b)
        # every image about once: most images drawn (batches stop when fewer than P identities have chunks
        # left, as in the plain sampler: 80-82 % here), none of an identity with >= 2K images drawn 3 times
        assert len(used) >= 0.75 * len(pids)
        n = Counter(pids)
        assert max(c for i, c in used.items() if n[pids[i]] >= 2 * k) <= 2 + (k == 6)
    s.set_epoch(1)
    again = OutfitPKBatchSampler(pids, clothes, 3, k, seed=4, outfits=outfits)
    again.set_epoch(1)
    assert list(again) == list(s)  # depends only on (seed, epoch)


def test_plain_pk_sampler_can_miss_cross_outfit_positives_and_the_outfit_sampler_cannot():
    # two outfits of 6 and 2 images: K = 4 from the 8 is one outfit in 15 of 70 draws
    pids = [p for p in range(10) for _ in range(8)]
    clothes = [2 * p + (j >= 6) for p in range(10) for j in range(8)]
    pk = PKBatchSampler(pids, 4, 4, seed=0)
    outfit = OutfitPKBatchSampler(pids, clothes, 4, 4, seed=0)
    bad_pk = bad_outfit = 0
    for e in range(5):
        pk.set_epoch(e)
        outfit.set_epoch(e)
        bad_pk += chunks_without_cross_outfit_positive(list(pk), pids, clothes)[0]
        bad_outfit += chunks_without_cross_outfit_positive(list(outfit), pids, clothes)[0]
    assert bad_pk > 0 and bad_outfit == 0


def test_outfit_sampler_is_refused_to_methods_without_clothes_labels(synth_root, tmp_path):
    with pytest.raises(RecipeError, match="data.sampler outfits"):
        _trainer(synth_root, tmp_path / "f", **{"loss.method": "fire2", "model.bsga": False})
    with pytest.raises(RecipeError, match="outfits_per_identity"):
        load_recipe(_recipe(synth_root, tmp_path / "k", **{"data.outfits_per_identity": 5}))


# --------------------------------------------------------------------- masks of real data sets, errors

def test_recipe_needing_masks_on_a_data_set_without_them_fails_at_start(synth_root, tmp_path):
    import shutil

    bare = tmp_path / "bare"
    shutil.copytree(synth_root, bare, ignore=shutil.ignore_patterns("masks"))
    with pytest.raises(MethodConfigError) as err:
        _trainer(bare, tmp_path / "a")
    msg = str(err.value)
    assert "\n" not in msg and "synthcc" in msg and "data.masks" in msg and "CRE" in msg and "BSGA" in msg
    with pytest.raises(MethodConfigError, match="BSGA .*data.masks"):
        _trainer(bare, tmp_path / "b", **{"loss.cre_bsga.cre_p": 0})
    # the cross-clothes triplet alone needs no mask
    t = _trainer(bare, tmp_path / "c", **{"loss.cre_bsga.cre_p": 0, "model.bsga": False})
    assert t.train_epoch(0)["xtri_loss"] > 0
    # the real-data recipes need data.masks and stop at start without it
    root = make_ltcc(tmp_path / "ltcc")
    r = load_recipe(REPO / "configs/reid/ltcc_cre_bsga_r50.yaml",
                    {"data.root": str(root), "model.pretrained": None, "model.backbone": "resnet_lite"})
    with pytest.raises(MethodConfigError, match="data set ltcc .*set data.masks"):
        Trainer(r, log=lambda *_: None, progress=False)


def test_an_extra_set_without_masks_trains_only_when_declared_unmasked(synth_root, tmp_path):
    """data.extra_train [{..., unmasked: true}] (crops of scene videos have no part masks): its images train
    with an all-unreadable mask, so CRE erases nothing there and is not counted as erasing, BSGA gives them no
    weight; undeclared, a set without masks still stops the run at start."""
    import shutil

    from reid.datasets.masks import UNREADABLE

    bare = tmp_path / "bare"
    shutil.copytree(synth_root, bare, ignore=shutil.ignore_patterns("masks"))
    with pytest.raises(MethodConfigError, match="data.masks"):
        _trainer(synth_root, tmp_path / "a", **{"data.extra_train": [{"dataset": "synthcc", "root": str(bare)}]})
    t = _trainer(synth_root, tmp_path / "b", **{
        "data.extra_train": [{"dataset": "synthcc", "root": str(bare), "unmasked": True}],
        "loss.cre_bsga.cre_p": 1.0})
    records = t.train_set.records
    unmasked = [i for i, r in enumerate(records) if r.mask_path == UNREADABLE]
    assert len(unmasked) == len(records) // 2 and all(str(bare) in records[i].path for i in unmasked)
    for i in (unmasked[0], unmasked[-1]):
        assert (t.train_set[i][4] == IGNORE).all()
    masked = next(i for i in range(len(records)) if i not in set(unmasked))
    assert (t.train_set[masked][4] != IGNORE).any()
    # every image drawn for CRE (p = 1), but only the masked half has clothes pixels to erase
    assert 0.2 < t.train_epoch(0)["cre_share"] < 0.8
    x = torch.randn(2, 3, 64, 32)
    masks = torch.stack([t.train_set[unmasked[0]][4], t.train_set[masked][4]])
    y, chosen = erase_clothes(x, masks, CLOTHES_ROLES, 1.0, "mean", SPEC.mean, SPEC.std)
    assert chosen.tolist() == [False, True] and torch.equal(y[0], x[0])
    loss, _ = bsga_loss(torch.randn(1, 1, 8, 4), masks[:1], BODY_ROLES)
    assert loss == 0  # no readable cell: no weight


def _palette_png(path: Path, classes: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    im = Image.fromarray(classes.astype(np.uint8), mode="P")
    im.putpalette([v for i in range(256) for v in ((i * 37) % 256, (i * 91) % 256, (i * 13) % 256)])
    im.save(path)


def test_lip_and_atr_parsing_maps_map_to_the_same_roles(tmp_path):
    lip = np.array([[0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19]])
    _palette_png(tmp_path / "lip.png", lip)
    assert read_mask(str(tmp_path / "lip.png"), "lip").tolist() == [
        [0, 6, 2, 6, 7, 3, 3, 6, 5, 4, 3, 6, 4, 1, 1, 1, 1, 1, 5, 5]]
    atr = np.array([[0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17]])
    cv2.imwrite(str(tmp_path / "atr.png"), atr.astype(np.uint8))  # grey PNG
    assert read_mask(str(tmp_path / "atr.png"), "atr").tolist() == [
        [0, 6, 2, 7, 3, 4, 4, 3, 4, 5, 5, 1, 1, 1, 1, 1, 6, 6]]
    cv2.imwrite(str(tmp_path / "rgb.png"), np.zeros((4, 4, 3), np.uint8))
    with pytest.raises(DatasetLayoutError, match="one class index per pixel"):
        read_mask(str(tmp_path / "rgb.png"), "lip")

    root = make_ltcc(tmp_path / "data")
    ds = load_dataset("ltcc", root)
    parsing = tmp_path / "parsing"
    for r in ds.train[:-1]:
        _palette_png((parsing / Path(r.path).relative_to(ds.root)).with_suffix(".png"), np.full((16, 8), 5))
    last = ds.train[-1]
    want = str((parsing / Path(last.path).relative_to(ds.root)).with_suffix(".png"))
    with pytest.raises(DatasetLayoutError, match=r"ltcc: 1 of 4 training images have no parsing map") as err:
        attach_masks(load_dataset("ltcc", root), parsing)
    assert str(err.value).endswith(want)
    _palette_png((parsing / Path(last.path).relative_to(ds.root)).with_suffix(".png"), np.full((16, 8), 13))
    ds = attach_masks(load_dataset("ltcc", root), parsing)
    assert [int(read_mask(r.mask_path, "lip")[0, 0]) for r in ds.train] == [3, 3, 3, 1]


# ------------------------------------------------------------------------------------ training loop

def test_all_parts_off_trains_exactly_as_the_baseline(synth_root, tmp_path):
    base = _trainer(synth_root, tmp_path / "b", **{"loss.method": "baseline", "model.bsga": False,
                                                   "data.sampler": "pk"})
    off = _trainer(synth_root, tmp_path / "o", **{"model.bsga": False, "data.sampler": "pk",
                                                  "loss.cre_bsga.cre_p": 0, "loss.cre_bsga.xtri_weight": 0})
    a, b = base.train_epoch(0), off.train_epoch(0)
    assert a["loss"] == b["loss"] and a["id_loss"] == b["id_loss"] and a["tri_loss"] == b["tri_loss"]
    assert all(torch.equal(p, q) for p, q in zip(base.model.parameters(), off.model.parameters()))


def test_full_method_trains_every_part_and_resumes(synth_root, tmp_path):
    def train(out, epochs, resume=None):
        t = _trainer(synth_root, out, **{"optim.epochs": epochs})
        if resume:
            t.resume(resume)
        return t, t.run()

    t, straight = train(tmp_path / "a", 2)
    last = json.loads((tmp_path / "a" / "history.jsonl").read_text().splitlines()[-1])["train"]
    assert last["xtri_loss"] > 0 and last["bsga_loss"] > 0 and 0 < last["cre_share"] < 1
    assert last["xtri_anchors"] == 1.0  # the outfit sampler: every anchor has a cross-outfit positive
    train(tmp_path / "b", 1)
    _, resumed = train(tmp_path / "b", 2, resume=tmp_path / "b" / "last.safetensors")
    assert resumed["last"] == straight["last"]


# ----------------------------------------------------------------------------- recipes and benchmark

@pytest.mark.parametrize("name", ["synthcc_cpu_cre_bsga", "prcc_cre_bsga_r50", "ltcc_cre_bsga_r50",
                                  "vcclothes_cre_bsga_r50"])
def test_cre_bsga_recipes_parse(name):
    r = load_recipe(REPO / "configs" / "reid" / f"{name}.yaml")
    assert r.loss.method == "cre_bsga" and r.model.bsga and r.data.sampler == "outfits"
    assert r.loss.cre_bsga.cre_p > 0 and r.loss.cre_bsga.xtri_weight > 0
    assert (r.data.masks is None) == (name != "synthcc_cpu_cre_bsga") or r.data.dataset == "synthcc"


def test_benchmark_rows_switch_one_part_each():
    import importlib.util

    from reid.__main__ import _parse_set

    spec = importlib.util.spec_from_file_location("reid_synthcc", REPO / "benchmarks" / "reid_synthcc.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    want = {"cre_bsga": (True, True, True, "outfits"), "cre_only": (True, False, False, "pk"),
            "bsga_only": (False, True, False, "pk"), "xtriplet_only": (False, False, True, "outfits"),
            "cre_bsga_no_cre": (False, True, True, "outfits"), "cre_bsga_no_bsga": (True, False, True, "outfits"),
            "cre_bsga_no_xtri": (True, True, False, "pk")}
    for label, (cre, bsga, xtri, sampler) in want.items():
        recipe, sets, knobs = bench.ROWS[label]
        r = load_recipe(REPO / "configs" / "reid" / f"{recipe}.yaml", _parse_set(sets))
        c = r.loss.cre_bsga
        assert ((c.cre_p > 0), r.model.bsga, (c.xtri_weight > 0), r.data.sampler) == (cre, bsga, xtri, sampler), label
        assert not knobs and label in bench.TITLES
    r = load_recipe(REPO / "configs/reid/synthcc_cpu_baseline.yaml", _parse_set(bench.ROWS["outfit_sampler_only"][1]))
    assert r.loss.method == "baseline" and r.data.sampler == "outfits"


def test_cli_train_export_parity_and_eval(synth_root, tmp_path, shared_video, capsys):
    """`python -m reid train` on the recipe in a subprocess (the real CLI), then `export` (ONNX, parity on real
    crops) and `eval` through the same CLI entry point in this process (saves two torch start-ups)."""
    from reid.__main__ import main

    out = tmp_path / "run"
    cmd = [sys.executable, "-m", "reid", "train", str(REPO / "configs/reid/synthcc_cpu_cre_bsga.yaml"),
           "--root", str(synth_root), "--output-dir", str(out), "--epochs", "1", "--threads", "1", "--no-progress",
           "--set", "data.height=64", "--set", "data.width=32", "--set", "data.batch_size=8",
           "--set", "model.lite_widths=[8,8,16,16]"]
    run = subprocess.run(cmd, check=False, cwd=REPO, capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr[-2000:]
    hist = json.loads((out / "history.jsonl").read_text().splitlines()[0])["train"]
    assert hist["bsga_loss"] > 0 and hist["xtri_loss"] > 0 and hist["cre_share"] > 0
    weights = str(out / "model_last.safetensors")
    assert main(["export", "--weights", weights, "--format", "onnx", "--threads", "1",
                 "--parity-video", str(shared_video["pets"]), "--parity-gt", str(shared_video["pets_gt"])]) == 0
    report = json.loads((out / "model_last.onnx.export.json").read_text())
    assert report["passed"] and report["parity"][0]["cosine_min"] >= 0.999
    capsys.readouterr()
    assert main(["eval", "--weights", weights, "--dataset", "synthcc", "--root", str(synth_root), "--threads", "1",
                 "--no-progress"]) == 0
    assert "test/cloth_changing" in capsys.readouterr().out


def test_camera_jitter_changes_colours_only_and_draws_nothing_when_off():
    from pydantic import ValidationError

    from reid.config import AugmentConfig
    from reid.transforms import CameraJitter

    img, mask = _coded_pair()
    off = CameraJitter(0.0, 0.2, 0.1, 0.15)
    torch.manual_seed(0)
    state = torch.get_rng_state()
    assert torch.equal(off(img), img) and torch.equal(torch.get_rng_state(), state)  # recipes without it unchanged
    on = CameraJitter(1.0, 0.2, 0.1, 0.15)
    grey = torch.full((3, 8, 8), 128, dtype=torch.uint8)
    lo, hi = (0.502 * 0.8 * 0.9) ** 1.15 * 255, (0.502 * 1.2 * 1.1) ** 0.85 * 255
    casts = []
    for seed in range(20):
        torch.manual_seed(seed)
        y = on(grey).float()
        assert y.min() >= lo - 1 and y.max() <= hi + 1
        casts.append((y[0, 0, 0] - y[2, 0, 0]).item())
    assert np.ptp(casts) > 10  # channels get their own gains: the colour cast varies from image to image

    # Through the recipe key, in both training paths; geometry (the mask) is untouched.
    aug = AugmentConfig(camera_jitter_p=1.0, erasing_p=0).model_dump()
    assert any(isinstance(t, CameraJitter) for t in build_train_transform(SPEC, **aug).transforms)
    assert not any(isinstance(t, CameraJitter) for t in build_train_transform(SPEC).transforms)
    jittered, plain = MaskedTrainTransform(SPEC, **aug), MaskedTrainTransform(SPEC, erasing_p=0)
    for seed in range(5):
        torch.manual_seed(seed)
        xj, mj = jittered(img, mask)
        torch.manual_seed(seed)
        xp, mp = plain(img, mask)
        assert torch.equal(mj, mp) and not torch.equal(xj, xp)
    with pytest.raises(ValidationError):
        AugmentConfig(camera_jitter_p=1.5)
