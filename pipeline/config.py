"""The camera config (contract): only `cameras: [{id, source}]` is required; every section is strict."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated, Any, Literal, Union

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from pipeline.redact import redact

CAMERA_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
URL_LIKE = re.compile(r"^[A-Za-z][A-Za-z0-9+.\-]*://")  # any scheme, any case: a stream, never a file path
DAY_S = 86_400.0


class ConfigError(Exception):
    """A configuration problem: which file, which key, what is wrong (and how to fix it). The problem
    text is redacted: it may quote a source or store URL."""

    def __init__(self, file: str | Path, key_path: str, problem: str) -> None:
        self.file, self.key_path, self.problem = str(file), key_path, redact(problem)
        super().__init__(f"{self.file}: {key_path or '<top level>'}: {self.problem}")


class Strict(BaseModel):
    # Numbers must be finite: an infinite frame rate or retention is never what was meant, and hangs or
    # crashes far from the config (a video writer at inf fps, an EXPIRE of inf seconds).
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


class ReconnectConfig(Strict):
    """Exponential backoff with jitter between attempts to (re)open a live source."""

    initial_s: float = Field(0.5, gt=0, le=DAY_S, description="delay before the first retry")
    max_s: float = Field(30.0, gt=0, le=DAY_S, description="the delay never grows beyond this")
    multiplier: float = Field(2.0, ge=1, le=100)
    jitter: float = Field(0.2, ge=0, le=1, description="each delay is scaled by a random factor in [1-j, 1+j]")
    reset_after_s: float = Field(10.0, gt=0, le=DAY_S, description="streaming this long resets the delay to initial_s")
    max_attempts: int | None = Field(None, ge=1, le=10**9,
                                     description="consecutive failed attempts before 'failed'; none: forever")

    @model_validator(mode="after")
    def _order(self) -> "ReconnectConfig":
        if self.max_s < self.initial_s:
            raise ValueError("max_s must be at least initial_s")
        return self


class CameraConfig(Strict):
    id: str
    source: Union[int, str]
    # Frame rates: at least one frame per 100 s (below, a "rate" is a typo), at most 1000 per second.
    fps: float | None = Field(None, ge=0.01, le=1000, description="processing rate; frames above it are skipped")
    source_fps: float | None = Field(None, ge=0.01, le=1000, description="override the container's frame rate")
    backend: Literal["ffmpeg", "gstreamer"] = "ffmpeg"
    transport: Literal["tcp", "udp"] = "tcp"  # RTSP only
    open_timeout_s: float = Field(10.0, gt=0, le=DAY_S, description="give up opening a source after this long")
    read_timeout_s: float = Field(5.0, gt=0, le=DAY_S, description="a live source silent this long is reconnected")
    stall_after_s: float = Field(2.0, gt=0, le=DAY_S, description="no frame this long: camera state 'stalled'")
    realtime: bool = Field(False, description="files: hand frames over at the source's frame rate, as a live "
                           "camera would (demos, dashboard tests); live sources are real time anyway")
    reconnect: ReconnectConfig = ReconnectConfig()
    # Cameras are decoded side by side, one reader thread each: with eight of them, one decoder thread a camera
    # took 17-20 % less CPU a frame than FFmpeg's default of one per core, for the same frames (README:
    # Benchmarks, "One thread a decoder").
    decode_threads: int = Field(1, ge=0, le=64, description="decoder threads for this camera: FFmpeg's for files "
                                "and streams, the max-threads of a GStreamer decoder that has it; 0: the decoder's "
                                "own choice (one per core), for one camera of high resolution on many cores")
    # A camera's colour cast measured once (e.g. a grey card), for a levelled ReID model: a camera that has seen
    # few people cannot read its cast from them (README, "Colour levelling in training and in the pipeline").
    colour_gains: tuple[float, float, float] | None = Field(
        None, description="B, G, R multipliers that take this camera's colour cast away; with a colour-levelled "
        "ReID model they replace the running estimate from its crops")

    @field_validator("colour_gains")
    @classmethod
    def _gains(cls, v):
        if v is not None and not all(0.25 <= g <= 4.0 for g in v):
            raise ValueError(f"colour_gains {list(v)}: each multiplier must lie in [0.25, 4]")
        return v

    @field_validator("id")
    @classmethod
    def _id(cls, v: str) -> str:
        if not CAMERA_ID.match(v):
            raise ValueError("camera id must be 1-64 characters of letters, digits, '_', '-', '.'")
        return v

    @field_validator("source")
    @classmethod
    def _source(cls, v: int | str) -> int | str:
        if isinstance(v, int) and not 0 <= v <= 1023:
            raise ValueError(f"a device index is 0-1023, got {v}")
        if isinstance(v, str) and URL_LIKE.match(v) and re.search(r"[\s'\"<>`]", v):
            raise ValueError("a source URL cannot hold spaces or quotes: percent-encode them (%20, %27, ...)")
        return v

    @property
    def kind(self) -> Literal["file", "stream", "device"]:
        if isinstance(self.source, int) or (isinstance(self.source, str) and self.source.isdigit()):
            return "device"
        if URL_LIKE.match(self.source):
            return "stream"
        return "file"


class MotionGateConfig(Strict):
    # Defaults from the two Intel room videos in ../shared/data/videos (a camera that jitters a little, people
    # walking in one at a time): the same tracks on the same frames with them, and 15 % / 43 % of the due
    # frames were skipped (README: Benchmarks, "Detection where something changed").
    enabled: bool = Field(True, description="skip a due frame when the camera follows no one and its picture has not "
                          "changed since the detector last looked and found no one (Frigate's motion gating); "
                          "false: every due frame is detected")
    level: float = Field(20.0, gt=0, le=255, description="a cell of the small grey copy (160-319 px wide) has changed when it "
                         "differs by more than this (0-255) from the reference")
    area: float = Field(0.001, gt=0, le=1, description="the frame has changed when this share of the cells has "
                        "(0.001 of a 768x576 frame: about 21x21 px)")
    max_skip_s: float = Field(1.0, gt=0, le=3600, description="the detector looks at least this often (video "
                              "seconds) while nothing changes: a person it missed walking in is found this late at most")


class DetectorConfig(Strict):
    backend: Literal["yolox", "ultralytics"] = "yolox"
    model: str = "yolox_nano.onnx"
    confidence: float = Field(0.1, ge=0, le=1)
    nms_iou: float = Field(0.45, gt=0, le=1)
    input_size: int | None = Field(None, ge=32, le=8192, description="network input, longer side in px; "
                                   "none: the backend's default (640: see detectors.DEFAULT_INPUT_SIZE)")
    classes: list[Annotated[int, Field(ge=0, le=10_000)]] = Field(
        [0], min_length=1, description="the detector's class ids to keep (COCO: 0 is a person)")
    every: int = Field(2, ge=1, le=30, description="detect on every n-th frame of a camera; the tracker's motion "
                       "model places the tracks on the frames between (no crops are taken there). 2 (since "
                       "2026-12-05): on PETS dev frames IDF1 78.9 / 80.7 at its two phases against 81.6 on every "
                       "frame, for half the detector's work (README: Benchmarks, capacity); 1: every frame")
    stagger: bool = Field(True, description="with every n > 1: cameras take turns over the n phases (camera k, in "
                          "the order they were added, detects the frames where (frame + k) % n == 0), so each step "
                          "detects about 1/n of them; false: every camera detects the same frames")
    min_height: float = Field(0.0, ge=0, le=100_000, description="drop boxes shorter than this (px of the frame) "
                              "before tracking, e.g. a far field nobody needs tracked; 0 keeps all")
    runtime: Literal["onnxruntime", "openvino"] = Field(
        "onnxruntime", description="what runs a YOLOX file: onnxruntime, or openvino (bfloat16 on CPUs with AMX / "
        "AVX-512 BF16 unless precision says f32; benchmarks/mot_pets.py and capacity.py measure both)")
    precision: Literal["auto", "f32", "bf16"] = Field(
        "auto", description="openvino only: auto = OpenVINO's choice for the CPU (bf16 where it has AMX), f32, bf16")
    spin_wait: bool = Field(
        False, description="onnxruntime only: its threads spin between runs (its own default, for one model in a "
        "tight loop); false: they sleep, so the ReID model and the decoders get the cores (README: capacity)")
    workers: int = Field(
        2, ge=1, le=64, description="onnxruntime only: a step's frames are run by this many threads side by side, "
        "each taking the next frame, each run on its share of the cores (on 2 cores 25-33 % less time than one run "
        "of all of them on both cores; README: capacity, 'Runs side by side'); 1: one run, all cores")
    ahead: bool = Field(
        True, description="with workers > 1: frames already waiting go to the detector's threads a step ahead, while "
        "the frame loop tracks and embeds the step before (the same boxes; README: capacity, 'Frame by frame, and "
        "detection a step ahead'); false: each step is detected, then tracked")
    motion_gate: MotionGateConfig = MotionGateConfig()


class TrackerConfig(Strict):
    type: Literal["bytetrack", "botsort"] = "bytetrack"
    params: dict[str, Any] = {}


class ReidConfig(Strict):
    backend: Literal["auto", "torch", "onnxruntime", "openvino", "tensorrt"] = "auto"
    # Intel's 0288 in INT8 (`make install` builds it from ../shared): the default since 2026-12-06, about a fifth
    # of the float 0267's time a crop on a 2-core Xeon, with the same linking on PETS (README, "A lighter default
    # ReID model"); since 2026-12-07 at a 224x112 input (`reid export --input-size`), three quarters of its
    # multiply-adds at 256x128 with the same scores (README, "0288 at 224x112"). 0267
    # (`person-reidentification-retail-0267.ort.onnx`) is the better same-clothes model on SynthCC, where people
    # keep their clothes.
    model: str = "person-reidentification-retail-0288-224x112-int8.xml"
    min_height: int = Field(64, ge=1, le=100_000, description="smallest crop height (px) worth embedding")
    min_width: int = Field(20, ge=1, le=100_000)
    # 32: on PETS09-S2L1's two-camera cut the boxes on tracks that never got an identity went from 3.9 % to 0 with
    # the same global IDF1 (75.6; README, Benchmarks).
    small_min_height: int = Field(32, ge=0, le=100_000, description="crops from this height (px) up to min_height "
                                  "are embedded at a tenth of the weight while a track has no full-size crop, so "
                                  "tracks of small (far) people still get an identity; 0: never")
    min_confidence: float = Field(0.4, ge=0, le=1)
    crops_per_second: float = Field(2.0, ge=0.001, le=1000,
                                    description="at most this many crops per track per second of video")
    # 8: PETS09-S2L1 two-camera identity IDF1 75.6 with 8 or 16, 74.2 uncapped; embedding 17.5 -> 8.0 ms per
    # camera-frame on 4 cameras (benchmarks/capacity.py, README). Long tracks keep the mean of their first 8
    # good crops; their gallery prototype is refreshed by later tracks of the same person.
    max_crops_per_track: int | None = Field(
        8, ge=1, le=1_000_000, description="a track stops taking crops once it has this many (null: no cap): more "
        "crops of one person in one outfit in one camera add little to its mean embedding and cost the most CPU after "
        "detection")
    edge_margin: int = Field(2, ge=0, le=100_000,
                             description="crops touching the frame border closer than this are truncated")
    # Trackers swap ids inside groups: one track then covers two people and gives both one identity. Tuned on
    # PETS09-S2L1 dev frames 1-400 only (README, Benchmarks: "Splitting swapped tracks").
    swap_threshold: float | None = Field(
        0.3, ge=-1, le=1, description="a track whose crops fall below this cosine with its recent crops, "
        "`swap_crops` times in a row and agreeing with one another, has started following another person: it ends "
        "there and the tracker goes on under a new id (null: never split; unset: the model file's own level when it "
        "carries one, as the default model does: 0.4)")
    swap_crops: int = Field(2, ge=1, le=100, description="suspect crops in a row that make a swap")
    swap_check_per_second: float = Field(
        1.0, ge=0, le=1000, description="crops a second a track still takes, only for the swap check, once "
        "max_crops_per_track is reached or only small crops remain, while its box is near another track's and 2 s "
        "after (0: none)")
    swap_check_while_near: bool = Field(
        True, description="swap-check crops also while the box is near another track's (false: only in the 2 s "
        "after the boxes parted, when a crop shows one person)")
    threads: int = Field(0, ge=0, le=1024, description="the ReID model's threads; 0: beside a detector running "
                         "frames side by side (detector.workers > 1), one frame's share of the cores (1 on 2 cores), "
                         "else the backend's own choice (README: capacity, 'The ReID model on its share of the cores')")
    # OpenVINO re-plans a dynamic-shape model at every change of batch size (~3.5 ms a call on 2 cores), and the
    # crops of one step make a new size nearly every call; but each copy costs 0.3-0.9 s of CPU to compile, which
    # a run pays back only after minutes: off by default (README, "A lighter default ReID model").
    fixed_batches: int = Field(0, ge=0, le=1024, description="openvino embedders only: batch sizes up to this get "
                               "their own fixed-shape copy of the model, compiled in the background once a size "
                               "has come 4 times, for long runs (0: one dynamic-shape model for every size)")
    # Each call of the ReID model has a fixed cost (~7.6 ms on a 2-core AVX2 host beside 2.2 a crop, measured in
    # the run); one call for the crops of two steps halves it (README, Benchmarks: "INT8 on CPUs without VNNI, and
    # fewer, larger ReID calls").
    embed_wait_steps: int = Field(1, ge=0, le=30, description="a step's crops may wait this many further steps of "
                                  "the frame loop for one call of the ReID model with later steps' crops (never past "
                                  "their track's end); 0: each step's crops are embedded in that step")
    spin_wait: bool = Field(False, description="onnxruntime embedders only: as detector.spin_wait")
    # A model trained on colour-levelled cameras (`reid train` with data.colour_levelling) declares its reference
    # colour; its crops must be levelled the same way, per camera, from the crops that camera has given so far.
    colour_levelling: bool = Field(True, description="level each camera's crops to the colour reference the ReID "
                                   "model declares (models that declare none are fed crops as they come)")
    colour_levelling_prior: float = Field(
        50.0, ge=0, le=1_000_000, description="a camera's mean colour starts at the model's reference with the weight "
        "of this many crops, so its first crops are barely changed")
    colour_levelling_horizon: int = Field(
        5000, ge=1, le=1_000_000_000, description="a camera's mean colour forgets its oldest crops beyond this many "
        "(light changes over a day); the means are kept in the store across runs")
    # A clothes-changing model gives up some same-clothes accuracy to link outfit changes; a same-clothes model
    # beside it says when the outfit is one already seen (README: "Two models").
    outfit_model: str | None = Field(
        None, description="a same-clothes ReID model whose feature is the outfit descriptor (instead of the model's "
        "appearance output or the colour/texture descriptor); its threshold also links a known outfit on its own")
    # The stills' evaluation scores every model on flip-summed features (reid/inference/flip.py); the pipeline's
    # thresholds must then be calibrated the same way (`reid calibrate --flip-sum`).
    flip_sum: bool = Field(False, description="embed each crop with its mirror image and sum the features (reid.model "
                           "only; twice the embedding work); calibrate its thresholds with `reid calibrate --flip-sum`")
    # A camera's own look (light, angle, cast) is part of every feature it gives; its running mean feature over
    # many people is mostly that part (reid/inference/centring.py).
    centring: Literal["none", "camera"] = Field(
        "none", description="'camera': subtract each camera's running mean identity feature from its crops' features "
        "(reid.model only); calibrate its thresholds with `reid calibrate --centre camera`")
    centring_prior: float = Field(
        50.0, ge=0, le=1_000_000, description="a camera's mean feature starts at the mean of all cameras, and that "
        "at zero, with the weight of this many crops, so the first crops are barely changed")


class TransitConfig(Strict):
    cameras: tuple[str, str] = Field(description="two camera ids (either direction)")
    min_s: float = Field(0.0, ge=0, le=365 * DAY_S, description="fastest walk between them, seconds")
    max_s: float | None = Field(None, gt=0, le=365 * DAY_S,
                                description="slowest direct walk; longer gaps need revisit_after_s")

    @model_validator(mode="after")
    def _order(self) -> "TransitConfig":
        if self.max_s is not None and self.max_s < self.min_s:
            raise ValueError(f"max_s {self.max_s} is below min_s {self.min_s}")
        return self


class TopologyConfig(Strict):
    overlapping: list[tuple[str, str]] = Field([], description="camera pairs that see the same place at once")
    transits: list[TransitConfig] = []
    default_min_transit_s: float = Field(0.0, ge=0, le=365 * DAY_S, description="min transit between cameras not listed")
    revisit_after_s: float | None = Field(600.0, gt=0, le=365 * DAY_S,
                                          description="after this gap max_s no longer applies")


class MatcherConfig(Strict):
    threshold: float = Field(0.55, ge=-1, le=1, description="cosine similarity needed to join an identity")
    min_crops: int = Field(3, ge=1, description="crops a tracklet needs before its first identity decision")
    prototype_momentum: float = Field(0.9, ge=0, lt=1)
    outfit_threshold: float = Field(0.7, ge=-1, le=1, description="descriptor cosine of a known outfit")
    merge_threshold: float | None = Field(0.8, ge=-1, le=1, description="cosine that merges two identities; null: never")
    same_outfit_threshold: float | None = Field(None, ge=-1, le=1, description="cosine a link needs when the "
                                                "tracklet wears a known outfit of that identity; null: threshold")
    outfit_link_threshold: float | None = Field(
        None, ge=-1, le=1, description="outfit-descriptor cosine to a known outfit of an identity that links a tracklet "
        "to it even below `threshold` (with reid.outfit_model: that model's same-clothes threshold when unset); "
        "null: the identity feature alone decides who")
    outfit_merge_threshold: float | None = Field(
        None, ge=-1, le=1, description="with reid.outfit_model: outfit-descriptor cosine to a known outfit of "
        "another identity that merges a tracklet's identity into it (opt-in, e.g. 0.8; merges need merge_threshold "
        "set); null: merges are decided on the identity feature alone")
    window_threshold: float | None = Field(None, ge=-1, le=1, description="cosine a link needs when the identity "
                                           "was last seen on another camera inside a transit window of `topology` "
                                           "(few people can be the one arriving); null: threshold")
    top_k: int = Field(16, ge=1, le=1000, description="prototypes per tracklet considered in the joint assignment")
    presence_ttl_s: float = Field(3.0, gt=0, le=DAY_S, description="a live sighting from another worker counts this long")
    # Redis expiry takes whole seconds; 100 years is "keep" in all but name.
    retention_s: float | None = Field(None, ge=1, le=36_500 * DAY_S,
                                      description="forget identities not seen for this long; null: keep")
    gallery_log_maxlen: int = Field(100_000, ge=1000, le=100_000_000, description="bound of the gallery change log")
    index: Literal["exact", "usearch"] = Field("exact", description="candidate search: numpy over all "
                                                "prototypes, or an HNSW index (usearch) from ann_min_rows on")
    ann_min_rows: int = Field(50_000, ge=1, le=10**9, description="gallery size from which the usearch index is used")
    topology: TopologyConfig | None = None
    clock: Literal["auto", "wall", "video"] = Field(
        "auto", description="what transit and presence times are read on: the wall clock, or each frame's "
        "position in its file (video); auto: video when every camera is a file replayed at decoding speed")


class EventsConfig(Strict):
    stream: str = Field("pipeline:events", min_length=1, max_length=512)
    # Also the number of events held in memory during a store outage: 10 million is a few GB.
    maxlen: int = Field(100_000, ge=100, le=10_000_000,
                        description="stream length kept, and events buffered while the store is down")
    drain_timeout_s: float = Field(10.0, ge=0, le=DAY_S, description="at the end of a run, wait this long for an "
                                   "unreachable store before writing undelivered events to a file")


class OutputConfig(Strict):
    dir: str | None = None  # default: runs/<config file stem>
    # A live camera's annotated video would be one MP4 growing for as long as the service runs (days: the disk),
    # readable only once the run ends (its index is written last): by default files get one, live cameras none.
    video: Union[bool, Literal["auto"]] = Field(
        "auto", description="annotated video per camera (<camera id>.mp4): auto: for file cameras only; true: for "
        "every camera, live ones included (one file for the whole run); false: none")
    snapshots: bool = Field(True, description="keep the best crop (JPEG) per identity outfit in the store, "
                            "for the dashboard's gallery")

    @field_validator("video", mode="before")
    @classmethod
    def _video(cls, v):
        if isinstance(v, bool) or v == "auto":
            return v
        raise ValueError(f"must be auto, true or false, got {v!r}")


def writes_video(output: OutputConfig, camera: CameraConfig) -> bool:
    """Whether `camera` gets an annotated video (`output.video`: auto is file cameras only)."""
    return camera.kind == "file" if output.video == "auto" else bool(output.video)


class MetricsConfig(Strict):
    port: int | None = Field(None, ge=0, le=65535, description="serve Prometheus metrics on this port; none: off")
    host: str = Field("127.0.0.1", min_length=1)


class DashboardConfig(Strict):
    """The operator's web dashboard (cameras, identity gallery, event feed), served by the running pipeline."""

    port: int | None = Field(None, ge=0, le=65535, description="serve the dashboard on this port; none: off")
    host: str = Field("127.0.0.1", min_length=1, description="bound to localhost unless set otherwise")
    frame_fps: float = Field(2.0, gt=0, le=30, description="live frames JPEG-encoded per camera per second")
    frame_width: int = Field(960, ge=64, le=8192, description="live frames are scaled down to this width")


