"""Identity store, events and matcher against a real private Redis server."""

from __future__ import annotations

import numpy as np
import pytest

from pipeline.events import IdentityEvent
from pipeline.gallery import PrototypeGallery
from pipeline.matcher import CrossCameraMatcher
from pipeline.redis_server import RedisServer
from pipeline.redact import redact
from pipeline.store import IdentityStore


def _unit(rng, d=16):
    v = rng.normal(size=d).astype(np.float32)
    return v / np.linalg.norm(v)


def test_store_roundtrips_raw_float32(redis_client):
    store = IdentityStore(redis_client, prefix="t")
    v = np.arange(8, dtype=np.float32) / 10
    iid = store.create_identity(v, "cam1", ts=100.0)
    raw = redis_client.hget(f"t:protos:{iid}", "1")
    assert raw == v.astype("<f4").tobytes()  # raw little-endian bytes, no pickle
    store.record_sighting(iid, "cam2", 1, v * 2, ts=200.0)
    rec = store.identity(iid)
    assert rec.cameras == ["cam1", "cam2"] and rec.sightings == 2 and rec.last_seen == 200.0
    protos = store.prototypes()
    assert protos.identity_ids.tolist() == [iid]
    np.testing.assert_array_equal(protos.vectors[0], v * 2)


def test_events_roundtrip_and_follow(redis_client):
    store = IdentityStore(redis_client, stream="ev")
    sent = [IdentityEvent("track.started", "cam1", 3, "cam1:r:3", bbox=[1, 2, 3, 4], frame_index=7),
            IdentityEvent("identity.created", "cam1", 3, "cam1:r:3", 1, None, [1, 2, 3, 4], 9, 1)]
    store.publish(sent)
    got = [e for _, e in store.read_events(from_start=True)]
    assert [e["type"] for e in got] == ["track.started", "identity.created"]
    assert got[1]["identity_id"] == 1 and got[1]["schema"] == 1
    assert got[0]["ts"].endswith("Z") and len(got[0]["ts"]) == len("2026-01-01T00:00:00.000Z")
    assert IdentityEvent.from_json(sent[0].to_json()) == sent[0]
    followed = list(store.read_events(from_start=True, follow=True, block_ms=50, idle_exit_s=0.2))
    assert len(followed) == 2
    with pytest.raises(ValueError, match="unknown event type"):
        IdentityEvent("identity.teleported")


@pytest.mark.slow
def test_embedded_store_persists_across_restart(tmp_path):
    with RedisServer(tmp_path / "store") as server:
        IdentityStore(server.client()).publish([IdentityEvent("camera.state", "c", state="streaming")])
    with RedisServer(tmp_path / "store") as server:
        events = [e for _, e in IdentityStore(server.client()).read_events()]
    assert [e["state"] for e in events] == ["streaming"]


def test_gallery_best_exclude_and_growth():
    rng = np.random.default_rng(0)
    g = PrototypeGallery(capacity=2)
    vecs = [_unit(rng) for _ in range(5)]
    for i, v in enumerate(vecs):
        g.upsert(i + 1, 1, v)
    assert len(g) == 5
    assert g.best(vecs[3])[:2] == (4, 1)
    assert g.best(vecs[3], exclude={4})[0] != 4
    g.upsert(4, 1, vecs[0])  # update in place, no new row
    assert len(g) == 5 and g.best(vecs[0], exclude={1})[0] == 4
    with pytest.raises(ValueError, match="dimension"):
        g.upsert(9, 1, np.ones(3, np.float32))


def test_matcher_creates_then_assigns_and_respects_busy(redis_client):
    rng = np.random.default_rng(1)
    store = IdentityStore(redis_client, prefix="m")
    matcher = CrossCameraMatcher(store, threshold=0.8)
    a, b = _unit(rng), _unit(rng)
    first = matcher.assign(a, "cam1", busy=set(), ts=1.0)
    assert first.created and first.identity_id == 1
    noisy_a = a + 0.05 * _unit(rng)
    again = matcher.assign(noisy_a / np.linalg.norm(noisy_a), "cam2", busy=set(), ts=2.0)
    assert not again.created and again.identity_id == 1 and again.similarity > 0.8
    # The same look while identity 1 is already on screen in this camera must become a new identity.
    clash = matcher.assign(a, "cam2", busy={1}, ts=3.0)
    assert clash.created and clash.identity_id == 2
    other = matcher.assign(b, "cam1", busy=set(), ts=4.0)
    assert other.created
    # A new matcher on the same store starts with the same gallery.
    assert len(CrossCameraMatcher(store).gallery) == 3
    assert store.identity(1).cameras == ["cam1", "cam2"]


def test_redact_url_hides_password():
    assert redact("rediss://user:s3cret@host:6380/0") == "rediss://user:***@host:6380/0"
    assert redact("rtsp://admin:pw@10.0.0.1/stream") == "rtsp://admin:***@10.0.0.1/stream"
    assert redact("redis://host:6379") == "redis://host:6379"
