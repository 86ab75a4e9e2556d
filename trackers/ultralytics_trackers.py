"""ByteTrack and BoT-SORT through Ultralytics' own implementations (no hand-written copy)."""

from __future__ import annotations

import functools
from typing import Any

import numpy as np

from detectors.base import Detections
from trackers.base import Tracks

TRACKER_TYPES = ("bytetrack", "botsort")

# The project's defaults over Ultralytics' shipped YAMLs, for fixed cameras at low frame rates (PETS09-S2L1
# runs at 7 fps; benchmarks/mot_pets.py measures each one against Ultralytics' value on its dev frames):
STATIC_CAMERA_PARAMS: dict[str, dict[str, Any]] = {
    "bytetrack": {
        # A person moves a large part of their width between frames at 7 fps, so the Kalman box and the new
        # detection overlap little: accept a match down to IoU ~0.05 (cost 1 - IoU*score) instead of 0.2.
        "match_thresh": 0.95,
        # Only confident boxes (>= 0.6) start the first association or a new track (>= 0.7); boxes of 0.1-0.6
        # only extend tracks that exist. A static false positive (a sign scored ~0.5) then never becomes a track.
        "track_high_thresh": 0.6,
        "new_track_thresh": 0.7,
        # Keep a lost track for 60 frames (6 s at 10 fps) to bridge occlusions.
        "track_buffer": 60,
    },
}
# BoT-SORT: the same, and no camera-motion compensation: a fixed camera does not move, and the sparse optical
# flow costs several ms per frame.
STATIC_CAMERA_PARAMS["botsort"] = {**STATIC_CAMERA_PARAMS["bytetrack"], "gmc_method": "none"}

# Parameters of this project's own, on top of Ultralytics':
# iou_buffer b (ByteTrack only): the first association and the confirmation of new tracks compare boxes grown by
# b x their width and height on every side (buffered IoU, as in C-BIoU, Yang et al. WACV 2023). At a low frame
# rate a small person's Kalman box and its next detection may not overlap at all; grown boxes still do, and two
# people side by side keep distinct overlaps. 0 is Ultralytics' plain IoU.
# std_weight_position / std_weight_velocity: the Kalman filter's noise, as shares of the box height (Ultralytics
# hard-codes 1/20 and 1/160). Only their ratio changes the filter's gains. At 1/160 a track's velocity follows a
# walker too slowly for 7-10 fps: the predicted box trails the person and, once frames are skipped
# (`detector.every`), misses the next detection. ByteTrack: 1/60, chosen on the PETS dev frames, where 1/80-1/40
# form a plateau (benchmarks/mot_pets.py, options velocity-*, every-*-velocity-*). BoT-SORT keeps the library's
# 1/160: its filter scales the noise by width and height apart, and 1/60 cost it 3 IDF1 points there.
# low_score_iou_buffer b: the second association (a tracked box against the low-score detections, 0.1 to
# track_high_thresh, which ByteTrack keeps for partly hidden people) compares boxes grown by b x their size and
# accepts IoU > 0.5 of those, where the library takes plain IoU > 0.5. A person half hidden by someone crossing
# gets a low score and a box shifted off their Kalman box; once frames are skipped (`detector.every`) that box has
# moved two frames' worth and plain IoU falls below 0.5, so the track is lost there and a new one starts behind
# the crossing. 0.3 from the PETS dev frames, where 0.2-0.4 form a plateau (benchmarks/mot_pets.py, options
# low-buffer-*); on every frame it changes nothing there. 0 is the library's plain IoU, which BoT-SORT keeps: with
# its slower filter (1/160) the buffer cost it 4 IDF1 points on every frame there (77.3 -> 73.1).
PROJECT_PARAMS: dict[str, dict[str, Any]] = {
    "bytetrack": {"iou_buffer": 0.0, "std_weight_position": 1.0 / 20, "std_weight_velocity": 1.0 / 60,
                  "low_score_iou_buffer": 0.3},
    "botsort": {"std_weight_position": 1.0 / 20, "std_weight_velocity": 1.0 / 160, "low_score_iou_buffer": 0.0},
}


def ultralytics_tracker_params(kind: str) -> dict[str, Any]:
    """Ultralytics' shipped defaults for `kind` (bytetrack.yaml / botsort.yaml)."""
    from ultralytics.utils import YAML
    from ultralytics.utils.checks import check_yaml

    if kind not in TRACKER_TYPES:
        raise ValueError(f"unknown tracker type {kind!r}; choose one of {TRACKER_TYPES}")
    return dict(YAML.load(check_yaml(f"{kind}.yaml")))


