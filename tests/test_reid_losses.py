"""Losses against hand-computed values, and the P x K sampler."""

import math

import pytest
import torch

from reid.losses import ClothesBasedAdversarialLoss, ClothesClassificationLoss, CrossEntropyLabelSmooth, TripletLoss
from reid.models.heads import CosineClassifier
from reid.samplers import PKBatchSampler


def test_label_smoothed_ce_hand_value():
    # logits (1, 2, 3), target 2, eps 0.1, N = 3: q = (1/30, 1/30, 0.9 + 1/30)
    lse = math.log(math.e ** 1 + math.e ** 2 + math.e ** 3)
    expected = -((0.1 / 3) * (1 - lse) + (0.1 / 3) * (2 - lse) + (0.9 + 0.1 / 3) * (3 - lse))
    assert expected == pytest.approx(0.507606, abs=1e-6)
    got = CrossEntropyLabelSmooth(0.1)(torch.tensor([[1.0, 2.0, 3.0]]), torch.tensor([2]))
    assert got.item() == pytest.approx(expected, abs=1e-6)


def test_batch_hard_triplet_euclidean_hand_value():
    f = torch.tensor([[0.0, 0.0], [1.0, 0.0], [0.0, 2.0], [3.0, 0.0]])
    y = torch.tensor([0, 0, 1, 1])
    # anchors 0, 1: pos 1, hardest neg 2 -> hinge 0; anchors 2, 3: pos sqrt(13), hardest neg 2
    expected = 2 * (math.sqrt(13) - 2 + 0.3) / 4
    assert TripletLoss(0.3, "euclidean")(f, y).item() == pytest.approx(expected, abs=1e-5)


def test_batch_hard_triplet_cosine_hand_value():
    r = 1 / math.sqrt(2)
    f = torch.tensor([[1.0, 0.0], [0.0, 1.0], [r, r], [-1.0, 0.0]])
    y = torch.tensor([0, 0, 1, 1])
    # distances 1 - cos: a/b: pos 1, hardest neg 1 - r; c: pos 1 + r, neg 1 - r; d: pos 1 + r, neg 1
    expected = (2 * (1 - (1 - r) + 0.3) + (1 + r - (1 - r) + 0.3) + (1 + r - 1 + 0.3)) / 4
    assert expected == pytest.approx(1.183883, abs=1e-6)
    assert TripletLoss(0.3, "cosine")(f * 5, y).item() == pytest.approx(expected, abs=1e-5)  # scale-invariant


def test_triplet_needs_pk_batches():
    with pytest.raises(ValueError, match="P x K"):
        TripletLoss()(torch.randn(3, 4), torch.tensor([0, 1, 2]))


def test_clothes_classification_is_scaled_cosine_ce():
    cos = torch.tensor([[0.5, 0.2, -0.1]])
    z = [16 * 0.5, 16 * 0.2, 16 * -0.1]
    expected = -(z[1] - math.log(sum(math.exp(v) for v in z)))
    assert ClothesClassificationLoss(16)(cos, torch.tensor([1])).item() == pytest.approx(expected, rel=1e-5)


def test_adversarial_loss_hand_value_masks_other_positive_clothes():
    # Sample 0: identity owns clothes {0, 1}, wears 0. Sample 1: identity owns {2}, wears 2.
    cos = torch.tensor([[0.5, 0.2, -0.1], [0.1, 0.3, 0.4]])
    clothes = torch.tensor([0, 2])
    pos = torch.tensor([[True, True, False], [False, False, True]])
    s, eps = 16.0, 0.1
    z0 = [s * v for v in (0.5, 0.2, -0.1)]
    # normaliser of each positive class: itself + negatives only (class 1 is left out for class 0 and vice versa)
    logp00 = z0[0] - math.log(math.exp(z0[0]) + math.exp(z0[2]))
    logp01 = z0[1] - math.log(math.exp(z0[1]) + math.exp(z0[2]))
    loss0 = -((1 - eps + eps / 2) * logp00 + (eps / 2) * logp01)
    z1 = [s * v for v in (0.1, 0.3, 0.4)]
    logp12 = z1[2] - math.log(math.exp(z1[2]) + math.exp(z1[0]) + math.exp(z1[1]))
    loss1 = -(1.0 * logp12)  # one outfit: q = (1 - eps) + eps / 1 on it
    expected = (loss0 + loss1) / 2
    got = ClothesBasedAdversarialLoss(s, eps)(cos, clothes, pos).item()
    assert got == pytest.approx(expected, rel=1e-5)
    # A plain softmax over all clothes would differ: the mask matters.
    plain = torch.nn.functional.cross_entropy(s * cos, clothes).item()
    assert abs(plain - got) > 1e-3


