"""FIRe²: per-identity clustering (FFM), pseudo-labels, recomposition (FAR), and no clothes labels in training."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
import yaml

from reid.config import load_recipe
from reid.datasets import load_dataset
from reid.fire2 import (AttributeAwareLoss, cluster_purity, draw_donors, effective_k, jaccard_distance,
                        mine_attributes, part_statistics, recompose)
from reid.train import Trainer
from synth.people import generate_people
from synth.presets import PEOPLE_PRESETS

REPO = Path(__file__).resolve().parents[1]


# Trainer switches on deterministic algorithms and sets the thread count; undo for other tests.
pytestmark = pytest.mark.usefixtures("restore_torch_globals")


@pytest.fixture(scope="module")
def synthcc(tmp_path_factory) -> Path:
    """SynthCC `tiny` (8 training ids x 3 outfits) with 4 images per camera: 24 images per identity."""
    out = tmp_path_factory.mktemp("fire2") / "synthcc"
    generate_people(replace(PEOPLE_PRESETS["tiny"], images_per_cam=4), 0, out, preset="tiny", log=lambda _m: None)
    return out


def _thumbnail(path: str) -> np.ndarray:
    """A label-free appearance feature: the centre of the crop at 8x4 pixels, centred and L2-normalised."""
    img = cv2.imread(path)
    h, w = img.shape[:2]
    x = cv2.resize(img[h // 8: 7 * h // 8, w // 4: 3 * w // 4], (4, 8), interpolation=cv2.INTER_AREA)
    x = x.astype(np.float32).ravel()
    x -= x.mean()
    return x / np.linalg.norm(x)


# ------------------------------------------------------------------------------------------- clustering

def test_clusters_of_synthetic_identities_recover_their_outfits(synthcc):
    ds = load_dataset("synthcc", str(synthcc))
    feats = np.stack([_thumbnail(r.path) for r in ds.train])
    pids = np.array([r.pid for r in ds.train])
    clothes = np.array([r.clothes for r in ds.train])  # evaluation only: the clustering never sees them
    attrs = mine_attributes(feats, pids, eps=0.5, k1=20, k2=6, k1_fraction=0.34)
    purity, inverse = cluster_purity(attrs.labels, clothes)
    outfits_per_id = len(np.unique(clothes)) / len(np.unique(pids))
    assert outfits_per_id == 3
    assert purity >= 0.9 and inverse >= 0.8, (purity, inverse)
    assert outfits_per_id <= attrs.stats()["clusters_per_id"] <= 2 * outfits_per_id
    # The reference k1 = 20 on 24-image identities links the outfits together: far fewer pure clusters.
    ref = mine_attributes(feats, pids, eps=0.5, k1=20, k2=6, k1_fraction=1.0)
    assert cluster_purity(ref.labels, clothes)[0] < purity - 0.2


def test_jaccard_distance_works_for_identities_with_few_images():
    rng = np.random.default_rng(0)
    for n in (1, 2, 3, 5, 12, 20):
        x = rng.normal(size=(n, 16))
        x /= np.linalg.norm(x, axis=1, keepdims=True)
        k1, k2 = effective_k(n, 20, 6, 0.34)
        assert (n < 2 and k1 == 0) or 2 <= k1 <= n  # neighbour counts include the image itself
        for kk1, kk2 in ((max(k1, 1), max(k2, 1)), (20, 6)):  # also the reference values, which get clamped
            d = jaccard_distance(x, kk1, kk2)
            assert d.shape == (n, n) and np.isfinite(d).all()
            assert np.allclose(d, d.T) and np.allclose(np.diag(d), 0) and (d >= 0).all() and (d <= 1 + 1e-6).all()
    # two tight, well separated groups: small distance inside, 1 across
    base = rng.normal(size=(2, 16))
    x = np.repeat(base, 6, axis=0) + 0.01 * rng.normal(size=(12, 16))
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    d = jaccard_distance(x, *effective_k(12, 20, 6, 0.5))
    same = np.repeat(np.arange(2), 6)
    inside = same[:, None] == same[None]
    assert d[inside].max() < 0.2 and d[~inside].min() > 0.95


def _reference_jaccard(x: np.ndarray, k1: int, k2: int) -> np.ndarray:
    """The FIRe² code's Jaccard step written as loops, from its description (methods.md §3.2, §9): a kNN list of
    k1 columns with the image itself first, k-reciprocal sets read from it, expansion by the round(k1/2) sets,
    softmax weights over exp(-(2 - 2cos)), query expansion over the k2 nearest, d = 1 - m / (2 - m)."""
    n = len(x)
    d = 2.0 - 2.0 * (x @ x.T)
    np.fill_diagonal(d, 0.0)
    knn = np.argsort(d, axis=1, kind="stable")[:, :k1]

    def k_reciprocal(i: int, k: int) -> np.ndarray:
        forward = knn[i, :k + 1]
        backward = knn[forward, :k + 1]
        return forward[(backward == i).any(axis=1)]

    sets = [k_reciprocal(i, k1) for i in range(n)]
    halves = [k_reciprocal(i, int(np.around(k1 / 2))) for i in range(n)]
    v = np.zeros((n, n))
    for i in range(n):
        expansion = sets[i]
        for c in sets[i]:
            h = halves[c]
            if len(np.intersect1d(h, sets[i])) > 2 / 3 * len(h):
                expansion = np.append(expansion, h)
        expansion = np.unique(expansion)
        w = np.exp(-d[i, expansion])
        v[i, expansion] = w / w.sum()
    if k2 != 1:
        v = np.stack([v[knn[i, :k2]].mean(axis=0) for i in range(n)])
    out = np.zeros((n, n))
    for i in range(n):
        m = np.minimum(v[i][None, :], v).sum(axis=1)
        out[i] = 1.0 - m / (2.0 - m)
    return np.clip(out, 0.0, None)


def test_jaccard_distance_matches_the_authors_algorithm_and_k1_rule():
    rng = np.random.default_rng(3)
    centres = rng.normal(size=(4, 32))
    x = np.repeat(centres, 12, axis=0) + 0.6 * rng.normal(size=(48, 32))  # 48 images in 4 loose groups
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    for k1, k2 in ((20, 6), (11, 3), (5, 1)):
        np.testing.assert_allclose(jaccard_distance(x, k1, k2), _reference_jaccard(x, k1, k2), atol=1e-5)
    # The authors' rule (k1_fraction 1.0): k1 = 20 images, the image itself included, for any identity with >= 20
    # images; below that only the images there are. The SynthCC variant's cap (0.34) cuts k1 to a third.
    assert effective_k(120, 20, 6, 1.0) == (20, 6)
    assert effective_k(36, 20, 6, 1.0) == (20, 6)
    assert effective_k(12, 20, 6, 1.0) == (12, 4)
    assert effective_k(36, 20, 6, 0.34) == (12, 4)


def test_pseudo_labels_never_collide_across_identities():
    rng = np.random.default_rng(1)
    f = rng.normal(size=(10, 8))
    # identities 0 and 1 have *identical* features (shared outfits); 2 has a single image; 3 has random ones
    feats = np.concatenate([f, f, f[:1], rng.normal(size=(7, 8))])
    pids = np.array([0] * 10 + [1] * 10 + [2] + [3] * 7)
    a = mine_attributes(feats, pids, eps=0.5)
    assert a.labels.min() == 0 and a.labels.max() == a.num_classes - 1
    assert len(np.unique(a.labels)) == a.num_classes  # no empty class
    owner_of_image = a.owner[a.labels]
    assert (owner_of_image == pids).all()  # each pseudo-label belongs to the one identity that owns it
    for p, q in ((0, 1), (0, 2), (1, 3)):
        assert not set(a.labels[pids == p]) & set(a.labels[pids == q])
    assert (a.pid2attr(4).sum(0) == 1).all()
    # centroids are means of normalised features of each class
    fn = feats / np.linalg.norm(feats, axis=1, keepdims=True)
    k = a.labels[0]
    assert np.allclose(a.centroids[k], fn[a.labels == k].mean(0), atol=1e-6)


# -------------------------------------------------------------------------------------------------- FAR

def test_recomposition_swaps_exactly_the_part_statistics():
    torch.manual_seed(0)
    b, c, h, w, parts = 6, 5, 8, 4, 2
    scale = torch.rand(b, c, 1, 1) * 3 + 0.5  # std >= 0.5, so the 1e-6 added to variances is below 1e-5 relative
    x = (torch.randn(b, c, h, w) * scale + torch.randn(b, c, 1, 1)).double().requires_grad_(True)
    attr = torch.tensor([0, 0, 1, 1, 2, 3])
    donors = draw_donors(attr, parts, generator=torch.Generator().manual_seed(1))
    assert donors.shape == (parts, b)
    assert (attr[donors] != attr[None]).all()  # always another pseudo-label
    y = recompose(x, donors)
    mu_x, sd_x = part_statistics(x.detach(), parts)
    mu_y, sd_y = part_statistics(y.detach(), parts)
    for k in range(parts):
        assert torch.allclose(mu_y[:, k], mu_x[donors[k], k], rtol=0, atol=1e-9)
        assert torch.allclose(sd_y[:, k], sd_x[donors[k], k], rtol=1e-5, atol=1e-6)
    # the content (normalised map) is the sample's own, in every part
    for xs, ys in zip(torch.tensor_split(x.detach(), parts, 2), torch.tensor_split(y.detach(), parts, 2)):
        def norm(t):
            f = t.flatten(2)
            return (f - f.mean(-1, keepdim=True)) / f.std(-1, keepdim=True)
        assert torch.allclose(norm(xs), norm(ys), atol=1e-9)
    # statistics are detached: sample 0's output sends no gradient to its donors
    y[0].sum().backward()
    assert x.grad[1:].abs().sum() == 0 and x.grad[0].abs().sum() > 0
    # a pseudo-label that fills the batch leaves the sample unchanged (its own donor)
    same = draw_donors(torch.zeros(3, dtype=torch.long), 2)
    assert (same == torch.arange(3)).all()
    z = torch.randn(3, 2, 4, 2)
    assert torch.allclose(recompose(z, same), z, atol=1e-4)


def test_donors_are_deterministic_with_a_seed():
    attr = torch.tensor([0, 1, 1, 2, 3, 3, 4, 5])
    a = draw_donors(attr, 2, generator=torch.Generator().manual_seed(5))
    b = draw_donors(attr, 2, generator=torch.Generator().manual_seed(5))
    assert torch.equal(a, b)


def test_attribute_aware_loss_matches_its_formula():
    torch.manual_seed(0)
    cos = torch.rand(4, 5) * 2 - 1
    attr = torch.tensor([0, 1, 3, 4])
    same_id = torch.tensor([[1, 1, 1, 0, 0], [1, 1, 1, 0, 0], [0, 0, 0, 1, 1], [0, 0, 0, 1, 1]], dtype=torch.bool)
    loss = AttributeAwareLoss(16.0, 0.1)(cos, attr, same_id)
    logp = torch.log_softmax(16 * cos, 1)
    expected = 0.0
    for i in range(4):
        members = same_id[i].nonzero().flatten()
        q = torch.zeros(5)
        q[members] = 0.1 / len(members)
        q[attr[i]] += 0.9
        expected -= (q * logp[i]).sum() / 4
    assert torch.allclose(loss, expected)


# ---------------------------------------------------------------------------------------------- training

def _recipe(root: Path, out: Path, **fire2) -> Path:
    raw = {
        "name": "fire2-test", "seed": 5, "device": "cpu", "threads": 1, "output_dir": str(out),
        "data": {"dataset": "synthcc", "root": str(root), "height": 64, "width": 32, "batch_size": 16,
                 "num_instances": 4, "num_workers": 0, "cache_images": True},
        "model": {"backbone": "resnet_lite", "lite_widths": [8, 8, 16, 16]},
        "loss": {"method": "fire2", "triplet_weight": 1.0,
                 "fire2": {"start_epoch": 1, "eps": 0.5, "reset_optimizer": True, **fire2}},
        "optim": {"epochs": 3, "lr": 1e-3, "milestones": [2]},
        "eval": {"every": 3, "batch_size": 64},
    }
    path = out.with_suffix(".yaml")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(raw))
    return path


def _run(recipe: Path, scramble: str | None = None, monkeypatch=None):
    if scramble:
        import reid.train as train_mod

        real = train_mod.load_dataset

        def scrambled(name, root):
            ds = real(name, root)
            rng = np.random.default_rng(123)
            if scramble == "permute":
                clothes = rng.permutation([r.clothes for r in ds.train])
            else:  # "absent"
                clothes = np.full(len(ds.train), -7)
            ds.train = [replace(r, clothes=int(c)) for r, c in zip(ds.train, clothes)]
            ds.pid2clothes = rng.random(ds.pid2clothes.shape) > 0.5
            return ds

        monkeypatch.setattr(train_mod, "load_dataset", scrambled)
    t = Trainer(load_recipe(recipe), log=lambda *_: None, progress=False)
    summary = t.run()
    if scramble:
        monkeypatch.undo()
    return t, summary


def test_fire2_training_never_reads_clothes_labels(synthcc, tmp_path, monkeypatch):
    a, sa = _run(_recipe(synthcc, tmp_path / "a"))
    assert all(r.clothes == -1 for r in a.train_set.records)  # removed before anything could read them
    hist = [json.loads(x) for x in (tmp_path / "a" / "history.jsonl").read_text().splitlines()]
    assert "fire2" not in hist[0] and hist[0]["train"]["ffm_loss"] == 0
    assert hist[1]["fire2"]["classes"] >= 8 and hist[1]["train"]["ffm_loss"] > 0 and hist[1]["train"]["far_loss"] > 0
    assert (tmp_path / "a" / "fire2" / "labels_epoch003.npy").is_file()
    for mode, name in (("permute", "b"), ("absent", "c")):
        b, sb = _run(_recipe(synthcc, tmp_path / name), scramble=mode, monkeypatch=monkeypatch)
        sa_state, sb_state = a.model.state_dict(), b.model.state_dict()
        assert all(torch.equal(sa_state[k], sb_state[k]) for k in sa_state), mode
        hb = [json.loads(x) for x in (tmp_path / name / "history.jsonl").read_text().splitlines()]
        assert [h["train"] for h in hb] == [h["train"] for h in hist], mode
        assert [h.get("fire2", {}).get("classes") for h in hb] == [h.get("fire2", {}).get("classes") for h in hist]
        assert np.array_equal(np.load(tmp_path / name / "fire2" / "labels_epoch003.npy"),
                              np.load(tmp_path / "a" / "fire2" / "labels_epoch003.npy"))
    # the inference checkpoint carries no training head
    from reid.checkpoint import load_checkpoint

    model, spec = load_checkpoint(tmp_path / "a" / "model_last.safetensors")
    assert not hasattr(model, "far_head") and model.id_head is None and spec.method == "fire2"
    assert "far" in a.method.heads
    assert sa["last"] == a.summary()["last"]


def test_fire2_without_far_has_no_far_head_and_resume_matches(synthcc, tmp_path):
    t, s = _run(_recipe(synthcc, tmp_path / "n", far_weight=0.0))
    assert "far" not in t.method.heads
    hist = [json.loads(x)["train"] for x in (tmp_path / "n" / "history.jsonl").read_text().splitlines()]
    assert hist[2]["ffm_loss"] > 0 and hist[2]["far_loss"] == 0
    # two epochs, then resume to three: identical to three straight epochs (pseudo-labels are recomputed)
    r = _recipe(synthcc, tmp_path / "m", far_weight=0.0)
    raw = yaml.safe_load(r.read_text())
    raw["optim"]["epochs"] = 2
    r.write_text(yaml.safe_dump(raw))
    Trainer(load_recipe(r), log=lambda *_: None, progress=False).run()
    raw["optim"]["epochs"] = 3
    r.write_text(yaml.safe_dump(raw))
    t2 = Trainer(load_recipe(r), log=lambda *_: None, progress=False)
    t2.resume(tmp_path / "m" / "last.safetensors")
    s2 = t2.run()
    assert s2["last"] == s["last"]


@pytest.mark.parametrize("name", sorted(p.name for p in (REPO / "configs" / "reid").glob("*fire2*.yaml")))
def test_fire2_recipes_parse(name):
    r = load_recipe(REPO / "configs" / "reid" / name)
    assert r.loss.method == "fire2" and r.loss.fire2.far_weight > 0 and r.loss.fire2.ffm_weight > 0