def default_tracker_params(kind: str) -> dict[str, Any]:
    """The parameters a `kind` tracker runs with when the config sets none: Ultralytics' YAML with the
    project's static-camera values over it, and the project's own parameters."""
    return {**ultralytics_tracker_params(kind), **STATIC_CAMERA_PARAMS[kind], **PROJECT_PARAMS[kind]}


def buffered_boxes(xyxy: np.ndarray, buffer: float) -> np.ndarray:
    """(N, 4) boxes grown by `buffer` x their width / height on each side."""
    xyxy = np.asarray(xyxy, dtype=np.float32).reshape(-1, 4)
    pad = buffer * (xyxy[:, 2:4] - xyxy[:, 0:2])
    return np.concatenate([xyxy[:, 0:2] - pad, xyxy[:, 2:4] + pad], axis=1)


def stack_xyxy(stracks) -> np.ndarray:
    """(N, 4) float32: each STrack's `xyxy` (a track's filter box; a new detection's own box), with the library's
    arithmetic on all of them at once, so the values are those its per-track property gives. Axis-aligned boxes
    only: `UltralyticsTracker.update` hands the library `Boxes`, never rotated ones, so no track has an `angle`."""
    out = np.empty((len(stracks), 4), np.float32)
    filtered = [i for i, s in enumerate(stracks) if s.mean is not None]
    if filtered:
        box = np.array([stracks[i].mean[:4] for i in filtered])  # STrack.tlwh from (x, y, a, h)
        box[:, 2] *= box[:, 3]
        box[:, :2] -= box[:, 2:] / 2
        box[:, 2:] += box[:, :2]
        out[filtered] = box
    if len(filtered) < len(stracks):
        fresh = [i for i, s in enumerate(stracks) if s.mean is None]
        box = np.array([stracks[i]._tlwh for i in fresh])
        box[:, 2:] += box[:, :2]
        out[fresh] = box
    return out


@functools.cache
def _batched_kalman_xyah():
    """Ultralytics' KalmanFilterXYAH with its prediction and its correction done for all of a frame's tracks in a few
    array operations. The library corrects one track at a time (about 25 small NumPy calls each) and its batched
    prediction builds its noise with a dozen more: with ~10 tracks a camera-frame, that Python (with the boxes
    rebuilt track by track) was over half of ByteTrack's CPU in a profile of the 8-camera run (README, Benchmarks:
    "Tracks by the array"). The equations are the library's (constant velocity, noise as shares of the box height);
    only the grouping of the work differs, so results agree with `predict` / `update` to rounding
    (tests/test_components.py)."""
    from ultralytics.trackers.utils.kalman_filter import KalmanFilterXYAH

    class BatchedKalmanXYAH(KalmanFilterXYAH):
        def multi_predict(self, mean: np.ndarray, covariance: np.ndarray):
            """(N, 8) means and (N, 8, 8) covariances one frame on."""
            h = mean[:, 3:4]
            pos, vel = self._std_weight_position * h, self._std_weight_velocity * h
            std = np.concatenate([pos, pos, np.full_like(h, 1e-2), pos, vel, vel, np.full_like(h, 1e-5), vel], 1)
            f = self._motion_mat
            covariance = f @ covariance @ f.T
            diag = np.arange(8)
            covariance[:, diag, diag] += np.square(std)
            return mean @ f.T, covariance

        def multi_update(self, mean: np.ndarray, covariance: np.ndarray, measurement: np.ndarray):
            """(N, 8) means and (N, 8, 8) covariances corrected by (N, 4) measurements (x, y, a, h) at once."""
            h = mean[:, 3:4]
            pos = self._std_weight_position * h
            std = np.concatenate([pos, pos, np.full_like(h, 1e-1), pos], 1)
            projected_cov = covariance[:, :4, :4].copy()
            diag = np.arange(4)
            projected_cov[:, diag, diag] += np.square(std)
            gain = np.linalg.solve(projected_cov, covariance[:, :, :4].transpose(0, 2, 1)).transpose(0, 2, 1)
            innovation = measurement - mean[:, :4]
            new_mean = mean + np.einsum("nij,nj->ni", gain, innovation)
            new_covariance = covariance - gain @ projected_cov @ gain.transpose(0, 2, 1)
            return new_mean, new_covariance

    return BatchedKalmanXYAH