def test_adversarial_loss_rejects_mask_without_own_clothes():
    with pytest.raises(ValueError, match="own clothes"):
        ClothesBasedAdversarialLoss()(torch.zeros(1, 2), torch.tensor([0]), torch.tensor([[False, True]]))


def test_adversarial_loss_trains_features_not_clothes_head():
    head = CosineClassifier(4, 3)
    f = torch.randn(2, 4, requires_grad=True)
    loss = ClothesBasedAdversarialLoss()(head(f, detach_weight=True), torch.tensor([0, 2]),
                                         torch.tensor([[True, True, False], [False, False, True]]))
    loss.backward()
    assert f.grad is not None and f.grad.abs().sum() > 0
    assert head.weight.grad is None


def test_clothes_classifier_rows_start_at_unit_norm_as_simple_ccreid():
    torch.manual_seed(0)
    head = CosineClassifier(256, 500)
    norms = head.weight.detach().norm(dim=1)
    assert torch.allclose(norms, torch.ones_like(norms), atol=1e-5)
    # uniform(-1, 1) directions, not a near-zero Gaussian: entries spread around 1/sqrt(d/3) in magnitude
    w = head.weight.detach()
    assert 0.5 / 256 ** 0.5 < w.abs().mean() < 2.0 / 256 ** 0.5
    # Why it matters: one Adam step (lr 1e-3) turns a unit-norm row by well under what it turns a N(0, 0.01) row.
    def turn(weight: torch.Tensor) -> float:
        p = torch.nn.Parameter(weight.clone())
        opt = torch.optim.Adam([p], lr=1e-3)
        feats = torch.nn.functional.normalize(torch.randn(64, 256, generator=torch.Generator().manual_seed(1)), dim=1)
        loss = torch.nn.functional.cross_entropy(16 * feats @ torch.nn.functional.normalize(p, dim=1).t(),
                                                 torch.arange(64) % 500)
        loss.backward()
        opt.step()
        cos = torch.nn.functional.cosine_similarity(p.detach(), weight, dim=1)
        return float(torch.rad2deg(torch.acos(cos.clamp(-1, 1))).mean())

    small = torch.randn(500, 256, generator=torch.Generator().manual_seed(2)) * 0.01
    assert turn(small) > 3 * turn(w)


# ------------------------------------------------------------------------------------------------ sampler

def _pids():
    # identity i has 3 + i images (7 identities), one identity with just 1 image
    pids = [i for i in range(6) for _ in range(3 + i)] + [99]
    return pids


def test_pk_sampler_batches_hold_p_distinct_identities_k_each():
    pids = _pids()
    s = PKBatchSampler(pids, num_identities=3, num_instances=4, seed=5)
    batches = list(s)
    assert len(batches) == len(s) > 0
    for b in batches:
        assert len(b) == 12
        ids = [pids[i] for i in b]
        assert len(set(ids)) == 3 and all(ids.count(p) == 4 for p in set(ids))


def test_pk_sampler_pads_small_identities_with_their_own_images():
    pids = [0] * 2 + [1] * 2 + [2] * 2
    b = list(PKBatchSampler(pids, 3, 4, seed=0))
    assert len(b) == 1
    assert sorted(pids[i] for i in b[0]) == [0] * 4 + [1] * 4 + [2] * 4


def test_pk_sampler_covers_every_image_when_chunks_divide():
    pids = [p for p in range(4) for _ in range(8)]
    batches = list(PKBatchSampler(pids, 2, 4, seed=1))
    assert sorted(i for b in batches for i in b) == list(range(32))


def test_pk_sampler_deterministic_per_seed_and_epoch():
    pids = _pids()
    a, b = PKBatchSampler(pids, 2, 2, seed=7), PKBatchSampler(pids, 2, 2, seed=7)
    assert list(a) == list(b)
    a.set_epoch(1)
    assert list(a) != list(b)
    b.set_epoch(1)
    assert list(a) == list(b)


def test_pk_sampler_needs_enough_identities():
    with pytest.raises(ValueError, match="identities"):
        PKBatchSampler([0, 0, 1, 1], num_identities=3, num_instances=2)
