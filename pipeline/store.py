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

Retention: with `retention_s`, every identity's keys and track links expire that long after the
identity was last seen (each sighting renews them); the gallery log and the event stream are capped by
length. Without it, identities are kept until deleted.
"""

from __future__ import annotations

import json
import logging
import time
from collections import deque
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

import numpy as np
import redis
from redis.backoff import ExponentialBackoff
from redis.retry import Retry

from pipeline.events import IdentityEvent, iso_utc
from pipeline.redact import redact_url
from pipeline.redis_server import RedisServer

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


@dataclass(frozen=True)
class Prototypes:
    identity_ids: np.ndarray  # (P,) int64
    outfit_ids: np.ndarray  # (P,) int64
    vectors: np.ndarray  # (P, D) float32
    looks: list[np.ndarray | None] = field(default_factory=list)  # per row, None when never stored


# -- the commit script ------------------------------------------------------------------------------
# ARGV: prefix, expected gallery version, gallery log maxlen, retention seconds (0 = keep), ops as JSON,
# then the vector blobs the ops refer to by 1-based index into that tail (0 = none).
# Returns {1, new version, result per op} or {0, current version} (stale: structural op on an old
# version) or {-1, identity id} (an op names an identity that expired or was merged away).
_COMMIT_LUA = r"""
local p = ARGV[1]
local expected = tonumber(ARGV[2])
local maxlen = ARGV[3]
local ttl = tonumber(ARGV[4])
local ops = cjson.decode(ARGV[5])
local function blob(i) i = tonumber(i) if i == nil or i == 0 then return nil end return ARGV[5 + i] end
local version = tonumber(redis.call('GET', p .. ':gallery_version') or '0')
local structural = false
for _, op in ipairs(ops) do
  if op.op == 'create' or op.op == 'outfit' or op.op == 'merge' then structural = true end
end
if structural and version ~= expected then return {0, version} end
-- validate every target before the first write: a script is not rolled back on error
for _, op in ipairs(ops) do
  local ids = {}
  if op.op == 'merge' then ids = {op.keep, op.drop} elseif op.op ~= 'create' then ids = {op.id} end
  for _, id in ipairs(ids) do
    local h = p .. ':identity:' .. id
    if redis.call('EXISTS', h) == 0 or redis.call('HEXISTS', h, 'merged_into') == 1 then return {-1, tonumber(id)} end
  end
end
local function renew(id)
  if ttl > 0 then
    for _, k in ipairs({':identity:', ':protos:', ':looks:'}) do redis.call('EXPIRE', p .. k .. id, ttl) end
  end
end
local function log(fields)
  local args = {'XADD', p .. ':gallery_log', 'MAXLEN', '~', maxlen, '*'}
  for i = 1, #fields do args[#args + 1] = fields[i] end
  redis.call(unpack(args))
