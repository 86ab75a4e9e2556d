"""Per-camera tracklets: which track crops are worth embedding, and their running embedding."""

from __future__ import annotations

import time
from collections import deque
from dataclasses import dataclass, field

import numpy as np

from trackers.base import Tracks


@dataclass
class Tracklet:
    tracklet_id: str
    camera_id: str
    track_id: int
    first_frame: int
    last_frame: int
    last_bbox: np.ndarray
    last_score: float
    last_step: int = 0
    last_crop_time: float = -np.inf
    embedding_sum: np.ndarray | None = None
    weight_sum: float = 0.0
    crops: int = 0
    identity_id: int | None = None
    outfit_id: int | None = None
    similarity: float | None = None
    outfit_changed: bool = False  # decided as a new outfit of a known identity
    decided_at_crops: int = 0
    recheck_at_crops: int = 0  # re-examine the identity (merge?) once the tracklet has this many crops
    created_identity: bool = False  # its first decision created its identity (a tentative one)
    started_at: float = field(default_factory=time.time)  # run clock (pipeline.clock) of the first frame
    last_seen_at: float = field(default_factory=time.time)  # run clock of the last frame with the track
    look_sum: np.ndarray | None = None  # quality-weighted sum of outfit descriptors
    look_weight: float = 0.0
    full_crops: int = 0  # crops requested at full size (min_height and up)
    small_crops: int = 0  # crops requested below min_height, while no full-size crop existed
    last_check_time: float = -np.inf  # video time of the last swap-check crop (after the crop cap)
    last_near_time: float = -np.inf  # video time its box last came near another track's box
    recent: deque = field(default_factory=lambda: deque(maxlen=SwapCheck.RECENT))  # last crops that agreed
    suspects: list = field(default_factory=list)  # crops in a row that did not agree with `recent`
    split_off: bool = False  # its track was found to hold another person: end it now

    def add_embedding(self, vector: np.ndarray, weight: float, look: np.ndarray | None = None) -> None:
        v = vector * weight
        self.embedding_sum = v if self.embedding_sum is None else self.embedding_sum + v
        self.weight_sum += weight
        self.crops += 1
        if look is not None:
            lv = np.asarray(look, np.float32) * weight
            self.look_sum = lv if self.look_sum is None else self.look_sum + lv
            self.look_weight += weight

    def look(self) -> np.ndarray | None:
        """Quality-weighted mean outfit descriptor, renormalised (None without descriptors)."""
        if self.look_sum is None:
            return None
        v = self.look_sum / max(self.look_weight, 1e-12)
        return (v / max(float(np.linalg.norm(v)), 1e-12)).astype(np.float32)

    def embedding(self) -> np.ndarray:
        """Quality-weighted mean of the L2-normalised crop embeddings, renormalised."""
        assert self.embedding_sum is not None, "tracklet has no embedding yet"
        v = self.embedding_sum / max(self.weight_sum, 1e-12)
        return (v / max(float(np.linalg.norm(v)), 1e-12)).astype(np.float32)


@dataclass(frozen=True)
class CropRequest:
    tracklet: Tracklet
    bbox: np.ndarray  # int xyxy inside the frame
    weight: float
    check_only: bool = False  # taken after the crop cap for SwapCheck only: not added to the embedding
    # the box overlapped another track's (grown by CropGate.NEAR_GROW) in this frame or the last
    # CropGate.NEAR_WINDOW_S: SwapCheck judges the crop but keeps it out of its reference
    met_lately: bool = False


SWAP_THRESHOLD_KEY = "swap_threshold"  # PreprocessSpec.extra key: the model's own reid.swap_threshold


def swap_threshold_for(reid_cfg, spec) -> tuple[float | None, bool]:
    """The swap check's threshold -> (threshold, taken from the model). The config's `swap_threshold` when it
    was written, else the model's own (`extra.swap_threshold` of its spec) when it has one, else the config
    default (measured with the default model of 2026-12-04, Intel 0267). A cosine level belongs to one model:
    another model puts different people at other cosines (0288 puts them about 0.06 higher than 0267 on SynthCC
    test people, and at 0267's 0.3 misses a swap on PETS that 0.35-0.5 all find; README, Benchmarks)."""
    own = (getattr(spec, "extra", None) or {}).get(SWAP_THRESHOLD_KEY)
    if own is None or "swap_threshold" in reid_cfg.model_fields_set:
        return reid_cfg.swap_threshold, False
    return float(own), True


