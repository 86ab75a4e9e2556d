"""Per-camera feature centring (reid.centring: camera; reid/inference/centring.py)."""

from __future__ import annotations

import re

import numpy as np
import pytest

from pipeline.models import resolve_model

from reid.inference.centring import CameraFeatureMeans, centre_by_camera


def _two_cameras(rng, people: int = 8, crops: int = 30, dim: int = 64, bias: float = 1.5, noise: float = 0.3):
    """Unit features of `people` people seen by two cameras, each camera adding its own strong common part."""
    who = rng.normal(size=(people, dim))
    who /= np.linalg.norm(who, axis=1, keepdims=True)
    cam_part = {c: bias * v / np.linalg.norm(v) for c, v in zip("ab", rng.normal(size=(2, dim)))}
    feats, cams, ids = [], [], []
    for _ in range(crops):
        for p in range(people):
            for c in "ab":
                f = who[p] + cam_part[c] + noise * rng.normal(size=dim) / np.sqrt(dim)
                feats.append(f / np.linalg.norm(f))
                cams.append(c)
                ids.append(p)
    order = rng.permutation(len(feats))  # crops arrive interleaved, as a run's batches bring them
    return np.asarray(feats, np.float32)[order], [cams[i] for i in order], np.asarray(ids)[order]


def _cross_camera_rank1(feats: np.ndarray, cams: list[str], ids: np.ndarray) -> float:
    """Each person's mean feature on camera a: is its nearest camera-b person mean the same person?"""
    cams = np.asarray(cams)
    means = {c: np.stack([feats[(cams == c) & (ids == p)].mean(0) for p in np.unique(ids)]) for c in "ab"}
    sim = means["a"] @ means["b"].T
    return float(np.mean(sim.argmax(1) == np.arange(len(sim))))