end
local function add_camera(h, camera)
  local cams = cjson.decode(redis.call('HGET', h, 'cameras') or '[]')
  for _, c in ipairs(cams) do if c == camera then return end end
  cams[#cams + 1] = camera
  table.sort(cams)
  redis.call('HSET', h, 'cameras', cjson.encode(cams))
end
local function seen(id, camera, ts, sighting)
  local h = p .. ':identity:' .. id
  if tonumber(redis.call('HGET', h, 'last_seen') or '0') < tonumber(ts) then
    redis.call('HSET', h, 'last_seen', ts, 'last_camera', camera)
  end
  add_camera(h, camera)
  if sighting then redis.call('HINCRBY', h, 'sightings', 1) end
end
local function link(tracklet, id)
  if tracklet and tracklet ~= '' then
    if ttl > 0 then redis.call('SET', p .. ':track:' .. tracklet, id, 'EX', ttl)
    else redis.call('SET', p .. ':track:' .. tracklet, id) end
  end
end
local function put(id, outfit, vec, look)
  if vec then redis.call('HSET', p .. ':protos:' .. id, outfit, vec) end
  if look then redis.call('HSET', p .. ':looks:' .. id, outfit, look) end
end
local function log_row(kind, id, outfit, op, vec, look)
  local f = {'op', kind, 'id', id, 'outfit', outfit, 'camera', op.camera or '', 'ts', op.ts or '0',
             'live', op.live or '0', 'version', version}
  if vec then f[#f + 1] = 'vec' f[#f + 1] = vec end
  if look then f[#f + 1] = 'look' f[#f + 1] = look end
  log(f)
end
local out = {1, 0}
for _, op in ipairs(ops) do
  local res = 0
  if op.op == 'create' then
    local id = tostring(redis.call('INCR', p .. ':next_identity'))
    version = version + 1
    redis.call('ZADD', p .. ':identities', op.ts, id)
    redis.call('HSET', p .. ':identity:' .. id, 'created', op.ts, 'last_seen', op.ts, 'last_camera', op.camera,
               'cameras', cjson.encode({op.camera}), 'sightings', 1, 'outfits', 1)
    put(id, '1', blob(op.vec), blob(op.look))
    link(op.tracklet, id)
    renew(id)
    log_row('create', id, '1', op, blob(op.vec), blob(op.look))
    res = tonumber(id)
  elseif op.op == 'outfit' then
    local outfit = tostring(redis.call('HINCRBY', p .. ':identity:' .. op.id, 'outfits', 1))
    version = version + 1
    put(op.id, outfit, blob(op.vec), blob(op.look))
    seen(op.id, op.camera, op.ts, op.sighting == '1')
    link(op.tracklet, op.id)
    renew(op.id)
    log_row('outfit', op.id, outfit, op, blob(op.vec), blob(op.look))
    res = tonumber(outfit)
  elseif op.op == 'update' then
    put(op.id, op.outfit, blob(op.vec), blob(op.look))
    seen(op.id, op.camera, op.ts, op.sighting == '1')
    link(op.tracklet, op.id)
    renew(op.id)
    log_row('update', op.id, op.outfit, op, blob(op.vec), blob(op.look))
  elseif op.op == 'presence' then
    seen(op.id, op.camera, op.ts, false)
    log_row('presence', op.id, '0', op, nil, nil)
  elseif op.op == 'merge' then
    -- the dropped identity's outfits become new outfits of the kept one; the dropped identity stays,
    -- marked merged_into, so old track links and events still resolve
    local keep, drop = op.keep, op.drop
    local kh, dh = p .. ':identity:' .. keep, p .. ':identity:' .. drop
    version = version + 1
    redis.call('HSET', dh, 'merged_into', keep)
    log({'op', 'merge', 'id', drop, 'into', keep, 'ts', op.ts, 'version', version})
    local protos = redis.call('HGETALL', p .. ':protos:' .. drop)
    local looks = redis.call('HGETALL', p .. ':looks:' .. drop)
    local look_of = {}
    for i = 1, #looks, 2 do look_of[looks[i]] = looks[i + 1] end
    for i = 1, #protos, 2 do
      local outfit = tostring(redis.call('HINCRBY', kh, 'outfits', 1))
      put(keep, outfit, protos[i + 1], look_of[protos[i]])
      log_row('outfit', keep, outfit, {camera = '', ts = op.ts}, protos[i + 1], look_of[protos[i]])
      res = res + 1
    end
    redis.call('HINCRBY', kh, 'sightings', tonumber(redis.call('HGET', dh, 'sightings') or '0'))
    for _, c in ipairs(cjson.decode(redis.call('HGET', dh, 'cameras') or '[]')) do add_camera(kh, c) end
    local dc = tonumber(redis.call('HGET', dh, 'created') or op.ts)
    if dc < tonumber(redis.call('HGET', kh, 'created')) then
      redis.call('HSET', kh, 'created', dc)
      redis.call('ZADD', p .. ':identities', dc, keep)
    end
    local dl = tonumber(redis.call('HGET', dh, 'last_seen') or '0')
    if dl > tonumber(redis.call('HGET', kh, 'last_seen') or '0') then
      redis.call('HSET', kh, 'last_seen', dl, 'last_camera', redis.call('HGET', dh, 'last_camera') or '')
    end
    renew(keep)
    renew(drop)
  end
  out[#out + 1] = res
end
redis.call('SET', p .. ':gallery_version', version)
out[2] = version
return out
"""


@dataclass(frozen=True)
class CommitResult:
    status: str  # "ok" | "stale" | "gone"
    version: int
    results: list[int]  # per op: new identity id (create), new outfit id (outfit), outfits moved (merge), else 0
    gone_identity: int | None = None


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
        self._commit = client.register_script(_COMMIT_LUA)

    @property
    def gallery_log(self) -> str:
        return f"{self.p}:gallery_log"

    # -- atomic gallery writes --------------------------------------------------------------------
    def commit(self, ops: StoreOp, expected_version: int) -> CommitResult:
        """Apply `ops` atomically; structural ops only if the gallery is still at `expected_version`."""
        if not ops.ops:
            return CommitResult("ok", expected_version, [])
        raw = self._commit(args=[self.p, expected_version, self.gallery_log_maxlen, self.retention_s,
                                 json.dumps(ops.ops), *ops.blobs])
        status = int(raw[0])
        if status == 0:
            return CommitResult("stale", int(raw[1]), [])
        if status == -1:
            return CommitResult("gone", -1, [], gone_identity=int(raw[1]))
        return CommitResult("ok", int(raw[1]), [int(x) for x in raw[2:]])

    def gallery_version(self) -> int:
        return int(self.r.get(f"{self.p}:gallery_version") or 0)

    def read_gallery_changes(self, after_id: str, count: int = 10_000) -> tuple[list[tuple[str, GalleryChange]], int]:
        """Log entries after `after_id` and the current version, read in one atomic round trip."""
        with self.r.pipeline(transaction=True) as pipe:
            pipe.xrange(self.gallery_log, min=f"({after_id}" if after_id != "0-0" else "-", count=count)
            pipe.get(f"{self.p}:gallery_version")
            entries, version = pipe.execute()
        return [(sid.decode(), _change(f)) for sid, f in entries], int(version or 0)

    def gallery_snapshot(self) -> tuple[str, int, Prototypes, dict[int, IdentityRecord]]:
        """(last log id, version, prototypes, live identity records) for a worker's full (re)load.

        The log position is read before the prototypes, so changes racing with the scan are re-applied
        from the log afterwards (every log entry is idempotent)."""
        with self.r.pipeline(transaction=True) as pipe:
            pipe.xrevrange(self.gallery_log, count=1)
            pipe.get(f"{self.p}:gallery_version")
            pipe.zrange(f"{self.p}:identities", 0, -1)
            last, version, ids = pipe.execute()
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

    def link_track(self, tracklet_id: str, identity_id: int) -> None:
        if self.retention_s:
            self.r.set(f"{self.p}:track:{tracklet_id}", identity_id, ex=self.retention_s)
        else:
            self.r.set(f"{self.p}:track:{tracklet_id}", identity_id)

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
                    idle_exit_s: float | None = None) -> Iterator[tuple[str, dict]]:
        """Yield (stream id, event dict). With `follow`, wait for new events until interrupted."""
        last = "0-0" if from_start else "$"
        if not follow:
            start = "-"
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
                          int(g["merged_into"]) if "merged_into" in g else None)


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


def describe_identity(rec: IdentityRecord) -> dict:
    return {"identity_id": rec.identity_id, "first_seen": iso_utc(rec.created), "last_seen": iso_utc(rec.last_seen),
            "cameras": rec.cameras, "outfits": rec.outfits, "sightings": rec.sightings,
            "last_camera": rec.last_camera, "merged_into": rec.merged_into}


@contextmanager
def open_redis(url: str, embedded_dir: str | Path, **client_kwargs) -> Iterator[redis.Redis]:
    """A Redis client for a store URL; `embedded` starts (or reuses) the private server in `embedded_dir`.
    `client_kwargs` go to redis.Redis (the runner passes short timeouts, see `runtime_client_options`)."""
    if url == "embedded":
        server = RedisServer(embedded_dir).start()
        try:
            yield server.client(**client_kwargs)
        finally:
            server.stop()
        return
    client = redis.Redis.from_url(url, **{"socket_connect_timeout": 5, **client_kwargs})
    try:
        client.ping()
    except redis.RedisError as exc:
        raise ConnectionError(f"cannot reach the store at {redact_url(url)}: {exc}") from exc
    try:
        yield client
    finally:
        client.close()


# -- store outages ---------------------------------------------------------------------------------
# What the run loop passes to its client: fail fast (one quick retry for a dropped idle connection,
# bounded connect and reply times) so an unreachable store costs the cameras milliseconds, not the
# default client's retries with multi-second backoff.
def runtime_client_options() -> dict:
    return {"socket_connect_timeout": 2.0, "socket_timeout": 5.0,
            "retry": Retry(ExponentialBackoff(cap=0.2, base=0.05), 1)}
STORE_DOWN_ERRORS = (redis.ConnectionError, redis.TimeoutError)  # BusyLoadingError is a ConnectionError


class StoreUnavailable(RuntimeError):
    """The store cannot be reached now; the caller defers what needed it."""


class StoreLink:
    """Keeps a run going through a store outage.

    Events wait in a bounded outbox (oldest dropped, and counted, only beyond `max_buffered`) and are
    published in order once the store answers again; calls that need the store (`call`) are refused at
    once while it is down, so the cameras, tracking and outputs never wait on it; the store is tried
    again with exponential backoff. Delivery is at least once: a batch cut by the outage may be
    published twice (events carry `event_id` for consumers that must deduplicate).
    """

    def __init__(self, store: IdentityStore, where: str, max_buffered: int = 100_000,
                 retry_initial_s: float = 0.5, retry_max_s: float = 5.0, clock=time.monotonic) -> None:
        self.store = store
        self.where = where  # redacted store URL, for messages
        self.outbox: deque[IdentityEvent] = deque()
        self.max_buffered = max_buffered
        self.dropped = 0
        self.up = True
        self.outages = 0
        self._clock = clock
        self._initial, self._max = retry_initial_s, retry_max_s
        self._delay = retry_initial_s
        self._next_try = 0.0
        self._down_since: float | None = None

    def ready(self) -> bool:
        """True when the store is up, or down but due for another try."""
        return self.up or self._clock() >= self._next_try

    def call(self, fn, *args, **kwargs):
        if not self.ready():
            raise StoreUnavailable(f"store at {self.where} is unreachable")
        try:
            result = fn(*args, **kwargs)
        except STORE_DOWN_ERRORS as exc:
            self._went_down(exc)
            raise StoreUnavailable(f"store at {self.where} is unreachable: {exc}") from exc
        self._came_back()
        return result

    def publish(self, events: list[IdentityEvent]) -> int:
        """Queue `events` and publish what the store takes now; returns how many were published."""
        self.outbox.extend(events)
        overflow = len(self.outbox) - self.max_buffered
        if overflow > 0:
            for _ in range(overflow):
                self.outbox.popleft()
            if self.dropped == 0:
                log.error("store at %s unreachable and %d events buffered: dropping the oldest from now on",
                          self.where, self.max_buffered)
            self.dropped += overflow
        return self.flush()

    def flush(self, chunk: int = 500) -> int:
        published = 0
        while self.outbox and self.ready():
            batch = [self.outbox[i] for i in range(min(chunk, len(self.outbox)))]
            try:
                self.call(self.store.publish, batch)
            except StoreUnavailable:
                break
            for _ in batch:
                self.outbox.popleft()
            published += len(batch)
        return published

    def _went_down(self, exc: Exception) -> None:
        now = self._clock()
        if self.up:
            self.up, self._down_since, self._delay = False, now, self._initial
            self.outages += 1
            log.error("store at %s unreachable (%s): cameras keep running; events are buffered and identity "
                      "decisions wait until it answers again", self.where, exc)
        self._next_try = now + self._delay
        self._delay = min(self._delay * 2, self._max)

    def _came_back(self) -> None:
        if not self.up:
            log.warning("store at %s answers again after %.1f s; publishing %d buffered events",
                        self.where, self._clock() - (self._down_since or self._clock()), len(self.outbox))
            self.up, self._delay, self._down_since = True, self._initial, None
