"""Matching parts that need no Redis: outfit descriptor, gallery bookkeeping, topology, config."""

from __future__ import annotations

import numpy as np
import pytest

from reid.inference.outfit import DESCRIPTOR_DIM, outfit_descriptors
from pipeline.config import ConfigError, parse_config
from pipeline.gallery import PrototypeGallery
from pipeline.topology import Topology, Transit, topology_from_config


def _crop(top, bottom, rng, h=160, w=64, bg=(110, 110, 110)):
    img = np.full((h, w, 3), bg, np.uint8)
    mt, mb = int(0.125 * w), int(0.19 * w)
    img[int(0.15 * h):int(0.5 * h), mt:w - mt] = top
    img[int(0.5 * h):int(0.93 * h), mb:w - mb] = bottom
    return np.clip(img + rng.normal(0, 6, img.shape), 0, 255).astype(np.uint8)


def test_outfit_descriptor_tells_outfits_apart_not_sizes():
    rng = np.random.default_rng(0)
    red_blue = _crop((30, 30, 200), (140, 60, 20), rng)
    red_blue_far = _crop((35, 25, 190), (150, 55, 25), rng, h=90, w=36)  # smaller, slightly other light
    green_blue = _crop((40, 170, 40), (140, 60, 20), rng)  # only the top changed
    white_black = _crop((235, 235, 235), (20, 20, 20), rng)
    d = outfit_descriptors([red_blue, red_blue_far, green_blue, white_black])
    assert d.shape == (4, DESCRIPTOR_DIM) and d.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(d, axis=1), 1.0, rtol=1e-5)
    sims = d @ d.T
    assert sims[0, 1] > 0.9  # same outfit at another size
    assert sims[0, 2] < 0.8  # new top, same trousers: a new outfit
    assert sims[0, 3] < 0.5
    assert sims[0, 2] > sims[0, 3]  # sharing the trousers keeps it closer
    striped = red_blue.copy()
    for r in range(24, 80, 12):
        striped[r:r + 6, 8:56] = (20, 20, 20)  # bold dark stripes on the red top: another shirt
    assert (outfit_descriptors([striped]) @ d[0]) < 0.9
    assert outfit_descriptors([]).shape == (0, DESCRIPTOR_DIM)
    with pytest.raises(ValueError, match="crop 0"):
        outfit_descriptors([np.zeros((0, 5, 3), np.uint8)])


