"""Cross-camera matching through clothing changes.

* Identity link: a tracklet's quality-weighted identity embedding against every prototype (cosine, one
  matrix product); an identity's score is its best prototype, so each outfit is its own prototype.
* Outfit: among the linked identity's prototypes, the appearance (outfit) descriptor decides whether the
  tracklet wears a known outfit (its prototype is refined) or a new one (a new prototype row and an
  `outfit_changed` decision).
* Joint assignment: the tracklets decided in the same step are assigned together with the Hungarian
  method (scipy's linear_sum_assignment) maximising the summed similarity above the threshold, so two
  simultaneous tracklets never take the same identity (unless their cameras overlap).
* Constraints: an identity held by a live track of the same camera, or seen live in a camera that does
  not overlap this one, is not a candidate (one person, one place); with a topology, a transit between
  two cameras faster than `min_s` (or, before `revisit_after_s`, slower than `max_s`) is impossible.
* Later evidence (the tracklet at 2x, 4x... its decision crops and at its end) may show that its
  identity is another, older one: the two are merged (`identity.merged`), never silently rewritten.
* Search: one numpy matrix product over all prototypes (exact); `index="usearch"` lets an HNSW index
  propose the candidates of large galleries, re-scored exactly (see benchmarks/matcher_latency.py).
* Several workers: each keeps the gallery in memory and reads the store's gallery log incrementally
  (one XRANGE per decision step); every write goes through the store's atomic compare-and-set commit,
  retried after a re-read when another worker changed the gallery first (see pipeline/store.py).
"""

from __future__ import annotations

import logging
import time
from collections import deque
from dataclasses import dataclass, field

import numpy as np
from scipy.optimize import linear_sum_assignment

from pipeline.store import CommitResult, GalleryChange, IdentityStore, StoreOp

log = logging.getLogger("pipeline.matcher")
_NO = -1e9  # cost of a forbidden pairing in the assignment matrix


def _unit(v: np.ndarray) -> np.ndarray:
    v = np.asarray(v, np.float32)
    return v / max(float(np.linalg.norm(v)), 1e-12)


