"""The run loop's match stage: tracklets of all cameras -> matcher decisions -> identity events.

Decisions happen at three moments of a tracklet:
* tentative: once it has `min_crops` crops, all tracklets of a step jointly (`identity.created`,
  `identity.assigned`, and `identity.outfit_changed` when a known person wears a new outfit);
* during the track: at 2x, 4x, ... those crops its fuller embedding is checked against the gallery again,
  and may show that its identity and an older one are one person (`identity.merged`);
* final: at track end (`track.ended` carries the final identity); a track too short for a tentative
  decision is decided then, and its last evidence refines the outfit prototype.

The end of a tracklet is bookkept here: `expire` takes the tracklets a camera's tracker gave up, keeps them
in `ending` (in order) until `end_next` has decided them, and bounds that backlog while the store is away.

Threads: the frame loop updates tracklets (tracking, crops) while the store worker runs `step` and
`end_next`, which wait on the network. They share `lock`, held only for in-memory work: the stage copies
what a decision needs under the lock, decides on the copies without it, and writes the outcome back under
it, so the frame loop never waits for a store round trip.
"""

from __future__ import annotations

import copy
import logging
import threading
import time
from collections import OrderedDict
from typing import Callable

from pipeline.events import IdentityEvent
from pipeline.matcher import CrossCameraMatcher, MatchDecision
from pipeline.tracklets import CameraTracklets, Tracklet

log = logging.getLogger("pipeline")


def _bbox(b) -> list[float]:
    return [round(float(v), 1) for v in b]


def ended_event(tl: Tracklet, detail: str | None = None) -> IdentityEvent:
    return IdentityEvent("track.ended", tl.camera_id, tl.track_id, tl.tracklet_id, tl.identity_id, tl.similarity,
                         _bbox(tl.last_bbox), tl.last_frame, tl.outfit_id, outfit_changed=tl.outfit_changed,
                         detail=detail)


