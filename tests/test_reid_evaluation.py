"""Protocol tests: hand-built rankings with known rank-k / mAP (methods.md §7.2)."""

import numpy as np
import pytest

from reid.evaluation import cosine_distance, evaluate


def _dist_from_order(order_per_query: list[list[int]], n_gallery: int) -> np.ndarray:
    """Distance matrix whose row q ranks gallery items in the given order."""
    dist = np.zeros((len(order_per_query), n_gallery))
    for q, order in enumerate(order_per_query):
        assert sorted(order) == list(range(n_gallery))
        dist[q, order] = np.arange(n_gallery)
    return dist


def test_ap_hits_at_ranks_one_and_three():
    # gallery: 0 good, 1 negative, 2 good, 3 negative (query cam 0, gallery cam 1)
    dist = _dist_from_order([[0, 1, 2, 3]], 4)
    r = evaluate(dist, [7], [7, 8, 7, 9], [0], [1, 1, 1, 1])
    assert r["rank1"] == 100.0
    assert r["mAP"] == pytest.approx(100 * (1 / 1 + 2 / 3) / 2)
    assert r["n_valid"] == 1 and r["n_skipped"] == 0


def test_first_hit_at_rank_three_gives_rank5_not_rank1():
    dist = _dist_from_order([[1, 3, 0, 2]], 4)
    r = evaluate(dist, [7], [7, 8, 7, 9], [0], [1, 1, 1, 1])
    assert r["rank1"] == 0.0 and r["rank5"] == 100.0 and r["rank10"] == 100.0
    # hits at positions 3 and 4: (1/3 + 2/4) / 2
    assert r["mAP"] == pytest.approx(100 * (1 / 3 + 2 / 4) / 2)


def test_same_camera_true_match_is_junk_in_general_mode():
    # Rank: item0 (same pid, SAME cam: junk), item1 negative, item2 good.
    dist = _dist_from_order([[0, 1, 2]], 3)
    r = evaluate(dist, [5], [5, 6, 5], [0], [0, 1, 1])
    # junk removed -> ranking [neg, good]: first hit at position 2
    assert r["rank1"] == 0.0
    assert r["mAP"] == pytest.approx(100 * 1 / 2)


def test_other_identity_same_camera_stays_as_negative():
    dist = _dist_from_order([[0, 1]], 2)
    r = evaluate(dist, [5], [6, 5], [0], [0, 1])
    assert r["rank1"] == 0.0 and r["mAP"] == pytest.approx(50.0)


def _cc_case():
    # query: pid 1, cam 0, clothes 10
    # gallery in rank order:
    #   0: pid 1, cam 1, clothes 10  (same clothes, other cam)
    #   1: pid 2, cam 1, clothes 20  (negative)
    #   2: pid 1, cam 2, clothes 11  (other clothes, other cam)
    #   3: pid 1, cam 0, clothes 11  (other clothes, SAME cam -> always junk)
    #   4: pid 3, cam 2, clothes 10  (negative wearing the query's outfit id would be a different id; stays)
    dist = _dist_from_order([[0, 1, 2, 3, 4]], 5)
    args = dict(q_pids=[1], g_pids=[1, 2, 1, 1, 3], q_camids=[0], g_camids=[1, 1, 2, 0, 2],
                q_clothes=[10], g_clothes=[10, 20, 11, 11, 30])
    return dist, args


def test_general_mode_counts_both_clothes():
    dist, a = _cc_case()
    r = evaluate(dist, **a, mode="general")
    # junk: item 3. ranking [0 good, 1 neg, 2 good, 4 neg] -> hits at 1 and 3
    assert r["rank1"] == 100.0
    assert r["mAP"] == pytest.approx(100 * (1 + 2 / 3) / 2)


def test_cloth_changing_excludes_same_clothes_match():
    dist, a = _cc_case()
    r = evaluate(dist, **a, mode="cloth_changing")
    # junk: items 0 (same clothes) and 3 (same cam). ranking [1 neg, 2 good, 4 neg] -> hit at 2
    assert r["rank1"] == 0.0 and r["rank5"] == 100.0
    assert r["mAP"] == pytest.approx(50.0)


def test_same_clothes_excludes_other_clothes_match():
    dist, a = _cc_case()
    r = evaluate(dist, **a, mode="same_clothes")
    # junk: items 2 (other clothes) and 3. ranking [0 good, 1 neg, 4 neg] -> hit at 1
    assert r["rank1"] == 100.0 and r["mAP"] == pytest.approx(100.0)


def test_query_without_good_match_is_skipped_and_counted():
    # query 0 has only a same-clothes match -> skipped under CC; query 1 has a CC match at rank 1.
    dist = _dist_from_order([[0, 1, 2], [2, 0, 1]], 3)
    r = evaluate(dist, q_pids=[1, 2], g_pids=[1, 3, 2], q_camids=[0, 0], g_camids=[1, 1, 1],
                 q_clothes=[10, 20], g_clothes=[10, 30, 21], mode="cloth_changing")
    assert r["n_valid"] == 1 and r["n_skipped"] == 1
    assert r["rank1"] == 100.0 and r["mAP"] == 100.0