class PrototypeGallery:
    """Row-wise L2-normalised prototypes (identity feature + optional outfit descriptor) with their
    (identity, outfit) labels; grows by doubling, removes by swapping the last row in.

    Candidate search is exact (one matrix product over all rows) unless `index="usearch"`: then, from
    `ann_min_rows` rows on, an HNSW index (usearch, inner product, float16 copy) proposes candidates and
    their cosines are computed exactly from the matrix; the index follows every upsert and removal."""

    def __init__(self, dim: int = 0, capacity: int = 1024, index: str = "exact", ann_min_rows: int = 50_000) -> None:
        if index not in ("exact", "usearch"):
            raise ValueError(f"gallery index must be 'exact' or 'usearch', got {index!r}")
        if index == "usearch":
            try:
                import usearch.index  # noqa: F401
            except ImportError as exc:
                raise RuntimeError("matcher.index 'usearch' needs the usearch package: pip install usearch") from exc
        self.index_kind = index
        self.ann_min_rows = ann_min_rows
        self._ann = None  # the usearch Index once built
        self._key = np.zeros(capacity, np.uint64)  # stable key per row (rows move on removal, keys do not)
        self._row_of_key: dict[int, int] = {}
        self._next_key = 0
        self.dim = dim
        self.look_dim = 0
        self._cap = capacity
        self._vectors = np.zeros((capacity, dim), np.float32)
        self._looks = np.zeros((capacity, 0), np.float32)
        self._has_look = np.zeros(capacity, bool)
        self._identity = np.zeros(capacity, np.int64)
        self._outfit = np.zeros(capacity, np.int64)
        self._row: dict[tuple[int, int], int] = {}
        self._rows_of: dict[int, set[int]] = {}
        self.size = 0

    def __len__(self) -> int:
        return self.size

    @property
    def vectors(self) -> np.ndarray:
        return self._vectors[: self.size]

    @property
    def identity_ids(self) -> np.ndarray:
        return self._identity[: self.size]

    def identities(self) -> set[int]:
        return set(self._rows_of)

    def _grow(self) -> None:
        self._cap *= 2
        for name in ("_vectors", "_looks"):
            old = getattr(self, name)
            new = np.zeros((self._cap, old.shape[1]), np.float32)
            new[: self.size] = old[: self.size]
            setattr(self, name, new)
        for name in ("_identity", "_outfit", "_has_look", "_key"):
            old = getattr(self, name)
            new = np.zeros(self._cap, old.dtype)
            new[: self.size] = old[: self.size]
            setattr(self, name, new)

    def upsert(self, identity_id: int, outfit_id: int, vector: np.ndarray, look: np.ndarray | None = None) -> None:
        vector = np.asarray(vector, np.float32)
        if self.dim == 0:
            self.dim = vector.shape[0]
            self._vectors = np.zeros((self._cap, self.dim), np.float32)
        if vector.shape != (self.dim,):
            raise ValueError(f"prototype has dimension {vector.shape}, the gallery holds {self.dim}")
        if look is not None:
            look = np.asarray(look, np.float32)
            if self.look_dim == 0:
                self.look_dim = look.shape[0]
                self._looks = np.zeros((self._cap, self.look_dim), np.float32)
            if look.shape != (self.look_dim,):
                raise ValueError(f"outfit descriptor has dimension {look.shape}, the gallery holds {self.look_dim}")
        key = (identity_id, outfit_id)
        row = self._row.get(key)
        if row is None:
            if self.size == self._cap:
                self._grow()
            row = self.size
            self.size += 1
            self._row[key] = row
            self._rows_of.setdefault(identity_id, set()).add(row)
            self._identity[row], self._outfit[row] = identity_id, outfit_id
            self._has_look[row] = False
            self._key[row] = self._next_key
            self._row_of_key[self._next_key] = row
            self._next_key += 1
        elif self._ann is not None:
            self._ann.remove(int(self._key[row]))
        self._vectors[row] = _unit(vector)
        if self._ann is not None:
            self._ann.add(int(self._key[row]), self._vectors[row])
        if look is not None:
            self._looks[row] = _unit(look)
            self._has_look[row] = True

    def extend(self, identity_ids: np.ndarray, outfit_ids: np.ndarray, vectors: np.ndarray,
               looks: np.ndarray | None = None, has_look: np.ndarray | None = None) -> None:
        """Bulk-append new (identity, outfit) rows (a full load, a benchmark); normalises in one pass."""
        vectors = np.asarray(vectors, np.float32)
        n = vectors.shape[0]
        if n == 0:
            return
        if self.dim == 0:
            self.dim = vectors.shape[1]
            self._vectors = np.zeros((self._cap, self.dim), np.float32)
        if vectors.shape[1] != self.dim:
            raise ValueError(f"prototypes have dimension {vectors.shape[1]}, the gallery holds {self.dim}")
        if looks is not None and self.look_dim == 0:
            self.look_dim = looks.shape[1]
            self._looks = np.zeros((self._cap, self.look_dim), np.float32)
        keys = list(zip(np.asarray(identity_ids).tolist(), np.asarray(outfit_ids).tolist()))
        if any(k in self._row for k in keys) or len(set(keys)) != n:
            raise ValueError("extend() takes new, distinct (identity, outfit) rows; use upsert() to update")
        while self.size + n > self._cap:
            self._grow()
        sl = slice(self.size, self.size + n)
        self._vectors[sl] = vectors / np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12)
        if looks is not None:
            looks = np.asarray(looks, np.float32)
            self._looks[sl] = looks / np.maximum(np.linalg.norm(looks, axis=1, keepdims=True), 1e-12)
            self._has_look[sl] = True if has_look is None else has_look
        else:
            self._has_look[sl] = False
        self._identity[sl], self._outfit[sl] = identity_ids, outfit_ids
        self._key[sl] = np.arange(self._next_key, self._next_key + n, dtype=np.uint64)
        for row, key in enumerate(keys, start=self.size):
            self._row[key] = row
            self._rows_of.setdefault(key[0], set()).add(row)
            self._row_of_key[self._next_key + row - self.size] = row
        self._next_key += n
        if self._ann is not None:
            self._ann.add(self._key[sl], self._vectors[sl])
        self.size += n

    def remove_identity(self, identity_id: int) -> None:
        for row in sorted(self._rows_of.pop(identity_id, set()), reverse=True):
            last = self.size - 1
            del self._row[(int(self._identity[row]), int(self._outfit[row]))]
            del self._row_of_key[int(self._key[row])]
            if self._ann is not None:
                self._ann.remove(int(self._key[row]))
            if row != last:  # move the last row into the hole
                key = (int(self._identity[last]), int(self._outfit[last]))
                for arr in (self._vectors, self._looks, self._has_look, self._identity, self._outfit, self._key):
                    arr[row] = arr[last]
                self._row[key] = row
                self._row_of_key[int(self._key[row])] = row
                rows = self._rows_of[key[0]]
                rows.discard(last)
                rows.add(row)
            self.size -= 1

    def prototype(self, identity_id: int, outfit_id: int) -> np.ndarray | None:
        row = self._row.get((identity_id, outfit_id))
        return None if row is None else self._vectors[row].copy()

    def look(self, identity_id: int, outfit_id: int) -> np.ndarray | None:
        row = self._row.get((identity_id, outfit_id))
        return None if row is None or not self._has_look[row] else self._looks[row].copy()

    def outfits(self, identity_id: int) -> list[int]:
        return sorted(int(self._outfit[r]) for r in self._rows_of.get(identity_id, ()))

    def best_outfit(self, identity_id: int, look: np.ndarray | None) -> tuple[int | None, float]:
        """The identity's outfit whose descriptor is closest to `look`, and that cosine."""
        rows = [r for r in self._rows_of.get(identity_id, ()) if self._has_look[r]]
        if look is None or not rows or self.look_dim != look.shape[0]:
            return None, -1.0
        sims = self._looks[rows] @ _unit(look)
        k = int(np.argmax(sims))
        return int(self._outfit[rows[k]]), float(sims[k])

    def similarities(self, queries: np.ndarray) -> np.ndarray:
        """(Q, P) cosine of L2-normalised queries against every prototype."""
        queries = np.asarray(queries, np.float32)
        if self.size == 0:
            return np.zeros((queries.shape[0], 0), np.float32)
        if queries.shape[1] != self.dim:
            raise ValueError(f"query dimension {queries.shape[1]} does not match the gallery's {self.dim} "
                             "(was the store filled by another ReID model? use another key_prefix)")
        # (P, D) @ (D, Q) keeps the big matrix C-contiguous; queries @ V.T would copy it for Q > 1
        return (self._vectors[: self.size] @ queries.T).T

    def top_identities(self, sims: np.ndarray, k: int) -> list[dict[int, float]]:
        """Per query row of `sims`: {identity: best prototype cosine} over its `k` best prototypes."""
        out: list[dict[int, float]] = []
        if self.size == 0:
            return [{} for _ in range(sims.shape[0])]
        k = min(k, self.size)
        top = np.argpartition(-sims, k - 1, axis=1)[:, :k] if k < self.size else np.broadcast_to(
            np.arange(self.size), (sims.shape[0], self.size))
        ids = self._identity[top]
        vals = np.take_along_axis(sims, top, axis=1)
        for i in range(sims.shape[0]):
            best: dict[int, float] = {}
            for ident, v in zip(ids[i].tolist(), vals[i].tolist()):
                if v > best.get(ident, -np.inf):
                    best[ident] = v
            out.append(best)
        return out

    def candidates(self, queries: np.ndarray, k: int) -> list[dict[int, float]]:
        """Per query: {identity: best prototype cosine} over its `k` most similar prototypes (exact
        cosines; the prototypes themselves come from the ANN index when one is in use)."""
        queries = np.asarray(queries, np.float32)
        if self.index_kind == "usearch" and self.size >= self.ann_min_rows:
            if self._ann is None:
                self._build_ann()
            matches = self._ann.search(queries, min(k, self.size))
            out = []
            for i in range(queries.shape[0]):
                rows = [self._row_of_key[int(key)] for key in np.asarray(matches.keys[i]).ravel()
                        if int(key) in self._row_of_key]
                sims = self._vectors[rows] @ queries[i] if rows else np.zeros(0, np.float32)
                best: dict[int, float] = {}
                for ident, v in zip(self._identity[rows].tolist(), sims.tolist()):
                    if v > best.get(ident, -np.inf):
                        best[ident] = v
                out.append(best)
            return out
        return self.top_identities(self.similarities(queries), k)

    def _build_ann(self) -> None:
        from usearch.index import Index

        self._ann = Index(ndim=self.dim, metric="ip", dtype="f16")
        self._ann.add(self._key[: self.size], self._vectors[: self.size])

    def best(self, query: np.ndarray, exclude: set[int] | frozenset[int] = frozenset()) -> tuple[int, int, float] | None:
        """(identity, outfit, cosine) of the most similar prototype, skipping excluded identities."""
        if self.size == 0:
            return None
        sims = self._vectors[: self.size] @ np.asarray(query, np.float32)
        if exclude:
            sims = np.where(np.isin(self._identity[: self.size], list(exclude)), -np.inf, sims)
        row = int(np.argmax(sims))
        if not np.isfinite(sims[row]):
            return None
        return int(self._identity[row]), int(self._outfit[row]), float(sims[row])


