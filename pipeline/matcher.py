"""Cross-camera matching through clothing changes.

* Identity link: a tracklet's quality-weighted identity embedding against every prototype (cosine, one
  matrix product); an identity's score is its best prototype, so each outfit is its own prototype.
* Outfit: among the linked identity's prototypes, the appearance (outfit) descriptor decides whether the
  tracklet wears a known outfit (its prototype is refined) or a new one (a new prototype row and an
  `outfit_changed` decision).
* Outfit link (`outfit_link_threshold`): when the descriptor is a same-clothes ReID feature
  (`reid.outfit_model`), a tracklet whose descriptor reaches that cosine with a known outfit of an identity
  may join it even when the clothes-changing feature is below `threshold`: a same-clothes model recognises a
  person in the same outfit better than a clothes-changing one, which gives up some of that to link changes.
* Outfit merge (`outfit_merge_threshold`, opt-in): with such a descriptor, later evidence also merges a
  tracklet's identity into another one that holds its outfit at that descriptor cosine (e.g. the same-clothes
  model's merge level), instead of waiting for the clothes-changing feature to reach `merge_threshold`.
* Joint assignment: the tracklets decided in the same step are assigned together with the Hungarian
  method (scipy's linear_sum_assignment) maximising the summed similarity above the threshold, so two
  simultaneous tracklets never take the same identity (unless their cameras overlap).
* Constraints: an identity held by a live track of the same camera, or seen live in a camera that does
  not overlap this one, is not a candidate (one person, one place); with a topology, a transit between
  two cameras faster than `min_s` (or, before `revisit_after_s`, slower than `max_s`) is impossible.
* Later evidence (the tracklet at 2x, 4x... its decision crops and at its end) may show that its
  identity is another, older one: the two are merged (`identity.merged`), never silently rewritten.
* Search: the in-memory gallery (pipeline/gallery.py): one numpy matrix product over all prototypes
  (exact), or an HNSW index that proposes candidates, re-scored exactly, once it has shown at least 99 %
  recall of the exact search (see benchmarks/matcher_latency.py). Topology rules: pipeline/topology.py.
* Several workers: each keeps the gallery in memory and reads the store's gallery log incrementally
  (one XRANGE per decision step); every write goes through the store's atomic compare-and-set commit,
  retried after a re-read when another worker changed the gallery first (see pipeline/store.py).
* A store that comes back empty (a new generation, `StoreReset`): the worker reloads the (empty) gallery
  with `on_store_reset`; identity ids go on from the highest one seen, never repeated.
"""

from __future__ import annotations

import logging
import math
import time
from collections import deque
from dataclasses import dataclass

import numpy as np
from scipy.optimize import linear_sum_assignment

from pipeline.gallery import PrototypeGallery, _unit
from pipeline.store import CommitResult, GalleryChange, IdentityStore, StoreOp, StoreReset
from pipeline.topology import Topology, topology_from_config

