"""The run loop's match stage: tracklets of all cameras -> matcher decisions -> identity events.

Decisions happen at three moments of a tracklet:
* tentative: once it has `min_crops` crops, all tracklets of a step jointly (`identity.created`,
  `identity.assigned`, and `identity.outfit_changed` when a known person wears a new outfit);
* during the track: at 2x, 4x, ... those crops its fuller embedding is checked against the gallery again,
  and may show that its identity and an older one are one person (`identity.merged`);
* final: at track end (`track.ended` carries the final identity); a track too short for a tentative
  decision is decided then, and its last evidence refines the outfit prototype.
"""

from __future__ import annotations

import time
from typing import Callable

from pipeline.events import IdentityEvent
from pipeline.matcher import CrossCameraMatcher, MatchDecision
from pipeline.tracklets import CameraTracklets, Tracklet


def _bbox(b) -> list[float]:
    return [round(float(v), 1) for v in b]


class MatchStage:
    def __init__(self, matcher: CrossCameraMatcher, min_crops: int,
                 cameras: Callable[[], list[CameraTracklets]] | list[CameraTracklets]) -> None:
        self.matcher = matcher
        self.store = matcher.store
        self.min_crops = min_crops
        self._cameras = cameras
        # Tracklets the trackers gave up whose end() has not run yet (several end in one step, or wait for
        # the store): still evidence of who was on screen when, so merges and joins must see them.
        self.ending: list[Tracklet] = []

    @property
    def cameras(self) -> list[CameraTracklets]:
        return self._cameras() if callable(self._cameras) else self._cameras

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

    def step(self, now: float | None = None, out: list[IdentityEvent] | None = None) -> list[IdentityEvent]:
        """Decide every tracklet that became ready in this step, re-check grown ones, refresh presence.
        Events are appended to `out` as they are decided, so a caller whose store fails half-way through
        (the exception propagates) still holds the events of the decisions already made."""
        now = time.time() if now is None else now
        pending = [tl for ct in self.cameras for tl in ct.live.values()
                   if tl.identity_id is None and tl.crops >= self.min_crops]
        events = out if out is not None else []
        events.extend(self._decide(pending, now))
        for ct in self.cameras:
            for tl in list(ct.live.values()):
                if tl.identity_id is not None and tl.recheck_at_crops and tl.crops >= tl.recheck_at_crops:
                    tl.recheck_at_crops = 2 * tl.crops
                    events.extend(self._recheck(tl, now))
        self.matcher.refresh_presence([tl for ct in self.cameras for tl in ct.visible() if tl.identity_id is not None],
                                      now)
        return events

    def end(self, tl: Tracklet, out: list[IdentityEvent] | None = None) -> list[IdentityEvent]:
        """A tracklet ended: final decision (short tracks), merge check, prototype refinement, track.ended.
        Safe to call again for the same tracklet after a store failure (`out` as in `step`)."""
        events = out if out is not None else []
        if tl.identity_id is None and tl.crops > 0:
            events.extend(self._decide([tl], time.time(), frame_index=tl.last_frame))
        elif tl.identity_id is not None and tl.crops > tl.decided_at_crops:
            events.extend(self._recheck(tl, time.time()))
        if tl.identity_id is not None:
            self.matcher.finish(tl)
        events.append(IdentityEvent("track.ended", tl.camera_id, tl.track_id, tl.tracklet_id, tl.identity_id,
                                    tl.similarity, _bbox(tl.last_bbox), tl.last_frame, tl.outfit_id,
                                    outfit_changed=tl.outfit_changed))
        self.ending = [t for t in self.ending if t is not tl]
        return events

    def _decide(self, pending: list[Tracklet], now: float, frame_index: int | None = None) -> list[IdentityEvent]:
        if not pending:
            return []
        decisions = self.matcher.decide(pending, self.visible(), now, held=self.held())
        events = []
        for tl, d in zip(pending, decisions):
            tl.identity_id, tl.outfit_id, tl.similarity = d.identity_id, d.outfit_id, d.similarity
            tl.outfit_changed = d.outfit_changed
            tl.created_identity = d.created
            tl.decided_at_crops = tl.crops
            tl.recheck_at_crops = 2 * tl.crops
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
        tracks = self.tracks()
        if not any(t is tl for t in tracks):
            tracks.append(tl)  # an ended tracklet is rechecked after it left `live`
        merge = self.matcher.recheck(tl, self.visible(), now, tracks)
        if merge is None:
            return []
        for other in tracks:  # every local tracklet of the retired identity now carries the kept one
            if other.identity_id == merge.drop:
                other.identity_id, other.outfit_id = merge.keep, None
        if tl.identity_id == merge.drop:
            tl.identity_id, tl.outfit_id = merge.keep, None
        return [IdentityEvent("identity.merged", tl.camera_id, tl.track_id, tl.tracklet_id, merge.keep,
                              round(merge.similarity, 4), _bbox(tl.last_bbox), tl.last_frame, None,
                              detail=f"identity {merge.drop} merged into {merge.keep}: tracklet {tl.tracklet_id} "
                                     f"matches both (cosine {merge.similarity:.3f})", merged_from=merge.drop)]