def test_all_queries_skipped_gives_zero_not_nan():
    r = evaluate(np.zeros((1, 1)), [1], [2], [0], [1])
    assert r["n_valid"] == 0 and r["rank1"] == 0.0 and r["mAP"] == 0.0


def test_prcc_style_camera_junk_never_fires():
    # PRCC: query cam C (2) vs gallery cam A (0): cameras always differ so the plain general protocol
    # equals counting every same-pid gallery item as good.
    rng = np.random.default_rng(0)
    q_p, g_p = rng.integers(0, 5, 20), rng.integers(0, 5, 30)
    dist = rng.random((20, 30))
    r = evaluate(dist, q_p, g_p, np.full(20, 2), np.zeros(30, int))
    r_no_cam = evaluate(dist, q_p, g_p, np.full(20, 2), np.full(30, 9))
    assert r == r_no_cam


def _reference(dist, qp, gp, qc, gc, qcl, gcl, mode):
    """Loop implementation written from the textual description, one query at a time."""
    aps, first = [], []
    for i in range(dist.shape[0]):
        ranked = np.argsort(dist[i], kind="stable")
        kept_hits = []
        for j in ranked:
            same = gp[j] == qp[i]
            junk = same and (gc[j] == qc[i]
                             or (mode == "cloth_changing" and gcl[j] == qcl[i])
                             or (mode == "same_clothes" and gcl[j] != qcl[i]))
            if not junk:
                kept_hits.append(bool(same))
        if not any(kept_hits):
            continue
        pos = [k + 1 for k, h in enumerate(kept_hits) if h]
        aps.append(np.mean([(t + 1) / p for t, p in enumerate(pos)]))
        first.append(pos[0])
    first = np.array(first)
    return {"rank1": 100 * np.mean(first <= 1), "rank5": 100 * np.mean(first <= 5),
            "mAP": 100 * np.mean(aps), "n_valid": len(aps)}


@pytest.mark.parametrize("mode", ["general", "same_clothes", "cloth_changing"])
def test_vectorised_matches_loop_reference(mode, monkeypatch):
    import reid.evaluation as ev

    monkeypatch.setattr(ev, "_BLOCK_ROWS", 7)  # exercise the row blocking too
    rng = np.random.default_rng(1)
    nq, ng = 40, 120
    qp, gp = rng.integers(0, 8, nq), rng.integers(0, 8, ng)
    qc, gc = rng.integers(0, 3, nq), rng.integers(0, 3, ng)
    qcl, gcl = qp * 10 + rng.integers(0, 2, nq), gp * 10 + rng.integers(0, 2, ng)
    dist = rng.random((nq, ng))
    got = evaluate(dist, qp, gp, qc, gc, qcl, gcl, mode=mode)
    ref = _reference(dist, qp, gp, qc, gc, qcl, gcl, mode)
    for k in ("rank1", "rank5", "mAP", "n_valid"):
        assert got[k] == pytest.approx(ref[k]), k


def test_oracle_features_behave_as_expected():
    # clothes-only features: high same-clothes rank-1, low cloth-changing rank-1.
    rng = np.random.default_rng(2)
    pids = np.repeat(np.arange(10), 6)
    outfit = np.tile([0, 0, 0, 1, 1, 1], 10)
    clothes = pids * 2 + outfit
    cams = np.tile([0, 1, 2], 20)
    clothes_feat = np.eye(20)[clothes] + 0.01 * rng.normal(size=(60, 20))  # one-hot outfit
    id_feat = np.eye(10)[pids] + 0.01 * rng.normal(size=(60, 10))
    d_cl = cosine_distance(clothes_feat, clothes_feat)
    d_id = cosine_distance(id_feat, id_feat)
    args = (pids, pids, cams, cams, clothes, clothes)
    for mode in ("general", "same_clothes", "cloth_changing"):
        assert evaluate(d_id, *args, mode=mode)["rank1"] == 100.0
    assert evaluate(d_cl, *args, mode="same_clothes")["rank1"] == 100.0
    assert evaluate(d_cl, *args, mode="cloth_changing")["rank1"] < 30.0
    # camera-only features: same-camera matches are junk, so general rank-1 is near chance.
    d_cam = cosine_distance(np.eye(3)[cams] + 0.01 * rng.normal(size=(60, 3)), np.eye(3)[cams])
    assert evaluate(d_cam, *args, mode="general")["rank1"] < 30.0


def test_bad_inputs_raise_clear_errors():
    with pytest.raises(ValueError, match="mode"):
        evaluate(np.zeros((1, 1)), [1], [1], [0], [1], mode="cc")
    with pytest.raises(ValueError, match="q_clothes"):
        evaluate(np.zeros((1, 1)), [1], [1], [0], [1], mode="cloth_changing")
    with pytest.raises(ValueError, match="g_pids"):
        evaluate(np.zeros((1, 2)), [1], [1], [0], [1, 1])
    with pytest.raises(ValueError, match="NaN"):
        evaluate(np.full((1, 1), np.nan), [1], [1], [0], [1])


def test_evaluation_module_does_not_import_torch():
    import subprocess
    import sys

    code = "import sys, reid.evaluation; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
