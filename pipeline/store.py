"""The identity store (contract): Redis holds identities, prototypes, track links and the event stream.

Keys (prefix `pipeline` by default):
  {p}:next_identity           INCR counter of identity ids
  {p}:identities              sorted set: identity id scored by creation time
  {p}:identity:{id}           hash: created, last_seen, last_camera, cameras (JSON list), sightings, outfits,
                              merged_into (only once merged into another identity)
  {p}:protos:{id}             hash: outfit id -> identity prototype, raw little-endian float32 bytes
  {p}:looks:{id}              hash: outfit id -> appearance (outfit) descriptor, raw little-endian float32
  {p}:track:{tracklet_id}     string: identity id
  {p}:gallery_version         counter of structural gallery changes (new identity, new outfit, merge)
  {p}:gallery_log             stream of every gallery change (vectors included), bounded (approximate
                              MAXLEN); workers read it incrementally to keep their in-memory galleries current
  {p}:generation              a random token set when a store is first used: a store that comes back
                              without it (restarted empty, flushed) is a new generation (see `StoreReset`)
  {p}:camera_colour           hash: camera id -> JSON {"sum": [B, G, R], "n": crops, "region": "centre" or
                              "person"}, each camera's running colour mean for colour levelling (taken over
                              box centres or person pixels; no region: centres), saved at a run's end,
                              continued by the next run whose model levels over the same region
  {p}:camera_features         hash: camera id -> JSON {"sum": [identity feature sum], "n": crops, "model":
                              file name:SHA-256 prefix[:flip_sum]}, each camera's running mean identity feature
                              for reid.centring, saved at a run's end, continued by the next run of that model
  <events.stream>             the identity event stream (XADD with approximate MAXLEN)
Nothing is pickled: vectors are raw bytes, everything else is strings or JSON.

Several workers, one store: every gallery write of a matching step goes through one Lua script
(`commit`), which Redis runs atomically. A step that creates an identity, adds an outfit or merges
carries the gallery version its decision was made on; the script refuses it when the version has moved
(another worker created or changed prototypes meanwhile), and the worker reads the log, decides again
and retries. This is optimistic concurrency with a compare-and-set done server side, in one round trip:
two workers that see the same new person at once cannot both create an identity, because the second
commit sees the first's version bump, re-reads the new prototype and matches it. A Lua script was
chosen over WATCH/MULTI because the identity id must be allocated (INCR) and written in the same atomic
unit, and over a lock because a crashed worker can never leave a script half-applied or a lock held.
(The script derives key names from the prefix, which is fine for a single Redis or a primary/replica
set, not for Redis Cluster.)

The commit script lives in `commit.lua` beside this module (shipped as package data). Every commit names
the store generation its worker knows and refuses to write into another one; a new identity's id is
never below the highest id the worker has seen, so ids never repeat, even after the store lost its
counter. Store outages (what is retried, what fails loud) are handled by `pipeline.outage`.

Retention: with `retention_s`, every identity's keys and track links expire that long after the
identity was last seen (each sighting renews them); the gallery log and the event stream are capped by
length. Without it, identities are kept until deleted.
"""

from __future__ import annotations

import json
import logging
import time
import uuid
from dataclasses import dataclass, field
from importlib import resources
from typing import Iterator

import numpy as np
import redis

from pipeline.events import IdentityEvent, iso_utc

log = logging.getLogger(__name__)

VECTOR_DTYPE = np.dtype("<f4")


def vector_to_bytes(v: np.ndarray) -> bytes:
    return np.ascontiguousarray(v, dtype=VECTOR_DTYPE).tobytes()


def vector_from_bytes(b: bytes) -> np.ndarray:
    return np.frombuffer(b, dtype=VECTOR_DTYPE).astype(np.float32)


@dataclass(frozen=True)
class IdentityRecord:
    identity_id: int
    created: float
    last_seen: float
    cameras: list[str]
    sightings: int
    outfits: int
    last_camera: str | None = None
    merged_into: int | None = None
    merged_outfits: int = 0  # of `outfits`, how many came with identities merged into this one

    @property
    def own_outfits(self) -> int:
        """Outfits this identity was seen in itself (outfit changes), not counting merged-in identities'."""
        return self.outfits - self.merged_outfits