def test_gallery_removal_and_top_identities():
    rng = np.random.default_rng(1)
    g = PrototypeGallery(capacity=2)
    vecs = rng.normal(size=(6, 8)).astype(np.float32)
    for i, v in enumerate(vecs):
        g.upsert(1 + i // 2, 1 + i % 2, v, look=np.abs(v))  # identities 1..3, two outfits each
    assert len(g) == 6 and g.outfits(2) == [1, 2]
    g.remove_identity(2)
    assert len(g) == 4 and g.identities() == {1, 3} and g.prototype(2, 1) is None
    np.testing.assert_allclose(g.prototype(3, 2), vecs[5] / np.linalg.norm(vecs[5]), rtol=1e-6)
    q = vecs[5] / np.linalg.norm(vecs[5])
    top = g.top_identities(g.similarities(q[None]), k=3)[0]
    assert max(top, key=top.get) == 3 and top[3] == pytest.approx(1.0, abs=1e-5)
    outfit, sim = g.best_outfit(3, np.abs(vecs[5]))
    assert outfit == 2 and sim == pytest.approx(1.0, abs=1e-5)
    with pytest.raises(ValueError, match="dimension"):
        g.similarities(np.ones((1, 3), np.float32))


def test_topology_rules():
    topo = Topology(overlapping={frozenset(("a", "b"))},
                    transits={frozenset(("a", "c")): Transit(5, 30)}, default_min_transit_s=2, revisit_after_s=300)
    assert topo.overlap("a", "b") and topo.overlap("b", "a") and not topo.overlap("a", "c")
    assert topo.transit_ok("a", "b", -10)  # overlapping: at once is fine
    assert not topo.transit_ok("c", "a", 4) and topo.transit_ok("c", "a", 20)
    assert not topo.transit_ok("a", "c", 100) and topo.transit_ok("a", "c", 400)
    assert not topo.transit_ok("b", "c", 1) and topo.transit_ok("b", "c", 3)  # default minimum


def test_matcher_config_is_strict():
    cams = [{"id": "a", "source": "rtsp://h/a"}, {"id": "b", "source": "rtsp://h/b"}]
    cfg = parse_config({"cameras": cams, "matcher": {"outfit_threshold": 0.7, "topology": {
        "overlapping": [["a", "b"]], "transits": [{"cameras": ["a", "c"], "min_s": 4, "max_s": 40}]}}})
    topo = topology_from_config(cfg.matcher.topology)
    assert topo.overlap("a", "b") and topo.transits[frozenset(("a", "c"))] == Transit(4, 40)
    with pytest.raises(ConfigError, match="matcher.topology.transit"):
        parse_config({"cameras": cams, "matcher": {"topology": {"transit": []}}})
    with pytest.raises(ConfigError, match="below min_s"):
        parse_config({"cameras": cams, "matcher": {"topology": {"transits": [
            {"cameras": ["a", "c"], "min_s": 50, "max_s": 40}]}}})


def test_usearch_index_follows_the_gallery_and_finds_the_same_candidates():
    rng = np.random.default_rng(2)
    exact, ann = PrototypeGallery(), PrototypeGallery(index="usearch", ann_min_rows=100)
    vecs = rng.normal(size=(600, 32)).astype(np.float32)
    for g in (exact, ann):
        g.extend(np.arange(1, 501), np.ones(500, np.int64), vecs[:500])
    queries = vecs[:40] + 0.1 * rng.normal(size=(40, 32)).astype(np.float32)
    queries /= np.linalg.norm(queries, axis=1, keepdims=True)
    assert [max(c, key=c.get) for c in ann.candidates(queries, 8)] == list(range(1, 41))
    assert ann._ann is not None and len(ann._ann) == 500
    # Changes after the index was built: removals, a moved prototype, new rows.
    for g in (exact, ann):
        g.remove_identity(3)
        g.upsert(7, 1, vecs[510])
        for i in range(500, 510):
            g.upsert(1000 + i, 1, vecs[i])
    assert len(ann._ann) == len(ann) == 509
    q2 = np.concatenate([queries[2:3], vecs[510:511], vecs[505:506]])
    got = [max(c, key=c.get) for c in ann.candidates(q2, 8)]
    assert got == [max(c, key=c.get) for c in exact.candidates(q2, 8)] and got[1:] == [7, 1505]
    assert 3 not in ann.candidates(queries[2:3], 8)[0]
    with pytest.raises(ValueError, match="exact"):
        PrototypeGallery(index="faiss")


def test_usearch_index_is_never_used_below_the_recall_floor(monkeypatch, caplog):
    """The HNSW index is used only once it has found the exact search's best identity for at least 99 % of
    sampled queries; an index that cannot is left unused and the exact search answers (with a warning)."""
    import pipeline.gallery as gallery

    rng = np.random.default_rng(3)
    vecs = rng.normal(size=(3000, 32)).astype(np.float32)
    queries = vecs[:50] + 0.1 * rng.normal(size=(50, 32)).astype(np.float32)
    exact = PrototypeGallery()
    exact.extend(np.arange(1, 3001), np.ones(3000, np.int64), vecs)
    want = [max(c, key=c.get) for c in exact.candidates(queries, 8)]

    ann = PrototypeGallery(index="usearch", ann_min_rows=1000)
    ann.extend(np.arange(1, 3001), np.ones(3000, np.int64), vecs)
    got = [max(c, key=c.get) for c in ann.candidates(queries, 8)]
    assert ann.ann_check.passed and ann.ann_check.recall >= gallery.MIN_ANN_RECALL and ann.ann_check.rows == 3000
    assert np.mean([g == w for g, w in zip(got, want)]) >= 0.98

    monkeypatch.setattr(gallery, "MIN_ANN_RECALL", 1.01)  # a floor no index can reach
    monkeypatch.setattr(gallery, "ANN_MAX_EXPANSION", 256)
    picky = PrototypeGallery(index="usearch", ann_min_rows=1000)
    picky.extend(np.arange(1, 3001), np.ones(3000, np.int64), vecs)
    with caplog.at_level("WARNING", logger="pipeline.matcher"):
        assert [max(c, key=c.get) for c in picky.candidates(queries, 8)] == want  # the exact search answered
    assert not picky.ann_check.passed and picky.ann_check.expansion_search == 256
    assert "exact search stays in use" in caplog.text
