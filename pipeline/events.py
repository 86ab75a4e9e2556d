"""Identity events (contract, schema 1): one JSON object per event on a Redis Stream."""

from __future__ import annotations

import json
import uuid
from dataclasses import asdict, dataclass, field, fields
from datetime import datetime, timezone

SCHEMA_VERSION = 1
EVENT_TYPES = (
    "track.started",
    "identity.assigned",
    "identity.created",
    "identity.outfit_changed",
    "identity.merged",
    "track.ended",
    "camera.state",
    "store.reset",
)


def utc_now_iso() -> str:
    return iso_utc(datetime.now(timezone.utc).timestamp())


def iso_utc(unix_seconds: float) -> str:
    """UTC ISO-8601 with milliseconds and a Z suffix."""
    dt = datetime.fromtimestamp(unix_seconds, timezone.utc)
    return dt.strftime("%Y-%m-%dT%H:%M:%S.") + f"{dt.microsecond // 1000:03d}Z"


@dataclass
class IdentityEvent:
    type: str
    camera_id: str | None = None
    track_id: int | None = None
    tracklet_id: str | None = None
    identity_id: int | None = None
    similarity: float | None = None
    bbox: list[float] | None = None  # [x1, y1, x2, y2] pixels in the camera frame
    frame_index: int | None = None  # 0-based decoded frame index in the camera's source
    outfit_id: int | None = None
    outfit_changed: bool = False
    state: str | None = None  # camera.state only: connecting | streaming | stalled | reconnecting | failed | ended
    detail: str | None = None  # camera.state: reason; identity.merged: what was merged; store.reset: what was lost
    ts: str = field(default_factory=utc_now_iso)
    event_id: str = field(default_factory=lambda: uuid.uuid4().hex)
    schema: int = SCHEMA_VERSION
    # Added within schema 1 (optional, null when not applicable; readers ignore fields they do not know):
    merged_from: int | None = None  # identity.merged: the identity merged into `identity_id`
    video_time_s: float | None = None  # position of `frame_index` in the source, seconds (files: from its frame
    # rate; live sources: since the camera's first frame); null for events without a frame

    def __post_init__(self) -> None:
        if self.type not in EVENT_TYPES:
            raise ValueError(f"unknown event type {self.type!r}; expected one of {EVENT_TYPES}")

    def to_json(self) -> str:
        return json.dumps(asdict(self), separators=(",", ":"))

    @classmethod
    def from_json(cls, text: str | bytes) -> "IdentityEvent":
        raw = json.loads(text)
        if raw.get("schema") != SCHEMA_VERSION:
            raise ValueError(f"event schema {raw.get('schema')!r} is not {SCHEMA_VERSION}")
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in raw.items() if k in known})  # fields added later are optional