def _project_tracker(kind: str, batched: bool | None = None):
    """Ultralytics' BYTETracker / BOTSORT with this project's parameters: the Kalman filter's noise per tracker, and
    (ByteTrack) buffered IoU in `get_dists` (its first association and the confirmation of new tracks; the second,
    low-score association keeps plain IoU >= 0.5). Subclasses of the library's classes, not copies."""
    from ultralytics.trackers.bot_sort import BOTSORT
    from ultralytics.trackers.byte_tracker import BYTETracker, TrackState
    from ultralytics.trackers.utils import matching

    base = BOTSORT if kind == "botsort" else BYTETracker
    # The velocity terms the library's multi_predict zeroes for a track that is not being tracked (XYAH: the
    # height's; XYWH: width's and height's), so a lost box does not keep growing or shrinking.
    frozen = [6, 7] if kind == "botsort" else [7]

    if batched is None:  # BoT-SORT's XYWH filter and its tracks' ReID features keep the library's path
        batched = kind == "bytetrack"
    elif batched and kind != "bytetrack":
        raise ValueError("the batched filter and matching are ByteTrack's only")

    def boxes_of(stracks) -> np.ndarray:
        return stack_xyxy(stracks) if batched else np.stack([s.xyxy for s in stracks]).astype(np.float32)

    class ProjectTracker(base):
        def get_kalmanfilter(self):
            kf = _batched_kalman_xyah()() if batched else super().get_kalmanfilter()
            kf._std_weight_position = float(self.args.std_weight_position)
            kf._std_weight_velocity = float(self.args.std_weight_velocity)
            return kf

        def multi_predict(self, tracks):
            # The library predicts every tracker's tracks with one class-level filter (STrack.shared_kalman), which
            # would make one camera's noise settings every camera's; this uses the tracker's own filter.
            if not tracks:
                return
            mean = np.asarray([t.mean for t in tracks])
            cov = np.asarray([t.covariance for t in tracks])
            idle = np.array([t.state != TrackState.Tracked for t in tracks])
            mean[np.ix_(idle, frozen)] = 0
            mean, cov = self.kalman_filter.multi_predict(mean, cov)
            for t, m, c in zip(tracks, mean, cov):
                t.mean, t.covariance = m, c

        def _apply_matches(self, matches, pool, detections, activated, refind):
            # The library's step (STrack.update for a tracked track, re_activate for a lost one, each correcting its
            # own filter) with the filter's corrections of all the pairs done at once.
            if not batched or len(matches) == 0:
                return super()._apply_matches(matches, pool, detections, activated, refind)
            dets = [detections[j] for _, j in matches]
            tracks = [pool[i] for i, _ in matches]
            xyah = np.array([d.tlwh for d in dets])  # STrack.tlwh_to_xyah, in the detections' own float32
            xyah[:, :2] += xyah[:, 2:] / 2
            xyah[:, 2] /= xyah[:, 3]
            mean, cov = self.kalman_filter.multi_update(np.array([t.mean for t in tracks]),
                                                        np.array([t.covariance for t in tracks]), xyah)
            for t, d, m, c in zip(tracks, dets, mean, cov):
                was_tracked = t.state == TrackState.Tracked
                t.mean, t.covariance = m, c
                t.tracklet_len = t.tracklet_len + 1 if was_tracked else 0
                t.state = TrackState.Tracked
                t.is_activated = True
                t.frame_id = self.frame_id
                t.score, t.cls, t.idx = d.score, d.cls, d.idx
                (activated if was_tracked else refind).append(t)

        def _format_output(self):
            active = [t for t in self.tracked_stracks if t.is_activated]
            if not batched or not active:
                return super()._format_output()
            # the library's [x1, y1, x2, y2, track_id, score, cls, idx] rows, the boxes computed all at once
            rows = np.empty((len(active), 8), np.float32)
            rows[:, :4] = stack_xyxy(active)
            rows[:, 4:] = np.array([(t.track_id, t.score, t.cls, t.idx) for t in active], dtype=np.float32)
            return rows

        def get_dists(self, tracks, detections):
            b = float(getattr(self.args, "iou_buffer", 0.0))  # BoT-SORT has no such parameter: 0
            if not batched and b <= 0:
                return super().get_dists(tracks, detections)
            if not tracks or not detections:
                return np.zeros((len(tracks), len(detections)), dtype=np.float32)
            boxes_t, boxes_d = boxes_of(tracks), boxes_of(detections)
            if b > 0:
                boxes_t, boxes_d = buffered_boxes(boxes_t, b), buffered_boxes(boxes_d, b)
            dists = matching.iou_distance(list(boxes_t), list(boxes_d))
            return matching.fuse_score(dists, detections) if self.args.fuse_score else dists

        def _second_association(self, strack_pool, u_track, detections_second, activated, refind, lost):
            # The library's step with buffered boxes (its own IoU-only cost and 0.5 threshold otherwise): tracked
            # boxes the first association left, against the low-score detections; those still unmatched are lost.
            b = float(self.args.low_score_iou_buffer)
            if b <= 0:
                return super()._second_association(strack_pool, u_track, detections_second, activated, refind, lost)
            remaining = [strack_pool[i] for i in u_track if strack_pool[i].state == TrackState.Tracked]
            unmatched = range(len(remaining))
            if remaining and detections_second:
                dists = matching.iou_distance(list(buffered_boxes(boxes_of(remaining), b)),
                                              list(buffered_boxes(boxes_of(detections_second), b)))
                matches, unmatched, _ = matching.linear_assignment(dists, thresh=0.5)
                self._apply_matches(matches, remaining, detections_second, activated, refind)
            for k in unmatched:
                remaining[k].mark_lost()
                lost.append(remaining[k])

    return ProjectTracker