@dataclass
class SwapCheck:
    """Finds the moment a track starts following another person (a tracker ID swap in a group).

    Each crop of a track is compared with the mean of its last RECENT crops that agreed with each other. A crop
    below `threshold` is a suspect (not added to the tracklet's embedding); `crops` suspects in a row that agree
    with one another (cosine >= `threshold` between every two of them) mean the box now follows someone else,
    and the track is split there. One stray crop (an occluder, a crossing) or a slow drift (the person turning,
    growing nearer) is not a swap: the first is cleared by the next agreeing crop, the second never falls far
    below its recent crops. On PETS09-S2L1's dev frames the default model gives 0.0-0.35 across a swap and
    0.6-0.95 between a person's consecutive crops (README, Benchmarks).

    A crop taken while the box is near another track's, or in the NEAR_WINDOW_S after, is judged but never
    becomes a reference: at a crossing the box may hold both people, and a reference taken there lets the other
    person in by degrees (PETS dev frames: a track's crops fell 0.9 -> 0.6 -> 0.35 -> 0.15 from its first person
    over one crossing, each step agreeing with the crops just before it). Just after the meeting the box may
    already follow the other person while the first is still half behind them: with every frame detected, a
    track's first crop of its new person (PETS gt 9 after gt 15, frame 35) agreed at 0.73 with the old reference
    and, once in it, carried the next ones (0.39, 0.45 at a threshold of 0.4), so the swap was never found."""

    threshold: float = 0.3
    crops: int = 2
    RECENT = 4

    def observe(self, tl: Tracklet, vector: np.ndarray, met_lately: bool = False) -> tuple[bool, bool]:
        """(agrees, swapped) for one L2-normalised crop feature of `tl`: `agrees` when the crop belongs to the
        tracklet's person (add it to its embedding); `swapped` when the suspects show the track changed person.
        `met_lately`: the box was near another track's when the crop was taken or shortly before
        (CropRequest.met_lately)."""
        v = np.asarray(vector, np.float32)
        if len(tl.recent) < 2:
            tl.recent.append(v)
            return True, False
        ref = np.mean(tl.recent, axis=0)
        if float(v @ ref) / max(float(np.linalg.norm(ref)), 1e-12) >= self.threshold:
            if not met_lately:
                tl.recent.append(v)
            tl.suspects.clear()
            return True, False
        tl.suspects.append(v)
        if len(tl.suspects) < self.crops:
            return False, False
        s = np.stack(tl.suspects[-self.crops:])
        return False, bool((s @ s.T).min() >= self.threshold)  # every pair of them: one person, not strangers


# A crop below `min_height` counts this much of a full one of the same score and height rule: enough to give a
# track of a small (far) person an identity, too little to steer a tracklet that also has full-size crops.
SMALL_CROP_WEIGHT = 0.1


@dataclass
class CropGate:
    min_height: int = 64
    min_width: int = 20
    min_confidence: float = 0.4
    crops_per_second: float = 2.0
    edge_margin: int = 2
    max_crops_per_track: int | None = None  # None: no cap
    small_min_height: int = 0  # crops from here up to min_height are "small" (low weight); 0: none
    check_per_second: float = 0.0  # swap-check crops a second once a track takes no more crops; 0: none
    check_while_near: bool = True  # False: check crops only once the boxes have parted (within NEAR_WINDOW_S)
    # Trackers swap ids where boxes meet: check crops are taken only while a track is near another one and for
    # NEAR_WINDOW_S after (the ids may have changed hands during the meeting), so lone walkers cost nothing; for
    # the same reason no crop of that time becomes SwapCheck's reference (CropRequest.met_lately).
    NEAR_WINDOW_S = 2.0
    NEAR_GROW = 0.25  # boxes grown by this share of their size on every side are "near" when they overlap

    def quality(self, bbox: np.ndarray, score: float, frame_shape: tuple[int, ...]) -> tuple[float, bool]:
        """(weight, small): weight 0 when the crop should not be embedded, else in (0, 1]; small when it is
        below min_height and only taken for tracks without a full-size crop."""
        h, w = frame_shape[:2]
        x1, y1, x2, y2 = bbox
        bw, bh = x2 - x1, y2 - y1
        small = bh < self.min_height
        if small and (not self.small_min_height or bh < self.small_min_height):
            return 0.0, small
        # The width floor scales with the height, so a small person is not refused for being narrow.
        if bw < self.min_width * min(1.0, bh / self.min_height) or score < self.min_confidence:
            return 0.0, small
        m = self.edge_margin
        if x1 < m or y1 < m or x2 > w - 1 - m or y2 > h - 1 - m:
            return 0.0, small  # a person cut by the border embeds as a different shape
        if not 1.2 <= bh / max(bw, 1.0) <= 5.0:
            return 0.0, small  # not a standing person's box: occlusion merge or a partial detection
        weight = float(score) * min(1.0, bh / 128.0)
        return (weight * SMALL_CROP_WEIGHT if small else weight), small