class PipelineConfig(Strict):
    cameras: list[CameraConfig] = Field(min_length=1)
    store: str = "embedded"
    key_prefix: str = Field("pipeline", min_length=1, max_length=256)
    detector: DetectorConfig = DetectorConfig()
    tracker: TrackerConfig = TrackerConfig()
    reid: ReidConfig = ReidConfig()
    matcher: MatcherConfig = MatcherConfig()
    events: EventsConfig = EventsConfig()
    output: OutputConfig = OutputConfig()
    metrics: MetricsConfig = MetricsConfig()
    dashboard: DashboardConfig = DashboardConfig()

    @field_validator("store")
    @classmethod
    def _store(cls, v: str) -> str:
        problem = store_url_problem(v)
        if problem:
            raise ValueError(problem)
        return v

    @model_validator(mode="after")
    def _unique_ids(self) -> "PipelineConfig":
        seen: set[str] = set()
        for i, cam in enumerate(self.cameras):
            if cam.id in seen:
                raise ValueError(f"cameras[{i}].id {cam.id!r} is used twice; camera ids must be unique")
            seen.add(cam.id)
        return self


def store_url_problem(url: str) -> str | None:
    """Why `url` cannot be a store (None when it can): the checks `redis.Redis.from_url` would fail on at
    run time, made here so `validate` and `run` refuse it alike (messages redacted by ConfigError)."""
    if url == "embedded":
        return None
    from urllib.parse import urlsplit

    usage = "store must be 'embedded' or a URL like redis://host:6379/0, rediss://… or unix:///path"
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        return f"{usage}: {exc}"
    if parts.scheme not in ("redis", "rediss", "unix"):
        return usage
    if parts.scheme == "unix":
        return None if parts.path else f"{usage}: unix:// needs a socket path"
    if not parts.hostname:
        return f"{usage}: no host"
    if port is not None and not 1 <= port <= 65535:
        return f"{usage}: port {port} is not 1-65535"
    if parts.path not in ("", "/") and not re.fullmatch(r"/\d+", parts.path):
        return f"{usage}: the path must be a database number (/0), got {parts.path!r}"
    from redis.connection import parse_url

    try:
        parse_url(url)
    except ValueError as exc:
        return f"{usage}: {exc}"
    return None