class UltralyticsTracker:
    def __init__(self, kind: str = "bytetrack", params: dict[str, Any] | None = None) -> None:
        from ultralytics.engine.results import Boxes
        from ultralytics.utils import IterableSimpleNamespace

        cfg = default_tracker_params(kind)
        unknown = sorted(set(params or {}) - set(cfg))
        if unknown:
            raise ValueError(f"unknown {kind} parameter(s) {unknown}; known: {sorted(cfg)}")
        cfg.update(params or {})
        if kind == "botsort" and cfg.get("with_reid") and cfg.get("model") == "auto":
            # "auto" makes Ultralytics reuse detector features it never receives here.
            raise ValueError("botsort with_reid needs an explicit ReID model file in tracker.params.model")
        for key in ("iou_buffer", "low_score_iou_buffer"):
            value = cfg.get(key, 0.0)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value < float("inf"):
                raise ValueError(f"{key} must be a number >= 0 (a share of the box size, e.g. 0.3), got {value!r}")
        for key in ("std_weight_position", "std_weight_velocity"):
            value = cfg[key]
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value < float("inf"):
                raise ValueError(f"{key} must be a number > 0 (a share of the box height, e.g. 0.0167 for 1/60), "
                                 f"got {value!r}")
        tracker_class = _project_tracker(kind)
        if cfg["low_score_iou_buffer"] > 0:
            from ultralytics.trackers.byte_tracker import BYTETracker

            if "_second_association" not in vars(BYTETracker):  # older releases inline it in update()
                raise RuntimeError("tracker.params.low_score_iou_buffer needs an Ultralytics release whose BYTETracker "
                                   "has _second_association (8.4.190 has it): pip install -U "
                                   "ultralytics-opencv-headless, or set tracker.params.low_score_iou_buffer: 0")
        self._tracker = tracker_class(IterableSimpleNamespace(**cfg))
        self._boxes = Boxes
        self.kind = kind
        self.max_lost_frames = int(cfg["track_buffer"])

    def update(self, detections: Detections, frame: np.ndarray) -> Tracks:
        h, w = frame.shape[:2]
        boxes = self._boxes(detections.as_rows().reshape(-1, 6), (h, w)).numpy()
        return _tracks(self._tracker.update(boxes, frame))

    def predict(self, frame: np.ndarray | None) -> Tracks:
        """A frame the detector skipped (`detector.every` > 1): every track's motion model moves one frame on, as
        an update would, and the confirmed tracks are reported where it puts them, with score 0 (so no crop is
        taken from a guessed box) and det_index -1. Nothing is matched, started or lost; the frame counter moves,
        so `track_buffer` still counts frames."""
        t = self._tracker
        t.frame_id += 1
        t.multi_predict(t.tracked_stracks + t.lost_stracks)
        tracks = _tracks(t._format_output())
        return Tracks(tracks.xyxy, tracks.track_id, np.zeros_like(tracks.score), tracks.cls,
                      np.full_like(tracks.det_index, -1))

    def following(self) -> bool:
        """The library's tracked list holds the tracks seen lately, the new unconfirmed ones included; a lost
        track can only come back through a detection that a change in the picture would have asked for."""
        return bool(self._tracker.tracked_stracks)

    def split(self, track_id: int) -> int | None:
        """The track keeps its motion state and goes on under the library's next id (ids stay unique)."""
        t = self._tracker
        for s in t.tracked_stracks + t.lost_stracks:
            if s.track_id == track_id:
                s.track_id = s.next_id()
                return int(s.track_id)
        return None


def _tracks(rows) -> Tracks:
    """Ultralytics' `[x1, y1, x2, y2, track_id, score, cls, idx]` rows as a Tracks record."""
    if len(rows) == 0:
        return Tracks.empty()
    rows = np.asarray(rows, dtype=np.float64)
    return Tracks(
        xyxy=rows[:, 0:4].astype(np.float32),
        track_id=rows[:, 4].astype(np.int64),
        score=rows[:, 5].astype(np.float32),
        cls=rows[:, 6].astype(np.int32),
        det_index=rows[:, 7].astype(np.int64),
    )