log = logging.getLogger("pipeline.matcher")
_NO = -1e9  # cost of a forbidden pairing in the assignment matrix


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
                 ann_min_rows: int = 50_000, same_outfit_threshold: float | None = None,
                 window_threshold: float | None = None, outfit_link_threshold: float | None = None,
                 outfit_merge_threshold: float | None = None) -> None:
        self.store = store
        # Descriptor cosine to a known outfit of another identity that merges the tracklet's identity into it
        # (`recheck`); None: merges are decided on the identity feature alone.
        self.outfit_merge_threshold = outfit_merge_threshold
        # Descriptor cosine to a known outfit that links a tracklet to that identity on its own (the identity
        # feature need not reach `threshold`); None: the identity feature alone decides who.
        self.outfit_link_threshold = outfit_link_threshold
        self.threshold = threshold
        # Arriving inside a transit window from where a candidate was seen last, a tracklet competes with the few
        # people who left nearby cameras just before, not with the whole gallery: the link needs less
        # (`reid calibrate` measures it against that many people). None: `threshold` everywhere.
        self.window_threshold = window_threshold
        # A clothes-changing model still scores one outfit on two people higher than two outfits of one person:
        # when the tracklet wears a known outfit of the candidate, the link needs what one person in one outfit
        # reaches (`reid calibrate` measures it), not just `threshold`. None: one threshold for both.
        self.same_outfit_threshold = same_outfit_threshold
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
        if store.generation is None:
            store.open_generation()
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

    def latest_seen(self) -> float | None:
        """The newest sighting time this matcher knows of (None for an empty gallery)."""
        times = [ts for cams in self.presence.values() for ts, _ in cams.values()]
        return max(times) if times else None

    def on_store_reset(self) -> None:
        """The store came back as a new generation (empty, or reset): adopt it and reload the gallery. Local
        knowledge of identities it no longer has is dropped; new ids go on above the highest one seen."""
        self.store.open_generation()
        self.alias.clear()
        self.history.clear()
        self._refreshed_at = -np.inf
        self.full_load()

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
        presence = self.presence.get(identity_id, {})
        for cam, (ts, is_live) in presence.items():
            if cam == camera_id:
                if ts > started_at:
                    return False  # another box of this camera was this identity while this track existed
                continue
            if self.topology.overlap(cam, camera_id):
                continue
            if is_live and cam not in live and now - ts < self.presence_ttl_s:
                return False  # on screen in another worker's camera right now
            if ts > started_at:
                return False  # seen on another camera after this tracklet started: someone else
        # The walk is timed from where the person was seen last (`ts`: the last frame there, or the last refresh
        # while visible): a tracklet that started sooner than that walk takes, or later than it may take, is
        # someone else. Earlier cameras say nothing more: a person seen on A, then B, may reach C long after A.
        last = self._last_sighting(identity_id)
        if last is not None:
            cam, ts = last
            if cam != camera_id and not self.topology.overlap(cam, camera_id) \
                    and not self.topology.transit_ok(cam, camera_id, started_at - ts):
                return False
        return True

    def _intervals(self, i: int, tracks: list, open_ids: frozenset = frozenset()) -> list[tuple[str, float, float, bool]]:
        """(camera, first seen, last seen, still held by its tracker) of identity i's tracklets: live ones and
        recently ended ones."""
        out = [(t.camera_id, t.started_at, t.last_seen_at, t.tracklet_id in open_ids) for t in tracks
               if t.identity_id is not None and self.resolve(t.identity_id) == i]
        return out + [(c, s, e, False) for c, s, e in self.history.get(i, ())]

    def _compatible(self, a: int, b: int, live: dict[str, set[int]], now: float, tracks: list = (),
                    open_ids: frozenset = frozenset()) -> bool:
        """Could identities a and b be one person? Not if they were ever on screen at the same time in one
        camera or in two cameras that do not overlap, nor one after the other sooner or later than the walk
        between their cameras takes (this worker's tracklets), nor if both are visible right now in such
        cameras (other workers' reports). A tracklet its tracker still holds (`open_ids`, lost ones included)
        may come back in its camera, so within that camera its span has no end yet: merging it with a track that
        began there while it was lost would put one identity on two boxes of one frame when it returns."""
        spans_a, spans_b = self._intervals(a, list(tracks), open_ids), self._intervals(b, list(tracks), open_ids)
        for ca, sa, ea, open_a in spans_a:
            for cb, sb, eb, open_b in spans_b:
                end_a, end_b = ea, eb
                if ca == cb:
                    end_a, end_b = (math.inf if open_a else ea), (math.inf if open_b else eb)
                if sa <= end_b and sb <= end_a and not self.topology.overlap(ca, cb):
                    return False
        # One after the other, as one person's route: where the route passes from one identity's sighting to
        # the other's, the walk between them must fit the transit times a decision obeys (feasible()).
        route = sorted([(s_, e_, c_, 0) for c_, s_, e_, _ in spans_a] + [(s_, e_, c_, 1) for c_, s_, e_, _ in spans_b])
        for (s1, e1, c1, w1), (s2, e2, c2, w2) in zip(route, route[1:]):
            if w1 != w2 and e1 < s2 and not self.topology.overlap(c1, c2) \
                    and not self.topology.transit_ok(c1, c2, s2 - e1):
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
        by_look = ([{} for _ in tracklets] if self.outfit_link_threshold is None
                   else self.gallery.look_candidates(looks, self.outfit_link_threshold))
        columns: dict[int, int] = {}
        allowed: list[dict[int, float]] = []
        margins: list[dict[int, float]] = []
        for t, q, cand, look, seen_look in zip(tracklets, queries, cands, looks, by_look):
            ok: dict[int, float] = {}
            margin: dict[int, float] = {}
            for i, s in cand.items():
                need = self._needed(i, t.camera_id, t.started_at)
                if s >= need and not self._same_outfit_too_weak(i, s, look):
                    ok[i], margin[i] = s, s - need
            for i, osim in seen_look.items():  # the same outfit seen again: a link of its own
                m = osim - self.outfit_link_threshold
                if m > margin.get(i, -np.inf):
                    ok.setdefault(i, cand[i] if i in cand else self.gallery.identity_similarity(i, q))
                    margin[i] = m
            ok = {i: s for i, s in ok.items() if self.feasible(i, t.camera_id, t.started_at, live, now, held)}
            allowed.append(ok)
            margins.append({i: margin[i] for i in ok})
            for i in ok:
                columns.setdefault(i, len(columns))
        n = len(tracklets)
        # Values are margins over what each link needs (1 + cosine - needed; for an outfit link the descriptor's
        # margin over outfit_link_threshold when larger), so a link inside a transit window at a lower cosine
        # still beats "new identity" (1 - eps); with one threshold this is the plain joint assignment on cosines
        # shifted by a constant.
        value = np.full((n, len(columns) + n), _NO)
        for r, ok in enumerate(allowed):
            for i, s in ok.items():
                value[r, columns[i]] = 1.0 + margins[r][i]
            value[r, len(columns) + r] = 1.0 - 1e-6  # "new identity" for this tracklet only
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

    def _last_sighting(self, ident: int) -> tuple[str, float] | None:
        """(camera, time) where the identity was seen last: where a walk to another camera is timed from."""
        presence = self.presence.get(ident)
        if not presence:
            return None
        cam, (ts, _) = max(presence.items(), key=lambda kv: kv[1][0])
        return cam, ts

    def _needed(self, ident: int, camera_id: str, started_at: float) -> float:
        """The cosine a link to `ident` needs: `window_threshold` when the tracklet started inside a transit
        window from the camera the identity was seen on last, else `threshold`."""
        if self.window_threshold is None:
            return self.threshold
        last = self._last_sighting(ident)
        if last is None:
            return self.threshold
        cam, ts = last
        return self.window_threshold if self.topology.within_window(cam, camera_id, started_at - ts) else self.threshold

    def _same_outfit_too_weak(self, ident: int, score: float, look: np.ndarray | None) -> bool:
        if self.same_outfit_threshold is None or look is None or score >= self.same_outfit_threshold:
            return False
        outfit, osim = self.gallery.best_outfit(ident, look)
        return outfit is not None and osim is not None and osim >= self.outfit_threshold

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
        elif res.status == "reset":
            raise StoreReset(self.store.generation or "", res.generation)
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
                tracks: list = (), open_ids: frozenset = frozenset()) -> MergeDecision | None:
        """Does the tracklet's fuller evidence show its identity is another, older one? Merge them if so.
        `tracks`: this worker's live tracklets (their time spans rule out merging people seen at once);
        `open_ids`: the tracklet ids among them that their trackers still hold (they may come back)."""
        if self.merge_threshold is None or tracklet.identity_id is None:
            return None
        now = time.time() if now is None else now
        own = self.resolve(tracklet.identity_id)
        q = tracklet.embedding()
        # An identity this tracklet created from its first few crops, and that nothing else has confirmed
        # yet, is tentative: the fuller evidence may move it to an existing identity at the ordinary
        # matching threshold (announced as a merge). Identities with other evidence need merge_threshold.
        threshold = self.merge_threshold
        look_threshold = self.outfit_merge_threshold
        look = tracklet.look() if look_threshold is not None else None
        if tracklet.created_identity and self._only_evidence(own, tracklet, tracks):
            threshold = min(self.threshold, self.merge_threshold)
            if look is not None and self.outfit_link_threshold is not None:
                look_threshold = min(look_threshold, self.outfit_link_threshold)
        for _ in range(self.max_retries):
            cand = self.gallery.candidates(q[None], self.top_k)[0]
            # (margin over what the merge needs, identity, identity-feature cosine), as in `_plan`
            margin = {i: (s - threshold, s) for i, s in cand.items() if s >= threshold}
            if look is not None:
                for i, osim in self.gallery.look_candidates([look], look_threshold)[0].items():
                    m = osim - look_threshold
                    if m > margin.get(i, (-np.inf,))[0]:
                        margin[i] = (m, cand[i] if i in cand else self.gallery.identity_similarity(i, q))
            others = [(m, i, s) for i, (m, s) in margin.items()
                      if i != own and self._compatible(own, i, live, now, tracks, open_ids)]
            if not others:
                return None
            _, other, sim = max(others)
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