def _near_another(xyxy: np.ndarray, grow: float) -> np.ndarray:
    """For each box, whether it overlaps another one once both are grown by `grow` x their size on every side."""
    n = len(xyxy)
    if n < 2:
        return np.zeros(n, bool)
    b = np.asarray(xyxy, np.float32)
    size = (b[:, 2:] - b[:, :2]) * grow
    g = np.concatenate([b[:, :2] - size, b[:, 2:] + size], axis=1)
    overlap_x = np.minimum(g[:, None, 2], g[None, :, 2]) > np.maximum(g[:, None, 0], g[None, :, 0])
    overlap_y = np.minimum(g[:, None, 3], g[None, :, 3]) > np.maximum(g[:, None, 1], g[None, :, 1])
    both = overlap_x & overlap_y
    np.fill_diagonal(both, False)
    return both.any(axis=1)


@dataclass
class CameraTracklets:
    camera_id: str
    run_id: str
    gate: CropGate
    max_lost_frames: int
    live: dict[int, Tracklet] = field(default_factory=dict)
    step: int = 0  # the last step fed to update()

    def update(self, step: int, frame_index: int, video_time: float, tracks: Tracks, frame_shape: tuple[int, ...],
               seen_at: float | None = None) -> tuple[list[Tracklet], list[CropRequest]]:
        """Feed this frame's tracks; returns the tracklets that started and the crops to embed.
        `seen_at`: the frame's time on the run's clock (pipeline.clock; default: the wall clock now)."""
        seen_at = time.time() if seen_at is None else seen_at
        started, requests = [], []
        self.step = step
        h, w = frame_shape[:2]
        min_gap = 1.0 / self.gate.crops_per_second
        near = _near_another(tracks.xyxy, self.gate.NEAR_GROW)  # for check crops and SwapCheck's reference
        for i in range(len(tracks)):
            tid = int(tracks.track_id[i])
            bbox = tracks.xyxy[i]
            score = float(tracks.score[i])
            t = self.live.get(tid)
            if t is None:
                t = Tracklet(f"{self.camera_id}:{self.run_id}:{tid}", self.camera_id, tid, frame_index, frame_index,
                             bbox, score, started_at=seen_at)
                self.live[tid] = t
                started.append(t)
            t.last_frame, t.last_step, t.last_bbox, t.last_score = frame_index, step, bbox, score
            t.last_seen_at = seen_at
            if near[i]:
                t.last_near_time = video_time
            if tracks.det_index[i] < 0 or video_time - t.last_crop_time < min_gap:
                continue  # a box the motion model guessed (no detection) never gives a crop, whatever its score
            weight, small = self.gate.quality(bbox, score, frame_shape)
            if weight <= 0:
                continue
            cap = self.gate.max_crops_per_track
            x1, y1, x2, y2 = np.clip(np.round(bbox), 0, [w, h, w, h]).astype(int)
            # Small crops only until the track has a full-size one; each kind stops at the cap. After that, a
            # crop now and then (any size) only checks that the track still follows the same person.
            if (small and t.full_crops) or (cap is not None and (t.small_crops if small else t.full_crops) >= cap):
                rate = self.gate.check_per_second
                if (rate > 0 and video_time - t.last_near_time <= self.gate.NEAR_WINDOW_S
                        and (self.gate.check_while_near or not near[i])
                        and video_time - max(t.last_check_time, t.last_crop_time) >= 1.0 / rate):
                    requests.append(CropRequest(t, np.array([x1, y1, x2, y2]), weight, check_only=True,
                                                met_lately=self._met_lately(t, video_time)))
                    t.last_check_time = video_time
                continue
            requests.append(CropRequest(t, np.array([x1, y1, x2, y2]), weight,
                                        met_lately=self._met_lately(t, video_time)))
            t.last_crop_time = video_time
            if small:
                t.small_crops += 1
            else:
                t.full_crops += 1
        return started, requests

    def _met_lately(self, t: Tracklet, video_time: float) -> bool:
        """Whether `t`'s box was near another track's in this frame or the last NEAR_WINDOW_S seconds."""
        return video_time - t.last_near_time <= self.gate.NEAR_WINDOW_S

    def ends(self, t: Tracklet, step: int) -> bool:
        """Whether `expire(step)` ends `t`: its track was split off, or lost longer than the tracker keeps it."""
        return t.split_off or step - t.last_step > self.max_lost_frames

    def expire(self, step: int, everything: bool = False) -> list[Tracklet]:
        """Tracklets whose track has been lost longer than the tracker keeps it (or all, at the end).

        `step` counts processed frames, the unit of the tracker's own lost-track buffer."""
        ended = [t for t in self.live.values() if everything or self.ends(t, step)]
        for t in ended:
            del self.live[t.track_id]
        return ended

    def visible(self) -> list[Tracklet]:
        """Tracklets whose track is in the latest frame (not merely kept by the tracker while lost)."""
        return [t for t in self.live.values() if t.last_step == self.step]

    def visible_identities(self) -> set[int]:
        return {t.identity_id for t in self.visible() if t.identity_id is not None}