def _key_path(loc: tuple) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        elif part in ("int", "str") or str(part).startswith(("function-", "literal[")):
            continue  # pydantic's union-branch labels are noise to a user
        else:
            out += ("." if out else "") + str(part)
    return out


def parse_config(raw: Any, file: str | Path = "<config>", base_dir: Path | None = None) -> PipelineConfig:
    if not isinstance(raw, dict):
        raise ConfigError(file, "", f"expected a mapping with a 'cameras' list, got {type(raw).__name__}")
    try:
        config = PipelineConfig.model_validate(raw)
    except ValidationError as exc:
        err = exc.errors()[0]
        msg = err["msg"].removeprefix("Value error, ")
        if err["type"] == "extra_forbidden":
            msg = "unknown key (check its spelling; see README 'Configuration')"
        if err["type"] == "missing":
            msg = "required key is missing"
        raise ConfigError(file, _key_path(tuple(err["loc"])), msg) from None
    base = base_dir or Path.cwd()
    cameras = []
    for i, cam in enumerate(config.cameras):
        if cam.kind == "file":
            path = Path(str(cam.source)).expanduser()
            path = path if path.is_absolute() else (base / path)
            if not path.is_file():
                raise ConfigError(file, f"cameras[{i}].source", f"video file not found: {path}")
            cam = cam.model_copy(update={"source": str(path.resolve())})
        cameras.append(cam)
    # Model files resolve like camera sources: a relative path that exists beside the YAML is that file;
    # otherwise the name is searched where pipeline.models looks (./models, $PIPELINE_MODELS, ../shared/models).
    models = {}
    for section, key in (("detector", "model"), ("reid", "model"), ("reid", "outfit_model")):
        sect = models.get(section, getattr(config, section))
        if getattr(sect, key) is None:
            continue
        given = Path(getattr(sect, key)).expanduser()
        if base_dir is not None and not given.is_absolute() and (base / given).is_file():
            models[section] = sect.model_copy(update={key: str((base / given).resolve())})
    return config.model_copy(update={"cameras": cameras, **models})


def load_config(path: str | Path) -> PipelineConfig:
    """Read and validate a config file (UTF-8 YAML); relative video paths are relative to the config file."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(path, "", "config file not found" if not path.exists() else "not a file")
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise ConfigError(path, "", f"cannot read it: {exc.strerror or exc}") from None
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        raise ConfigError(path, f"line {line}", f"not UTF-8 text (byte 0x{data[exc.start]:02x} at offset "
                                                 f"{exc.start}): save the file as UTF-8") from None
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        raise ConfigError(path, where, f"not valid YAML: {getattr(exc, 'problem', exc)}") from None
    return parse_config(raw, path, path.parent.resolve())


def output_dir_for(config: PipelineConfig, config_path: str | Path, override: str | Path | None = None) -> Path:
    if override:
        return Path(override)
    if config.output.dir:
        out = Path(config.output.dir)
        return out if out.is_absolute() else Path(config_path).parent / out
    return Path("runs") / Path(config_path).stem