MODEL_THRESHOLDS = ("threshold", "outfit_threshold", "merge_threshold", "same_outfit_threshold", "window_threshold")


def thresholds_from_model(cfg, spec, outfit_model: bool = False, outfit_spec=None) -> tuple[object, dict[str, float]]:
    """The matcher config with every threshold the config leaves unset taken from the model file's calibration
    (`python -m reid calibrate --write` stores them in the spec's `extra.matcher`); returns (config, what was
    taken). A threshold written in the config always wins.

    With an outfit model (reid.outfit_model; `outfit_spec` its spec) the descriptor is that model's feature: unset
    `outfit_threshold` and `outfit_link_threshold` become its calibrated `threshold`, or the config's `threshold`
    default, 0.55, when it carries none (Intel 0267's link level, a same-clothes model's), never the identity model's
    `outfit_threshold`, which was measured on another descriptor. `outfit_merge_threshold` is never filled in:
    merging on the outfit descriptor is opt-in (README, "Scene crops in training": it did not pay there)."""
    suggested = (getattr(spec, "extra", None) or {}).get("matcher") or {}
    names = MODEL_THRESHOLDS if not outfit_model else tuple(k for k in MODEL_THRESHOLDS if k != "outfit_threshold")
    taken = {k: float(suggested[k]) for k in names
             if k in suggested and k not in cfg.model_fields_set and suggested[k] is not None}
    if outfit_model:
        own = ((getattr(outfit_spec, "extra", None) or {}).get("matcher") or {}).get("threshold")
        level = float(own) if own is not None else float(type(cfg).model_fields["threshold"].default)
        taken.update({k: level for k in ("outfit_threshold", "outfit_link_threshold") if k not in cfg.model_fields_set})
    if not taken:
        return cfg, {}
    return cfg.model_copy(update=taken), taken


def matcher_from_config(store: IdentityStore, cfg) -> CrossCameraMatcher:
    """Build the matcher from pipeline.config.MatcherConfig."""
    return CrossCameraMatcher(
        store, threshold=cfg.threshold, momentum=cfg.prototype_momentum, outfit_threshold=cfg.outfit_threshold,
        merge_threshold=cfg.merge_threshold, top_k=cfg.top_k,
        presence_ttl_s=cfg.presence_ttl_s, topology=topology_from_config(cfg.topology), retention_s=cfg.retention_s,
        index=cfg.index, ann_min_rows=cfg.ann_min_rows, same_outfit_threshold=cfg.same_outfit_threshold,
        window_threshold=cfg.window_threshold if cfg.topology is not None else None,
        outfit_link_threshold=cfg.outfit_link_threshold, outfit_merge_threshold=cfg.outfit_merge_threshold,
    )