@dataclass(frozen=True)
class Prototypes:
    identity_ids: np.ndarray  # (P,) int64
    outfit_ids: np.ndarray  # (P,) int64
    vectors: np.ndarray  # (P, D) float32
    looks: list[np.ndarray | None] = field(default_factory=list)  # per row, None when never stored


# The atomic gallery write (see commit.lua for its arguments and replies).
COMMIT_LUA = (resources.files("pipeline") / "commit.lua").read_text(encoding="utf-8")
# Set the generation token unless one is there; answer the token in force and whether it was just set.
_ENSURE_GENERATION_LUA = """
local current = redis.call('GET', KEYS[1])
if current then return {current, 0} end
redis.call('SET', KEYS[1], ARGV[1])
return {ARGV[1], 1}
"""
# Raise the identity counter to at least ARGV[1] (never lower it).
_RAISE_COUNTER_LUA = """
local current = tonumber(redis.call('GET', KEYS[1]) or '0')
if current < tonumber(ARGV[1]) then redis.call('SET', KEYS[1], ARGV[1]) return tonumber(ARGV[1]) end
return current
"""


@dataclass(frozen=True)
class CommitResult:
    status: str  # "ok" | "stale" | "gone" | "reset"
    version: int
    results: list[int]  # per op: new identity id (create), new outfit id (outfit), outfits moved (merge), else 0
    gone_identity: int | None = None
    generation: str | None = None  # "reset": the generation the store has now ("" = none)


class StoreReset(RuntimeError):
    """The store is not the generation this worker knew: it came back empty (restarted without its data,
    flushed) or was reset by another worker. The worker must reload and announce it (`store.reset`)."""

    def __init__(self, known: str, found: str | None) -> None:
        self.known, self.found = known, found
        super().__init__(f"store generation {known} is gone (the store now has {found or 'none'})")


@dataclass
class GalleryChange:
    """One entry of the gallery log, as a worker applies it to its in-memory gallery."""

    op: str  # create | outfit | update | presence | merge
    identity_id: int
    outfit_id: int
    camera_id: str
    ts: float
    live: bool
    version: int
    vector: np.ndarray | None = None
    look: np.ndarray | None = None
    into: int | None = None


class StoreOp:
    """Builders for the ops `IdentityStore.commit` takes (plain dicts + vector blobs)."""

    def __init__(self) -> None:
        self.ops: list[dict] = []
        self.blobs: list[bytes] = []

    def _blob(self, v: np.ndarray | None) -> int:
        if v is None:
            return 0
        self.blobs.append(vector_to_bytes(v))
        return len(self.blobs)

    def create(self, vector: np.ndarray, look: np.ndarray | None, camera_id: str, ts: float,
               tracklet_id: str = "", live: bool = True) -> int:
        self.ops.append({"op": "create", "camera": camera_id, "ts": repr(float(ts)), "tracklet": tracklet_id,
                         "vec": self._blob(vector), "look": self._blob(look), "live": "1" if live else "0"})
        return len(self.ops) - 1

    def outfit(self, identity_id: int, vector: np.ndarray, look: np.ndarray | None, camera_id: str, ts: float,
               tracklet_id: str = "", sighting: bool = True, live: bool = True) -> int:
        self.ops.append({"op": "outfit", "id": str(identity_id), "camera": camera_id, "ts": repr(float(ts)),
                         "tracklet": tracklet_id, "vec": self._blob(vector), "look": self._blob(look),
                         "sighting": "1" if sighting else "0", "live": "1" if live else "0"})
        return len(self.ops) - 1

    def update(self, identity_id: int, outfit_id: int, vector: np.ndarray | None, look: np.ndarray | None,
               camera_id: str, ts: float, tracklet_id: str = "", sighting: bool = True, live: bool = True) -> int:
        self.ops.append({"op": "update", "id": str(identity_id), "outfit": str(outfit_id), "camera": camera_id,
                         "ts": repr(float(ts)), "tracklet": tracklet_id, "vec": self._blob(vector),
                         "look": self._blob(look), "sighting": "1" if sighting else "0", "live": "1" if live else "0"})
        return len(self.ops) - 1

    def presence(self, identity_id: int, camera_id: str, ts: float, live: bool) -> int:
        self.ops.append({"op": "presence", "id": str(identity_id), "camera": camera_id, "ts": repr(float(ts)),
                         "live": "1" if live else "0"})
        return len(self.ops) - 1

    def merge(self, keep: int, drop: int, ts: float) -> int:
        self.ops.append({"op": "merge", "keep": str(keep), "drop": str(drop), "ts": repr(float(ts))})
        return len(self.ops) - 1

    def __len__(self) -> int:
        return len(self.ops)