def test_centring_takes_each_cameras_common_part_away_so_people_match_across_cameras():
    rng = np.random.default_rng(0)
    feats, cams, ids = _two_cameras(rng)
    # Uncentred, each camera's common part swamps the person: strangers on one camera are closer than the
    # same person on two (what the run's features look like when a camera's look dominates).
    a = np.asarray(cams) == "a"
    assert float((feats[a][ids[a] == 0] @ feats[a][ids[a] == 1].T).mean()) > \
        float((feats[a][ids[a] == 0] @ feats[~a][ids[~a] == 0].T).mean())
    live = CameraFeatureMeans(prior_crops=50)
    out = np.concatenate([live.centre(cams[i:i + 16], feats[i:i + 16]) for i in range(0, len(feats), 16)])
    assert out.shape == feats.shape and np.allclose(np.linalg.norm(out, axis=1), 1.0, atol=1e-5)
    late = slice(len(feats) // 2, None)  # once the means have settled
    assert _cross_camera_rank1(out[late], cams[late.start:], ids[late]) == 1.0
    # Same-person features across cameras now agree far more than strangers' on one camera.
    oa, ob = out[late][a[late]], out[late][~a[late]]
    ia, ib = ids[late][a[late]], ids[late][~a[late]]
    same = float(np.mean([(oa[ia == p] @ ob[ib == p].T).mean() for p in range(8)]))
    strangers = float(np.mean([(oa[ia == p] @ oa[ia == (p + 1) % 8].T).mean() for p in range(8)]))
    assert same > 0.5 > 0.1 > strangers
    assert live.summary() == {"a": len(feats) // 2, "b": len(feats) // 2}
    # The live means approach the offline ones (every crop known) as crops come in.
    agree = np.sum(centre_by_camera(feats, cams) * out, axis=1)
    quarter = len(feats) // 4
    assert float(agree[:quarter].mean()) < float(agree[-quarter:].mean())
    assert float(agree[-quarter:].mean()) > 0.97


def test_the_first_crops_are_barely_changed_and_no_crop_is_zeroed():
    rng = np.random.default_rng(1)
    feats, cams, _ = _two_cameras(rng, people=2, crops=1)
    live = CameraFeatureMeans(prior_crops=50)
    first = live.centre(cams[:1], feats[:1])
    # The first crop alone is its camera's mean; centring on it would leave nothing of the crop.
    assert float(first[0] @ feats[0]) > 0.95 and np.isfinite(first).all()
    bare = CameraFeatureMeans(prior_crops=0)  # no prior at all: the first crop is its camera's whole mean
    np.testing.assert_allclose(bare.centre(cams[:1], feats[:1]), feats[:1], atol=1e-6)
    with pytest.raises(ValueError, match="one camera per feature"):
        live.centre(["a"], feats[:2])
    assert live.centre([], feats[:0]).shape == (0, feats.shape[1])
    with pytest.raises(ValueError, match="prior_crops"):
        CameraFeatureMeans(prior_crops=-1)


def test_offline_centring_subtracts_each_cameras_own_mean():
    feats = np.array([[1.0, 0.0], [1.0, 1.0], [0.0, 1.0], [0.0, 3.0]])
    out = centre_by_camera(feats, ["a", "a", "b", "b"])
    np.testing.assert_allclose(out, [[0, -1], [0, 1], [0, -1], [0, 1]], atol=1e-6)


def test_config_names_the_bad_centring_mode(shared_video):
    from pipeline.config import ConfigError, parse_config

    raw = {"cameras": [{"id": "a", "source": str(shared_video["pets"])}], "reid": {"centring": "scene"}}
    with pytest.raises(ConfigError, match="reid.centring"):
        parse_config(raw)
    assert parse_config({**raw, "reid": {}}).reid.centring == "none"  # off unless asked


def test_a_run_with_centring_links_on_the_centred_features_of_every_crop(shared_video, tmp_path, monkeypatch, caplog):
    """The runner feeds each crop's centred feature, not the raw one, to its tracklet (and so to the matcher), and
    the next run on the same store goes on from the cameras' means."""
    from pipeline.redis_server import RedisServer
    from pipeline.store import IdentityStore
    from reid.inference.centring import feature_space
    from pipeline.config import parse_config
    from pipeline.runner import PipelineRunner
    from pipeline.tracklets import Tracklet

    centred, raw_in, added = [], [], []
    centre = CameraFeatureMeans.centre

    def recording_centre(self, camera_ids, features):
        out = centre(self, camera_ids, features)
        raw_in.append(np.asarray(features).copy())
        centred.append((list(camera_ids), out.copy()))
        return out

    add = Tracklet.add_embedding

    def recording_add(self, vector, weight, look=None):
        added.append(np.asarray(vector).copy())
        return add(self, vector, weight, look)

    monkeypatch.setattr(CameraFeatureMeans, "centre", recording_centre)
    monkeypatch.setattr(Tracklet, "add_embedding", recording_add)
    raw = {"cameras": [{"id": "a", "source": str(shared_video["pets"])},
                       {"id": "b", "source": str(shared_video["pets"])}], "store": "embedded",
           "output": {"dir": str(tmp_path), "video": False, "snapshots": False},
           "reid": {"centring": "camera", "swap_check_per_second": 0}}
    summary = PipelineRunner(parse_config(raw), tmp_path, max_frames=40, progress=False).run()
    every = np.concatenate([o for _, o in centred])
    assert summary.crops == len(every) > 20  # every embedded crop went through the centring
    assert {c for cams, _ in centred for c in cams} == {"a", "b"}
    raw_all = np.concatenate(raw_in)
    assert len(added) > 20
    for v in added:  # each added vector is a centred crop feature
        assert np.max(every @ v) > 1 - 1e-5
    # and not the raw one (a run's very first crop is its own camera's mean's only part: it stays as it came)
    assert sum(np.max(raw_all @ v) > 1 - 1e-4 for v in added) <= 1
    per_camera = {c: sum(cams.count(c) for cams, _ in centred) for c in "ab"}
    config = parse_config(raw)
    space = feature_space(resolve_model(config.reid.model))
    with RedisServer(tmp_path / "store") as srv:
        saved = IdentityStore(srv.client()).camera_features(space)
    assert {c: n for c, (_, n) in saved.items()} == per_camera  # every crop of each camera, for this model
    np.testing.assert_allclose(saved["a"][0], raw_all[[c == "a" for cams, _ in centred for c in cams]].sum(0),
                               rtol=1e-4, atol=1e-4)
    with caplog.at_level("INFO"):
        PipelineRunner(config, tmp_path, max_frames=5, progress=False).run()
    for c, n in per_camera.items():
        assert f"feature centring: camera {c} continues from {n} crops of earlier runs" in caplog.text
    # the restored means are the ones in use: the run ends counting the earlier runs' crops and its own
    closing = re.search(r"feature centring: crops per camera a (\d+), b (\d+)", caplog.text)
    assert closing and int(closing.group(1)) > per_camera["a"] and int(closing.group(2)) > per_camera["b"]


def test_means_survive_a_restart_and_forget_beyond_their_horizon():
    rng = np.random.default_rng(2)
    feats, cams, _ = _two_cameras(rng, people=3, crops=10)
    first = CameraFeatureMeans(prior_crops=50)
    first.centre(cams, feats)
    again = CameraFeatureMeans(prior_crops=50)
    again.restore(first.state())
    for cam in "ab":
        np.testing.assert_allclose(again.camera_mean(cam), first.camera_mean(cam))
    # the restarted run centres its next crop as the first run would have
    np.testing.assert_allclose(again.centre(cams[:1], feats[:1]), first.centre(cams[:1], feats[:1]), atol=1e-6)
    short = CameraFeatureMeans(prior_crops=0, horizon=10)
    short.centre(cams, feats)
    assert set(short.summary().values()) == {10}
    # a camera whose view changed: after `horizon` crops of the new view its mean is mostly the new one
    new_view = np.tile(feats[:1], (40, 1))
    short.centre(["a"] * len(new_view), new_view)
    l2 = short.camera_mean("a") / np.linalg.norm(short.camera_mean("a"))
    assert float(l2 @ feats[0]) > 0.98


def test_store_keeps_each_cameras_feature_means_for_their_model_only(redis_client, caplog):
    from pipeline.store import IdentityStore

    store = IdentityStore(redis_client, "ctr")
    store.save_camera_features({"a": ([1.0, 2.0], 10.0), "b": ([3.0, 4.0], 2.0)}, "m.onnx:abc")
    assert store.camera_features("m.onnx:abc") == {"a": ([1.0, 2.0], 10.0), "b": ([3.0, 4.0], 2.0)}
    redis_client.hset(store.camera_features_key, "broken", "{not json")
    with caplog.at_level("WARNING"):
        assert store.camera_features("other.onnx:def") == {}  # another model's features live in another space
    assert "camera a: feature means were measured with another model (m.onnx:abc" in caplog.text
    assert "camera broken: feature means unreadable" in caplog.text


def test_feature_space_names_the_model_file_its_weights_and_the_embedding(tmp_path):
    from reid.inference.centring import feature_space

    (tmp_path / "m.onnx").write_bytes(b"one")
    (tmp_path / "n.onnx").write_bytes(b"one")
    (tmp_path / "m.xml").write_bytes(b"graph")
    (tmp_path / "m.bin").write_bytes(b"weights")
    plain = feature_space(tmp_path / "m.onnx")
    assert plain != feature_space(tmp_path / "m.onnx", flip_sum=True)
    assert plain.split(":")[1] == feature_space(tmp_path / "n.onnx").split(":")[1]  # the bytes, not the name
    ir = feature_space(tmp_path / "m.xml")
    (tmp_path / "m.bin").write_bytes(b"retrained")
    assert feature_space(tmp_path / "m.xml") != ir  # an IR's weights are in its .bin