@dataclass(frozen=True)
class Transit:
    min_s: float = 0.0
    max_s: float | None = None


@dataclass
class Topology:
    """Which cameras see the same space at once, and how long walking between two cameras takes."""

    overlapping: set[frozenset[str]] = field(default_factory=set)
    transits: dict[frozenset[str], Transit] = field(default_factory=dict)
    default_min_transit_s: float = 0.0
    revisit_after_s: float | None = 600.0

    def overlap(self, a: str, b: str) -> bool:
        return a != b and frozenset((a, b)) in self.overlapping

    def transit_ok(self, a: str, b: str, dt: float) -> bool:
        """Can a person last seen on `a` appear on `b` `dt` seconds later?"""
        if a == b or self.overlap(a, b):
            return True
        t = self.transits.get(frozenset((a, b)), Transit(self.default_min_transit_s))
        if dt < t.min_s:
            return False
        if t.max_s is not None and dt > t.max_s:
            return self.revisit_after_s is not None and dt >= self.revisit_after_s
        return True


@dataclass(frozen=True)
class MatchDecision:
    identity_id: int
    outfit_id: int
    similarity: float | None  # None for a newly created identity
    created: bool
    outfit_changed: bool = False
    outfit_similarity: float | None = None


@dataclass(frozen=True)
class MergeDecision:
    keep: int
    drop: int
    similarity: float
    tracklet_id: str