class IdentityStore:
    def __init__(self, client: redis.Redis, prefix: str = "pipeline", stream: str = "pipeline:events",
                 stream_maxlen: int = 100_000, gallery_log_maxlen: int = 100_000, retention_s: float = 0) -> None:
        self.r = client
        self.p = prefix
        self.stream = stream
        self.stream_maxlen = stream_maxlen
        self.gallery_log_maxlen = gallery_log_maxlen
        self.retention_s = int(retention_s)
        self._commit = client.register_script(COMMIT_LUA)
        self._ensure_generation = client.register_script(_ENSURE_GENERATION_LUA)
        self._raise_counter = client.register_script(_RAISE_COUNTER_LUA)
        # The generation this store object has seen and the highest identity id (0: none yet); commits
        # check the first and never draw an id at or below the second.
        self.generation: str | None = None
        self.highest_identity = 0

    @property
    def gallery_log(self) -> str:
        return f"{self.p}:gallery_log"

    # -- per-camera colour statistics (colour levelling, kept across runs) ----------------------------------
    @property
    def camera_colour_key(self) -> str:
        return f"{self.p}:camera_colour"

    def camera_colour(self, region: str = "centre") -> dict[str, tuple[list[float], float]]:
        """Each camera's saved colour sums and crop count, taken over `region` (entries saved without one were
        box centres); entries that do not parse or were taken over another region are left out, named."""
        return self._camera_stats(self.camera_colour_key, "colour statistics", "region", region, default="centre",
                                  size=3, other="were taken over %r, this model levels over %r")

    def save_camera_colour(self, stats: dict[str, tuple[list[float], float]], region: str = "centre") -> None:
        self._save_camera_stats(self.camera_colour_key, stats, "region", region)

    @property
    def camera_features_key(self) -> str:
        return f"{self.p}:camera_features"

    def camera_features(self, model: str) -> dict[str, tuple[list[float], float]]:
        """Each camera's saved identity-feature sums and crop count (reid.centring) for `model` (a digest of the
        model file); entries that do not parse or belong to another model are left out, named."""
        return self._camera_stats(self.camera_features_key, "feature means", "model", model, default=None,
                                  other="were measured with another model (%s, this run: %s)")

    def save_camera_features(self, stats: dict[str, tuple[list[float], float]], model: str) -> None:
        self._save_camera_stats(self.camera_features_key, stats, "model", model)

    def _camera_stats(self, key: str, what: str, tag: str, want: str, default: str | None, other: str,
                      size: int | None = None) -> dict[str, tuple[list[float], float]]:
        """A hash of camera id -> JSON {"sum": [...], "n": crops, tag: ...}: the entries whose tag is `want`."""
        out = {}
        for cam, raw in self.r.hgetall(key).items():
            cam = cam.decode() if isinstance(cam, bytes) else cam
            try:
                entry = json.loads(raw)
                total, n = [float(v) for v in entry["sum"]], float(entry["n"])
                if (size is not None and len(total) != size) or n < 0:
                    raise ValueError(f"expected sum of {size or 'the model feature'} values and n >= 0")
                saved = entry.get(tag, default)
            except (ValueError, KeyError, TypeError, AttributeError) as exc:
                log.warning("store %s, camera %s: %s unreadable (%s); the camera starts afresh", key, cam, what, exc)
                continue
            if saved != want:
                log.warning(f"store %s, camera %s: %s {other}; the camera starts afresh", key, cam, what, saved, want)
                continue
            out[cam] = (total, n)
        return out

    def _save_camera_stats(self, key: str, stats: dict[str, tuple[list[float], float]], tag: str, value: str) -> None:
        if stats:
            self.r.hset(key, mapping={cam: json.dumps({"sum": total, "n": n, tag: value})
                                      for cam, (total, n) in stats.items()})

    # -- generations ------------------------------------------------------------------------------
    def open_generation(self) -> tuple[str, bool]:
        """Adopt the store's generation, setting a new one if it has none; -> (generation, newly set).

        Also raises the identity counter to the highest id seen so far, so a store that came back without
        its data never hands out an id again."""
        token, created = self._ensure_generation(keys=[f"{self.p}:generation"], args=[uuid.uuid4().hex])
        self.generation = token.decode() if isinstance(token, bytes) else str(token)
        if self.highest_identity:
            self._raise_counter(keys=[f"{self.p}:next_identity"], args=[self.highest_identity])
        self.highest_identity = max(self.highest_identity, int(self.r.get(f"{self.p}:next_identity") or 0))
        return self.generation, bool(int(created))

    def check_generation(self) -> None:
        """Raise StoreReset when the store is no longer the generation this object opened."""
        if self.generation is None:
            return
        found = self.r.get(f"{self.p}:generation")
        found = found.decode() if found is not None else None
        if found != self.generation:
            raise StoreReset(self.generation, found)

    def saw_identity(self, identity_id: int) -> None:
        self.highest_identity = max(self.highest_identity, int(identity_id))

    # -- atomic gallery writes --------------------------------------------------------------------
    def commit(self, ops: StoreOp, expected_version: int) -> CommitResult:
        """Apply `ops` atomically; structural ops only if the gallery is still at `expected_version`, and
        nothing unless the store is still the generation this object opened (else status "reset")."""
        if not ops.ops:
            return CommitResult("ok", expected_version, [])
        raw = self._commit(args=[self.p, expected_version, self.gallery_log_maxlen, self.retention_s,
                                 self.generation or "", self.highest_identity, json.dumps(ops.ops), *ops.blobs])
        status = int(raw[0])
        if status == 0:
            return CommitResult("stale", int(raw[1]), [])
        if status == -1:
            return CommitResult("gone", -1, [], gone_identity=int(raw[1]))
        if status == -2:
            found = raw[1].decode() if isinstance(raw[1], bytes) else str(raw[1])
            return CommitResult("reset", -1, [], generation=found)
        results = [int(x) for x in raw[2:]]
        for op, r in zip(ops.ops, results):
            if op["op"] == "create":
                self.saw_identity(r)
        return CommitResult("ok", int(raw[1]), results)

    def gallery_version(self) -> int:
        return int(self.r.get(f"{self.p}:gallery_version") or 0)

    def read_gallery_changes(self, after_id: str, count: int = 10_000) -> tuple[list[tuple[str, GalleryChange]], int]:
        """Log entries after `after_id` and the current version, read in one atomic round trip; raises
        StoreReset when the store is no longer the generation this object opened."""
        with self.r.pipeline(transaction=True) as pipe:
            pipe.xrange(self.gallery_log, min=f"({after_id}" if after_id != "0-0" else "-", count=count)
            pipe.get(f"{self.p}:gallery_version")
            pipe.get(f"{self.p}:generation")
            entries, version, generation = pipe.execute()
        self._check(generation)
        changes = [(sid.decode(), _change(f)) for sid, f in entries]
        for _, ch in changes:
            self.saw_identity(ch.identity_id)
        return changes, int(version or 0)

    def _check(self, found: bytes | None) -> None:
        if self.generation is not None and (found.decode() if found is not None else None) != self.generation:
            raise StoreReset(self.generation, found.decode() if found is not None else None)

    def gallery_snapshot(self) -> tuple[str, int, Prototypes, dict[int, IdentityRecord]]:
        """(last log id, version, prototypes, live identity records) for a worker's full (re)load.

        The log position is read before the prototypes, so changes racing with the scan are re-applied
        from the log afterwards (every log entry is idempotent)."""
        with self.r.pipeline(transaction=True) as pipe:
            pipe.xrevrange(self.gallery_log, count=1)
            pipe.get(f"{self.p}:gallery_version")
            pipe.zrange(f"{self.p}:identities", 0, -1)
            pipe.get(f"{self.p}:next_identity")
            pipe.get(f"{self.p}:generation")
            last, version, ids, counter, generation = pipe.execute()
        self._check(generation)
        self.saw_identity(int(counter or 0))
        last_id = last[0][0].decode() if last else "0-0"
        records: dict[int, IdentityRecord] = {}
        rows_i, rows_o, vecs, looks = [], [], [], []
        ids = [int(i) for i in ids]
        for start in range(0, len(ids), 1000):
            chunk = ids[start:start + 1000]
            with self.r.pipeline(transaction=False) as pipe:
                for i in chunk:
                    pipe.hgetall(f"{self.p}:identity:{i}")
                    pipe.hgetall(f"{self.p}:protos:{i}")
                    pipe.hgetall(f"{self.p}:looks:{i}")
                res = pipe.execute()
            for k, i in enumerate(chunk):
                h, protos, lk = res[3 * k: 3 * k + 3]
                rec = _record(i, h)
                if rec is None or rec.merged_into is not None:
                    continue
                records[i] = rec
                for outfit, blob in protos.items():
                    rows_i.append(i)
                    rows_o.append(int(outfit))
                    vecs.append(vector_from_bytes(blob))
                    lb = lk.get(outfit)
                    looks.append(vector_from_bytes(lb) if lb is not None else None)
        dim = vecs[0].shape[0] if vecs else 0
        protos = Prototypes(np.asarray(rows_i, np.int64), np.asarray(rows_o, np.int64),
                            np.stack(vecs) if vecs else np.zeros((0, dim), np.float32), looks)
        return last_id, int(version or 0), protos, records

    # -- single writes (kept for scripts and tests; the matcher commits whole steps) ---------------
    def create_identity(self, vector: np.ndarray, camera_id: str, ts: float | None = None,
                        look: np.ndarray | None = None) -> int:
        """Create an identity unconditionally (no race check: the matcher uses `commit` instead)."""
        ts = time.time() if ts is None else ts
        ops = StoreOp()
        ops.create(vector, look, camera_id, ts, live=False)
        for _ in range(100):
            res = self.commit(ops, self.gallery_version())
            if res.status == "ok":
                return res.results[0]
        raise RuntimeError("create_identity: the gallery version kept moving for 100 tries")

    def record_sighting(self, identity_id: int, camera_id: str, outfit_id: int, vector: np.ndarray,
                        ts: float | None = None, new_sighting: bool = True) -> None:
        """Update the outfit prototype, last-seen time, camera list and (for a new sighting) the count."""
        ts = time.time() if ts is None else ts
        ops = StoreOp()
        ops.update(identity_id, outfit_id, vector, None, camera_id, ts, sighting=new_sighting, live=False)
        res = self.commit(ops, 0)
        if res.status == "gone":
            raise KeyError(f"identity {identity_id} does not exist (expired or merged)")

    def track_identity(self, tracklet_id: str) -> int | None:
        v = self.r.get(f"{self.p}:track:{tracklet_id}")
        return int(v) if v is not None else None

    # -- reads -----------------------------------------------------------------------------------
    def identity(self, identity_id: int) -> IdentityRecord | None:
        return _record(identity_id, self.r.hgetall(f"{self.p}:identity:{identity_id}"))

    def resolve(self, identity_id: int) -> int:
        """The identity an id stands for now, following merges."""
        seen = set()
        while identity_id not in seen:
            seen.add(identity_id)
            into = self.r.hget(f"{self.p}:identity:{identity_id}", "merged_into")
            if into is None:
                return identity_id
            identity_id = int(into)
        raise RuntimeError(f"merge cycle at identity {identity_id}")

    def identities(self, include_merged: bool = True) -> list[IdentityRecord]:
        """All identities (by creation time); ids whose keys expired are dropped from the index."""
        ids = [int(i) for i in self.r.zrange(f"{self.p}:identities", 0, -1)]
        out, expired = [], []
        for start in range(0, len(ids), 1000):
            chunk = ids[start:start + 1000]
            with self.r.pipeline(transaction=False) as pipe:
                for i in chunk:
                    pipe.hgetall(f"{self.p}:identity:{i}")
                for i, h in zip(chunk, pipe.execute()):
                    rec = _record(i, h)
                    if rec is None:
                        expired.append(i)
                    elif include_merged or rec.merged_into is None:
                        out.append(rec)
        if expired:
            self.r.zrem(f"{self.p}:identities", *expired)
        return out

    def prototypes(self) -> Prototypes:
        """All prototypes of identities that were not merged away."""
        return self.gallery_snapshot()[2]

    # -- events ---------------------------------------------------------------------------------
    def publish(self, events: list[IdentityEvent]) -> list[str]:
        if not events:
            return []
        with self.r.pipeline(transaction=False) as pipe:
            for ev in events:
                pipe.xadd(self.stream, {"json": ev.to_json()}, maxlen=self.stream_maxlen, approximate=True)
            return [i.decode() for i in pipe.execute()]

    def read_events(self, from_start: bool = True, follow: bool = False, block_ms: int = 1000,
                    idle_exit_s: float | None = None, after: str | None = None) -> Iterator[tuple[str, dict]]:
        """Yield (stream id, event dict) after stream id `after` (default: from the start, or with `follow`
        and not `from_start` only new events). With `follow`, wait for new events until interrupted."""
        last = after if after is not None else ("0-0" if from_start or not follow else "$")
        if not follow:
            start = "-" if last == "0-0" else f"({last}"
            while True:
                batch = self.r.xrange(self.stream, min=start, count=1000)
                if not batch:
                    return
                for sid, fields in batch:
                    yield sid.decode(), json.loads(fields[b"json"])
                start = "(" + batch[-1][0].decode()
        idle_since = time.monotonic()
        while True:
            res = self.r.xread({self.stream: last}, count=1000, block=block_ms)
            if not res:
                if idle_exit_s is not None and time.monotonic() - idle_since > idle_exit_s:
                    return
                continue
            idle_since = time.monotonic()
            for sid, fields in res[0][1]:
                last = sid.decode()
                yield last, json.loads(fields[b"json"])