class MatchStage:
    def __init__(self, matcher: CrossCameraMatcher, min_crops: int,
                 cameras: Callable[[], list[CameraTracklets]] | list[CameraTracklets],
                 lock: threading.RLock | None = None, max_ending: int = 100_000,
                 clock: Callable[[], float] = time.time) -> None:
        self.matcher = matcher
        self.clock = clock  # "now" on the run's clock (pipeline.clock): the tracklets' times are read on it
        self.min_crops = min_crops
        self._cameras = cameras
        self.lock = lock or threading.RLock()
        # Tracklets the trackers gave up whose end has not been decided yet (several end in one step, or wait
        # for the store), oldest first: still evidence of who was on screen when, so merges and joins see them.
        self.ending: list[Tracklet] = []
        self.max_ending = max_ending
        self.abandoned: list[IdentityEvent] = []  # track.ended of tracklets dropped from a full backlog
        # Ids of recent events decided at a track's end, on a frame seen long before (the latency metric
        # leaves them out: their wait is the tracker's lost-track buffer, not the pipeline's delay).
        self.decided_late: OrderedDict[str, None] = OrderedDict()

    @property
    def cameras(self) -> list[CameraTracklets]:
        return self._cameras() if callable(self._cameras) else self._cameras

    # -- views (call with the lock held) -------------------------------------------------------------
    def visible(self) -> dict[str, set[int]]:
        return {ct.camera_id: ct.visible_identities() for ct in self.cameras}

    def held(self) -> dict[str, set[int]]:
        """Identities of every live tracklet per camera, lost ones included (they may come back)."""
        held = {ct.camera_id: {t.identity_id for t in ct.live.values() if t.identity_id is not None}
                for ct in self.cameras}
        for t in self.ending:
            if t.identity_id is not None:
                held.setdefault(t.camera_id, set()).add(t.identity_id)
        return held

    def tracks(self) -> list[Tracklet]:
        return [t for ct in self.cameras for t in ct.live.values()] + self.ending

    # -- the end of tracklets ----------------------------------------------------------------------------
    def expire(self, tracklets: CameraTracklets, step: int, everything: bool = False) -> list[Tracklet]:
        """Take the tracklets `tracklets`' tracker gave up (all of them with `everything`) into `ending`,
        where they wait for `end_next`. Beyond `max_ending` (a long store outage) the oldest are given up:
        their track.ended, undecided, goes to `abandoned`."""
        with self.lock:
            ended = tracklets.expire(step, everything=everything)
            self.ending.extend(ended)
            while len(self.ending) > self.max_ending:
                tl = self.ending.pop(0)
                self.abandoned.append(ended_event(tl, "store unavailable too long: not decided"))
            if len(self.abandoned) == 1 and ended:
                log.error("more than %d ended tracklets wait for the store: the oldest end undecided",
                          self.max_ending)
        return ended

    def end_next(self, out: list[IdentityEvent]) -> bool:
        """Decide the oldest ended tracklet (False when none waits). On a store error the exception
        propagates, the tracklet stays first in `ending`, and `out` holds the events of what was decided."""
        with self.lock:
            if not self.ending:
                return False
            tl = self.ending[0]
        self.end(tl, out)
        return True

    def abandon_ending(self, why: str) -> list[IdentityEvent]:
        """track.ended for every tracklet still waiting (the run ends with the store away), and the
        abandoned ones: nothing is dropped silently."""
        with self.lock:
            events = self.abandoned + [ended_event(tl, why) for tl in self.ending]
            self.ending, self.abandoned = [], []
        return events

    # -- decisions --------------------------------------------------------------------------------------
    def step(self, now: float | None = None, out: list[IdentityEvent] | None = None) -> list[IdentityEvent]:
        """Decide every tracklet that became ready, re-check grown ones, refresh presence.
        Events are appended to `out` as they are decided, so a caller whose store fails half-way through
        (the exception propagates) still holds the events of the decisions already made."""
        now = self.clock() if now is None else now
        events = out if out is not None else []
        with self.lock:
            pending = [tl for ct in self.cameras for tl in ct.live.values()
                       if tl.identity_id is None and tl.crops >= self.min_crops]
        events.extend(self._decide(pending, now))
        with self.lock:
            due = [tl for ct in self.cameras for tl in ct.live.values()
                   if tl.identity_id is not None and tl.recheck_at_crops and tl.crops >= tl.recheck_at_crops]
        for tl in due:
            with self.lock:
                tl.recheck_at_crops = 2 * tl.crops
            events.extend(self._recheck(tl, now))
        with self.lock:
            on_screen = [copy.copy(tl) for ct in self.cameras for tl in ct.visible() if tl.identity_id is not None]
        self.matcher.refresh_presence(on_screen, now)
        return events

    def end(self, tl: Tracklet, out: list[IdentityEvent] | None = None) -> list[IdentityEvent]:
        """A tracklet ended: final decision (short tracks), merge check, prototype refinement, track.ended.
        Safe to call again for the same tracklet after a store failure (`out` as in `step`)."""
        events = out if out is not None else []
        with self.lock:
            undecided = tl.identity_id is None and tl.crops > 0
            grown = tl.identity_id is not None and tl.crops > tl.decided_at_crops
        made = len(events)
        if undecided:
            events.extend(self._decide([tl], self.clock(), frame_index=tl.last_frame))
        elif grown:
            events.extend(self._recheck(tl, self.clock()))
        for ev in events[made:]:
            self.decided_late[ev.event_id] = None
        while len(self.decided_late) > 10_000:
            self.decided_late.popitem(last=False)
        with self.lock:
            final = copy.copy(tl)
        if final.identity_id is not None:
            self.matcher.finish(final)
        with self.lock:
            events.append(ended_event(tl))
            self.ending = [t for t in self.ending if t is not tl]
        return events

    def _decide(self, pending: list[Tracklet], now: float, frame_index: int | None = None) -> list[IdentityEvent]:
        if not pending:
            return []
        with self.lock:
            views = [copy.copy(tl) for tl in pending]  # what the decision sees: the tracklets as of now
            visible, held = self.visible(), self.held()
        decisions = self.matcher.decide(views, visible, now, held=held)
        events = []
        with self.lock:
            for tl, view, d in zip(pending, views, decisions):
                tl.identity_id, tl.outfit_id, tl.similarity = d.identity_id, d.outfit_id, d.similarity
                tl.outfit_changed = d.outfit_changed
                tl.created_identity = d.created
                tl.decided_at_crops = view.crops
                tl.recheck_at_crops = 2 * view.crops
                events.extend(self._events(tl, d, tl.last_frame if frame_index is None else frame_index))
        return events

    @staticmethod
    def _events(tl: Tracklet, d: MatchDecision, frame_index: int) -> list[IdentityEvent]:
        sim = None if d.similarity is None else round(d.similarity, 4)
        kind = "identity.created" if d.created else "identity.assigned"
        out = [IdentityEvent(kind, tl.camera_id, tl.track_id, tl.tracklet_id, d.identity_id, sim, _bbox(tl.last_bbox),
                             frame_index, d.outfit_id, d.outfit_changed)]
        if d.outfit_changed:
            out.append(IdentityEvent("identity.outfit_changed", tl.camera_id, tl.track_id, tl.tracklet_id,
                                     d.identity_id, sim, _bbox(tl.last_bbox), frame_index, d.outfit_id, True,
                                     detail=f"outfit {d.outfit_id}; descriptor cosine to the closest known outfit "
                                            f"{d.outfit_similarity:.3f}" if d.outfit_similarity is not None else None))
        return out

    def _recheck(self, tl: Tracklet, now: float) -> list[IdentityEvent]:
        with self.lock:
            tracks = self.tracks()
            if not any(t is tl for t in tracks):
                tracks.append(tl)  # an ended tracklet is rechecked after it left `live`
            views = {id(t): copy.copy(t) for t in tracks}
            visible = self.visible()
            held = frozenset(t.tracklet_id for ct in self.cameras for t in ct.live.values())
        view = views[id(tl)]
        merge = self.matcher.recheck(view, visible, now, list(views.values()), held)
        if merge is None:
            return []
        with self.lock:
            for other in self.tracks() + [tl]:  # every local tracklet of the retired identity now carries the kept one
                if other.identity_id == merge.drop:
                    other.identity_id, other.outfit_id = merge.keep, None
            return [IdentityEvent("identity.merged", tl.camera_id, tl.track_id, tl.tracklet_id, merge.keep,
                                  round(merge.similarity, 4), _bbox(tl.last_bbox), tl.last_frame, None,
                                  detail=f"identity {merge.drop} merged into {merge.keep}: tracklet {tl.tracklet_id} "
                                         f"matches both (cosine {merge.similarity:.3f})", merged_from=merge.drop)]