@dataclass
class MatcherStats:
    commits: int = 0
    stale_retries: int = 0
    gone_retries: int = 0
    syncs: int = 0
    full_loads: int = 0


class CrossCameraMatcher:
    def __init__(self, store: IdentityStore, threshold: float = 0.55, momentum: float = 0.9,
                 outfit_threshold: float = 0.7, merge_threshold: float | None = 0.8,
                 top_k: int = 16, presence_ttl_s: float = 3.0, topology: Topology | None = None,
                 max_retries: int = 100, retention_s: float | None = None, index: str = "exact",
                 ann_min_rows: int = 50_000) -> None:
        self.store = store
        self.threshold = threshold
        self.momentum = momentum
        self.outfit_threshold = outfit_threshold
        self.merge_threshold = merge_threshold
        self._refreshed_at = -np.inf
        self.retention_s = retention_s
        self._pruned_at = time.time()
        self.top_k = top_k
        self.presence_ttl_s = presence_ttl_s
        self.topology = topology or Topology()
        self.max_retries = max_retries
        self._gallery_args = {"index": index, "ann_min_rows": ann_min_rows}
        self.gallery = PrototypeGallery(**self._gallery_args)
        self.version = 0
        self.log_id = "0-0"
        self.alias: dict[int, int] = {}  # merged id -> the id it was merged into
        # identity -> camera -> (last seen unix time, live): what every worker reported
        self.presence: dict[int, dict[str, tuple[float, bool]]] = {}
        self.stats = MatcherStats()
        # identity -> (camera, first seen, last seen) of its recently ended local tracklets (bounded)
        self.history: dict[int, deque] = {}
        self.full_load()

    # -- keeping the gallery current --------------------------------------------------------------
    def full_load(self) -> None:
        last_id, version, protos, records = self.store.gallery_snapshot()
        self.gallery = PrototypeGallery(self.gallery.dim, capacity=max(1024, 2 * len(protos.identity_ids)),
                                        **self._gallery_args)
        looks = protos.looks or [None] * len(protos.identity_ids)
        dims = {lk.shape[0] for lk in looks if lk is not None}
        if len(dims) > 1:
            raise ValueError(f"the store holds outfit descriptors of several sizes {sorted(dims)}; "
                             "use one key_prefix per ReID model / descriptor")
        look_arr, has = None, None
        if dims:
            look_arr = np.zeros((len(looks), dims.pop()), np.float32)
            has = np.array([lk is not None for lk in looks])
            for i, lk in enumerate(looks):
                if lk is not None:
                    look_arr[i] = lk
        self.gallery.extend(protos.identity_ids, protos.outfit_ids, protos.vectors, look_arr, has)
        self.presence = {i: {r.last_camera: (r.last_seen, False)} for i, r in records.items() if r.last_camera}
        self.log_id, self.version = last_id, version
        self.stats.full_loads += 1

    def sync(self) -> None:
        """Apply the gallery changes other workers (and this one) logged since the last read."""
        self.stats.syncs += 1
        while True:
            entries, server_version = self.store.read_gallery_changes(self.log_id)
            for sid, ch in entries:
                self._apply(ch)
                self.log_id = sid
            if len(entries) < 10_000:
                break
        if self.retention_s and time.time() - self._pruned_at > min(60.0, self.retention_s):
            self.prune(time.time() - self.retention_s)
        if self.version != server_version:
            # Entries were trimmed from the log before this worker read them (or the store was reset).
            log.warning("gallery log moved past this worker (version %d, store %d): reloading the gallery",
                        self.version, server_version)
            self.full_load()

    def _apply(self, ch: GalleryChange) -> None:
        self.version = max(self.version, ch.version)
        if ch.op == "merge":
            self._merge_local(keep=int(ch.into), drop=ch.identity_id)
            return
        if ch.vector is not None:
            self.gallery.upsert(ch.identity_id, ch.outfit_id, ch.vector, ch.look)
        elif ch.look is not None and self.gallery.prototype(ch.identity_id, ch.outfit_id) is not None:
            self.gallery.upsert(ch.identity_id, ch.outfit_id, self.gallery.prototype(ch.identity_id, ch.outfit_id),
                                ch.look)
        if ch.camera_id:
            self._seen(ch.identity_id, ch.camera_id, ch.ts, ch.live)

    def _seen(self, identity_id: int, camera_id: str, ts: float, live: bool) -> None:
        cams = self.presence.setdefault(identity_id, {})
        old = cams.get(camera_id)
        if old is None or ts >= old[0]:
            cams[camera_id] = (ts, live)

    def _merge_local(self, keep: int, drop: int) -> None:
        self.alias[drop] = keep
        if drop in self.history:
            self.history.setdefault(keep, deque(maxlen=32)).extend(self.history.pop(drop))
        self.gallery.remove_identity(drop)  # its prototypes arrive as new outfits of `keep`
        for cam, (ts, live) in self.presence.pop(drop, {}).items():
            self._seen(keep, cam, ts, live)

    def prune(self, seen_before: float) -> int:
        """Drop identities last seen before `seen_before` from memory (the store expires them by TTL)."""
        self._pruned_at = time.time()
        old = [i for i in self.gallery.identities()
               if max((ts for ts, _ in self.presence.get(i, {}).values()), default=-np.inf) < seen_before]
        for i in old:
            self.forget(i)
        return len(old)

    def forget(self, identity_id: int) -> None:
        """Drop an identity the store no longer has (expired by retention)."""
        self.gallery.remove_identity(identity_id)
        self.presence.pop(identity_id, None)
        self.history.pop(identity_id, None)

    def resolve(self, identity_id: int) -> int:
        seen = set()
        while identity_id in self.alias and identity_id not in seen:
            seen.add(identity_id)
            identity_id = self.alias[identity_id]
        return identity_id

    # -- constraints ----------------------------------------------------------------------------------
    def feasible(self, identity_id: int, camera_id: str, started_at: float, live: dict[str, set[int]],
                 now: float, held: dict[str, set[int]] | None = None) -> bool:
        """Can a tracklet that started on `camera_id` at `started_at` be `identity_id`?

        `live` maps this worker's cameras to the identities their tracklets visible right now hold;
        `held` (default: `live`) to the identities of all their tracklets, lost ones included: in the
        tracklet's own camera a lost track may come back, so its identity is not free yet."""
        if identity_id in (held if held is not None else live).get(camera_id, ()):
            return False
        for cam, ids in live.items():
            if cam != camera_id and identity_id in ids and not self.topology.overlap(cam, camera_id):
                return False
        for cam, (ts, is_live) in self.presence.get(identity_id, {}).items():
            if cam == camera_id:
                if ts > started_at:
                    return False  # another box of this camera was this identity while this track existed
                continue
            if self.topology.overlap(cam, camera_id):
                continue
            if is_live and cam not in live and now - ts < self.presence_ttl_s:
                return False  # on screen in another worker's camera right now
            # Seen on `cam` at `ts` (its last frame there, or its last refresh while visible): a tracklet
            # that started before that, or sooner than the walk from there takes, is someone else.
            if not self.topology.transit_ok(cam, camera_id, started_at - ts):
                return False
        return True

    def _intervals(self, i: int, tracks: list) -> list[tuple[str, float, float]]:
        """(camera, first seen, last seen) of identity i's tracklets: live ones and recently ended ones."""
        out = [(t.camera_id, t.started_at, t.last_seen_at) for t in tracks
               if t.identity_id is not None and self.resolve(t.identity_id) == i]
        return out + list(self.history.get(i, ()))

    def _compatible(self, a: int, b: int, live: dict[str, set[int]], now: float, tracks: list = ()) -> bool:
        """Could identities a and b be one person? Not if they were ever on screen at the same time in one
        camera or in two cameras that do not overlap (this worker's tracklets), nor if both are visible
        right now in such cameras (other workers' reports)."""
        for ca, sa, ea in self._intervals(a, list(tracks)):
            for cb, sb, eb in self._intervals(b, list(tracks)):
                if sa <= eb and sb <= ea and not self.topology.overlap(ca, cb):
                    return False

        def live_cams(i: int) -> set[str]:
            cams = {c for c, ids in live.items() if i in ids}
            cams |= {c for c, (ts, lv) in self.presence.get(i, {}).items()
                     if lv and c not in live and now - ts < self.presence_ttl_s}
            return cams
        ca, cb = live_cams(a), live_cams(b)
        return all(self.topology.overlap(x, y) for x in ca for y in cb)

    # -- decisions --------------------------------------------------------------------------------
    def decide(self, tracklets: list, live: dict[str, set[int]], now: float | None = None,
               mark_live: bool = True, held: dict[str, set[int]] | None = None) -> list[MatchDecision]:
        """Assign identities to undecided tracklets of one step, jointly; writes them to the store.

        `tracklets` are pipeline.tracklets.Tracklet objects (embedding(), look(), camera_id, started_at,
        tracklet_id). Returns one decision per tracklet, in order."""
        if not tracklets:
            return []
        now = time.time() if now is None else now
        self.sync()
        queries = np.stack([t.embedding() for t in tracklets])
        looks = [t.look() for t in tracklets]
        for _ in range(self.max_retries):
            plan = self._plan(tracklets, queries, looks, live, now, held)
            ops = StoreOp()
            for t, q, lk, (kind, ident, outfit, sim, osim) in zip(tracklets, queries, looks, plan):
                # Presence is when the person was last on screen, not when we decided (a short track is
                # decided only after the tracker gave it up).
                seen = min(now, getattr(t, "last_seen_at", now))
                on_screen = mark_live and now - seen < self.presence_ttl_s
                if kind == "create":
                    ops.create(q, lk, t.camera_id, seen, t.tracklet_id, live=on_screen)
                elif kind == "outfit":
                    ops.outfit(ident, q, lk, t.camera_id, seen, t.tracklet_id, live=on_screen)
                else:
                    vec, new_look = self._blend(ident, outfit, q, lk)
                    ops.update(ident, outfit, vec, new_look, t.camera_id, seen, t.tracklet_id, live=on_screen)
            res = self._commit(ops)
            if res.status != "ok":
                continue
            decisions = []
            for t, q, lk, (kind, ident, outfit, sim, osim), r in zip(tracklets, queries, looks, plan, res.results):
                if kind == "create":
                    ident, outfit = r, 1
                elif kind == "outfit":
                    outfit = r
                decisions.append(MatchDecision(ident, outfit, None if kind == "create" else sim, kind == "create",
                                               kind == "outfit", osim))
            self._apply_ops(ops, res)
            return decisions
        raise RuntimeError(f"matcher: the gallery kept changing under {self.max_retries} commit attempts; "
                           "is another worker looping? (check the store's gallery_log)")

    def _plan(self, tracklets, queries, looks, live, now, held=None
              ) -> list[tuple[str, int, int, float | None, float | None]]:
        cands = self.gallery.candidates(queries, self.top_k)
        columns: dict[int, int] = {}
        allowed: list[dict[int, float]] = []
        for t, cand in zip(tracklets, cands):
            ok = {i: s for i, s in cand.items()
                  if s >= self.threshold and self.feasible(i, t.camera_id, t.started_at, live, now, held)}
            allowed.append(ok)
            for i in ok:
                columns.setdefault(i, len(columns))
        n = len(tracklets)
        value = np.full((n, len(columns) + n), _NO)
        for r, ok in enumerate(allowed):
            for i, s in ok.items():
                value[r, columns[i]] = s
            value[r, len(columns) + r] = self.threshold - 1e-6  # "new identity" for this tracklet only
        rows, cols = linear_sum_assignment(value, maximize=True)
        chosen: list[int | None] = [None] * n
        ident_of_col = {c: i for i, c in columns.items()}
        for r, c in zip(rows, cols):
            if c < len(columns) and value[r, c] > _NO:
                chosen[r] = ident_of_col[c]
        # Cameras that overlap may legitimately hold one person in two simultaneous tracklets.
        for r, t in enumerate(tracklets):
            if chosen[r] is None and allowed[r]:
                for i, _ in sorted(allowed[r].items(), key=lambda kv: -kv[1]):
                    holders = [tracklets[o].camera_id for o in range(n) if chosen[o] == i]
                    if holders and all(self.topology.overlap(h, t.camera_id) for h in holders):
                        chosen[r] = i
                        break
        plan = []
        for r, ident in enumerate(chosen):
            if ident is None:
                plan.append(("create", 0, 1, None, None))
                continue
            outfit, osim = self.gallery.best_outfit(ident, looks[r])
            if outfit is None:  # no descriptor on either side: the best prototype's outfit
                row_outfits = self.gallery.outfits(ident)
                best_o = max(row_outfits, key=lambda o: float(self.gallery.prototype(ident, o) @ queries[r]))
                plan.append(("update", ident, best_o, allowed[r][ident], None))
            elif osim >= self.outfit_threshold:
                plan.append(("update", ident, outfit, allowed[r][ident], osim))
            else:
                plan.append(("outfit", ident, 0, allowed[r][ident], osim))
        return plan

    def _blend(self, ident: int, outfit: int, q: np.ndarray, look: np.ndarray | None):
        """The prototype (and descriptor) moved towards new evidence by the EMA momentum."""
        old = self.gallery.prototype(ident, outfit)
        vec = q if old is None else _unit(self.momentum * old + (1 - self.momentum) * q)
        old_look = self.gallery.look(ident, outfit)
        if look is None or old_look is None or old_look.shape != look.shape:
            new_look = look
        else:
            new_look = _unit(self.momentum * old_look + (1 - self.momentum) * look)
        return vec, new_look

    def _commit(self, ops: StoreOp) -> CommitResult:
        self.stats.commits += 1
        res = self.store.commit(ops, self.version)
        if res.status == "stale":
            self.stats.stale_retries += 1
            self.sync()
        elif res.status == "gone":
            self.stats.gone_retries += 1
            log.info("identity %s is gone from the store (merged or expired): re-reading", res.gone_identity)
            self.sync()
            if res.gone_identity is not None and res.gone_identity not in self.alias:
                self.forget(res.gone_identity)
        return res

    def _apply_ops(self, ops: StoreOp, res: CommitResult) -> None:
        """Mirror a successful commit in memory (the log echoes it later; applying twice is harmless)."""
        merged = False
        for op, r in zip(ops.ops, res.results):
            kind = op["op"]
            if kind == "merge":
                merged = True
                continue
            ident = r if kind == "create" else int(op["id"])
            outfit = 1 if kind == "create" else (r if kind == "outfit" else int(op.get("outfit", 0)))
            vec = _blob(ops, op.get("vec"))
            look = _blob(ops, op.get("look"))
            if vec is not None:
                self.gallery.upsert(ident, outfit, vec, look)
            self._seen(ident, op["camera"], float(op["ts"]), op.get("live") == "1")
        self.version = res.version
        if merged:
            self.sync()  # the merged outfits were renumbered by the store: read them back

    # -- later evidence ---------------------------------------------------------------------------------
    def recheck(self, tracklet, live: dict[str, set[int]], now: float | None = None,
                tracks: list = ()) -> MergeDecision | None:
        """`tracks`: this worker's live tracklets (their time spans rule out merging people seen at once)."""
        """Does the tracklet's fuller evidence show its identity is another, older one? Merge them if so."""
        if self.merge_threshold is None or tracklet.identity_id is None:
            return None
        now = time.time() if now is None else now
        own = self.resolve(tracklet.identity_id)
        q = tracklet.embedding()
        # An identity this tracklet created from its first few crops, and that nothing else has confirmed
        # yet, is tentative: the fuller evidence may move it to an existing identity at the ordinary
        # matching threshold (announced as a merge). Identities with other evidence need merge_threshold.
        threshold = self.merge_threshold
        if tracklet.created_identity and self._only_evidence(own, tracklet, tracks):
            threshold = min(self.threshold, self.merge_threshold)
        for _ in range(self.max_retries):
            cand = self.gallery.candidates(q[None], self.top_k)[0]
            others = [(s, i) for i, s in cand.items() if i != own and s >= threshold
                      and self._compatible(own, i, live, now, tracks)]
            if not others:
                return None
            sim, other = max(others)
            keep, drop = min(own, other), max(own, other)
            ops = StoreOp()
            ops.merge(keep, drop, now)
            res = self._commit(ops)
            if res.status == "ok":
                self._merge_local(keep, drop)
                self._apply_ops(ops, res)
                return MergeDecision(keep, drop, sim, tracklet.tracklet_id)
            own = self.resolve(own)
            if own not in self.gallery.identities():
                return None
        return None

    def _only_evidence(self, identity: int, tracklet, tracks) -> bool:
        """True when `tracklet` is all this worker knows of `identity`: one outfit, no finished tracklet,
        no other live tracklet."""
        if self.history.get(identity) or len(self.gallery.outfits(identity)) > 1:
            return False
        return not any(t is not tracklet and t.identity_id is not None and self.resolve(t.identity_id) == identity
                       for t in tracks)

    def finish(self, tracklet, now: float | None = None) -> None:
        """Track end: the final embedding refines the tracklet's outfit prototype; presence ends."""
        if tracklet.identity_id is None:
            return
        now = tracklet.last_seen_at if now is None else now  # the last frame it was on screen
        for _ in range(self.max_retries):
            ident = self.resolve(tracklet.identity_id)
            if ident not in self.gallery.identities():
                return  # expired meanwhile: nothing left to refine
            outfit = tracklet.outfit_id
            if outfit is None or self.gallery.prototype(ident, outfit) is None or ident != tracklet.identity_id:
                outfit, _ = self.gallery.best_outfit(ident, tracklet.look())
                outfit = outfit or self.gallery.outfits(ident)[0]
            ops = StoreOp()
            if tracklet.crops > tracklet.decided_at_crops:
                vec, look = self._blend(ident, outfit, tracklet.embedding(), tracklet.look())
                ops.update(ident, outfit, vec, look, tracklet.camera_id, now, sighting=False, live=False)
            else:
                ops.presence(ident, tracklet.camera_id, now, live=False)
            res = self._commit(ops)
            if res.status == "ok":
                self._apply_ops(ops, res)
                self.history.setdefault(ident, deque(maxlen=32)).append(
                    (tracklet.camera_id, tracklet.started_at, tracklet.last_seen_at))
                return

    def refresh_presence(self, tracklets: list, now: float | None = None) -> None:
        """Tell other workers these decided tracklets are on screen (one commit for all, at most every
        presence_ttl_s / 3 seconds, so a live sighting is never older than the TTL while visible)."""
        now = time.time() if now is None else now
        if not tracklets or now - self._refreshed_at < self.presence_ttl_s / 3:
            return
        self._refreshed_at = now
        ops = StoreOp()
        for t in tracklets:
            ops.presence(self.resolve(t.identity_id), t.camera_id, now, live=True)
        res = self._commit(ops)
        if res.status == "ok":
            self._apply_ops(ops, res)

    # -- the single-tracklet form (scripts, tests) ---------------------------------------------------------
    def assign(self, embedding: np.ndarray, camera_id: str, busy: set[int], ts: float,
               look: np.ndarray | None = None) -> MatchDecision:
        """Link one embedding to an identity or create one; `busy` identities are live in this camera."""
        from pipeline.tracklets import Tracklet

        t = Tracklet(f"{camera_id}:assign:{ts}", camera_id, -1, 0, 0, np.zeros(4), 1.0, started_at=ts, last_seen_at=ts)
        t.add_embedding(np.asarray(embedding, np.float32), 1.0, look)
        return self.decide([t], {camera_id: set(busy)}, now=ts, mark_live=False)[0]

    def update(self, identity_id: int, outfit_id: int, embedding: np.ndarray, camera_id: str, ts: float,
               new_sighting: bool = True) -> None:
        """Move one prototype towards new evidence (EMA), in memory and in the store."""
        vec, _ = self._blend(identity_id, outfit_id, np.asarray(embedding, np.float32), None)
        ops = StoreOp()
        ops.update(identity_id, outfit_id, vec, None, camera_id, ts, sighting=new_sighting, live=False)
        res = self._commit(ops)
        if res.status == "ok":
            self._apply_ops(ops, res)


def _blob(ops: StoreOp, index) -> np.ndarray | None:
    if not index:
        return None
    return np.frombuffer(ops.blobs[int(index) - 1], dtype="<f4").astype(np.float32)


def topology_from_config(cfg) -> Topology:
    """pipeline.config.TopologyConfig -> Topology."""
    if cfg is None:
        return Topology()
    return Topology(
        overlapping={frozenset(p) for p in cfg.overlapping},
        transits={frozenset(t.cameras): Transit(t.min_s, t.max_s) for t in cfg.transits},
        default_min_transit_s=cfg.default_min_transit_s,
        revisit_after_s=cfg.revisit_after_s,
    )


def matcher_from_config(store: IdentityStore, cfg) -> CrossCameraMatcher:
    """Build the matcher from pipeline.config.MatcherConfig."""
    return CrossCameraMatcher(
        store, threshold=cfg.threshold, momentum=cfg.prototype_momentum, outfit_threshold=cfg.outfit_threshold,
        merge_threshold=cfg.merge_threshold, top_k=cfg.top_k,
        presence_ttl_s=cfg.presence_ttl_s, topology=topology_from_config(cfg.topology), retention_s=cfg.retention_s,
        index=cfg.index, ann_min_rows=cfg.ann_min_rows,
    )