def _record(identity_id: int, h: dict) -> IdentityRecord | None:
    if not h:
        return None
    g = {k.decode(): v.decode() for k, v in h.items()}
    return IdentityRecord(identity_id, float(g["created"]), float(g["last_seen"]), json.loads(g["cameras"]),
                          int(g["sightings"]), int(g["outfits"]), g.get("last_camera") or None,
                          int(g["merged_into"]) if "merged_into" in g else None, int(g.get("merged_outfits", 0)))


def _change(f: dict) -> GalleryChange:
    g = {k.decode(): v for k, v in f.items()}
    vec = g.get("vec")
    look = g.get("look")
    return GalleryChange(
        op=g["op"].decode(), identity_id=int(g["id"]), outfit_id=int(g.get("outfit", b"0")),
        camera_id=g.get("camera", b"").decode(), ts=float(g.get("ts", b"0")), live=g.get("live", b"0") == b"1",
        version=int(g.get("version", b"0")), vector=vector_from_bytes(vec) if vec is not None else None,
        look=vector_from_bytes(look) if look is not None else None,
        into=int(g["into"]) if "into" in g else None,
    )


def describe_identity(rec: IdentityRecord, merged_from: list[int] | None = None) -> dict:
    """One identity as `identities` prints it: `outfits` counts its own outfits (a merge adds none; the
    identities merged into it are listed in `merged_from`); a merged identity has `merged_into`."""
    return {"identity_id": rec.identity_id, "first_seen": iso_utc(rec.created), "last_seen": iso_utc(rec.last_seen),
            "cameras": rec.cameras, "outfits": rec.own_outfits, "sightings": rec.sightings,
            "last_camera": rec.last_camera, "merged_into": rec.merged_into,
            "merged_from": sorted(merged_from or []),
            "status": "merged" if rec.merged_into is not None else "active"}


def merged_from_map(records: list[IdentityRecord]) -> dict[int, list[int]]:
    """identity -> the identities merged directly into it."""
    out: dict[int, list[int]] = {}
    for rec in records:
        if rec.merged_into is not None:
            out.setdefault(rec.merged_into, []).append(rec.identity_id)
    return out
