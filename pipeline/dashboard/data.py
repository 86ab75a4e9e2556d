"""What the dashboard's JSON API answers, read from the identity store (and, in a running pipeline, from
its cameras in memory). No store URL, password or source URL ever reaches a page: cameras are named by id."""

from __future__ import annotations

import json
from pipeline.dashboard.snapshots import snap_key, snapmeta_key
from pipeline.events import iso_utc
from pipeline.store import IdentityStore, merged_from_map

RECENT_EVENTS_SCAN = 5000  # events read back to find each camera's last state (read-only dashboard)


def _iso(t: float | None) -> str | None:
    return None if t is None else iso_utc(float(t))


class StoreView:
    """Reads for the API: identities with their snapshots, events with filters, camera states."""

    def __init__(self, client, prefix: str = "pipeline", stream: str = "pipeline:events") -> None:
        self.r = client
        self.p = prefix
        self.stream = stream
        self.store = IdentityStore(client, prefix, stream)

    # -- identities ---------------------------------------------------------------------------------
    def identities(self) -> dict:
        records = self.store.identities(include_merged=True)
        merged_from = merged_from_map(records)
        with self.r.pipeline(transaction=False) as pipe:
            for rec in records:
                pipe.hgetall(snapmeta_key(self.p, rec.identity_id))
            metas = pipe.execute() if records else []
        rows = []
        for rec, meta in zip(records, metas):
            outfits = []
            for outfit, raw in sorted(meta.items(), key=lambda kv: int(kv[0])):
                m = json.loads(raw)
                o = int(outfit)
                outfits.append({
                    "outfit_id": o,
                    "snapshot_url": f"/api/identities/{rec.identity_id}/outfits/{o}/snapshot.jpg",
                    "snapshot_camera": m.get("camera_id"), "snapshot_at": _iso(m.get("ts")),
                    "snapshot_video_time_s": m.get("video_time_s"),
                    "first_seen": _iso(m.get("first_seen")), "last_seen": _iso(m.get("last_seen")),
                    "cameras": sorted(m.get("cameras") or []),
                })
            outfits.sort(key=lambda o: o["first_seen"] or "")
            rows.append({
                "identity_id": rec.identity_id, "first_seen": iso_utc(rec.created), "last_seen": iso_utc(rec.last_seen),
                "cameras": rec.cameras, "last_camera": rec.last_camera, "sightings": rec.sightings,
                "outfits_count": rec.own_outfits, "outfits": outfits, "merged_into": rec.merged_into,
                "merged_from": sorted(merged_from.get(rec.identity_id, [])),
                "status": "merged" if rec.merged_into is not None else "active",
            })
        # one count (as the run summary and `identities`): active identities; merged ones listed after them
        active = sorted((r for r in rows if r["status"] == "active"), key=lambda r: r["last_seen"], reverse=True)
        merged = sorted((r for r in rows if r["status"] == "merged"), key=lambda r: r["last_seen"], reverse=True)
        return {"count": len(active), "merged": len(merged), "identities": active + merged}

    def snapshot(self, identity_id: int, outfit_id: int) -> bytes | None:
        return self.r.hget(snap_key(self.p, identity_id), str(outfit_id))

    # -- events -------------------------------------------------------------------------------------
    def events(self, limit: int = 100, before: str | None = None, **filters) -> list[dict]:
        """Newest first, at most `limit` matching events among the newest `limit * 20` read."""
        out: list[dict] = []
        end = f"({before}" if before else "+"
        scanned = 0
        while len(out) < limit and scanned < max(limit * 20, 2000):
            batch = self.r.xrevrange(self.stream, max=end, min="-", count=500)
            if not batch:
                break
            for sid, fields in batch:
                scanned += 1
                ev = _event(sid, fields)
                if ev is not None and matches(ev, **filters):
                    out.append(ev)
                    if len(out) >= limit:
                        break
            end = "(" + batch[-1][0].decode()
        return out

    def events_after(self, after: str, count: int = 500) -> list[dict]:
        """Events after stream id `after` (oldest first)."""
        batch = self.r.xrange(self.stream, min=f"({after}" if after not in ("0", "0-0") else "-", count=count)
        return [ev for ev in (_event(sid, f) for sid, f in batch) if ev is not None]

    def last_event_id(self) -> str:
        last = self.r.xrevrange(self.stream, count=1)
        return last[0][0].decode() if last else "0-0"

    # -- cameras (from the store: a run's published state, else the last camera.state events) --------
    def frame(self, camera_id: str) -> bytes | None:
        return self.r.get(f"{self.p}:frame:{camera_id}")

    def cameras(self) -> list[dict]:
        cams: dict[str, dict] = {}
        for sid, fields in self.r.xrevrange(self.stream, count=RECENT_EVENTS_SCAN):
            ev = _event(sid, fields)
            if ev and ev.get("type") == "camera.state" and ev.get("camera_id") and ev["camera_id"] not in cams:
                cams[ev["camera_id"]] = {"camera_id": ev["camera_id"], "state": ev.get("state"),
                                         "detail": ev.get("detail"), "since": ev.get("ts"), "fps": None,
                                         "frames": None, "reconnects": None, "frame_url": None}
        live = [k for k in self.r.scan_iter(match=f"{self.p}:camera:*", count=1000)]
        if live:
            for key, raw in zip(live, self.r.mget(live)):
                if raw is None:
                    continue
                info = json.loads(raw)
                cams[info["camera_id"]] = {**cams.get(info["camera_id"], {}), **info,
                                           "frame_url": f"/api/cameras/{info['camera_id']}/frame.jpg"}
        return sorted(cams.values(), key=lambda c: c["camera_id"])


def _event(sid: bytes, fields: dict) -> dict | None:
    raw = fields.get(b"json")
    if raw is None:
        return None
    try:
        ev = json.loads(raw)
    except ValueError:
        return None
    if not isinstance(ev, dict):
        return None
    ev["stream_id"] = sid.decode() if isinstance(sid, bytes) else str(sid)
    return ev


def matches(ev: dict, camera: str | None = None, identity: int | None = None,
            type: str | None = None) -> bool:  # noqa: A002 (the API's parameter name)
    if camera and ev.get("camera_id") != camera:
        return False
    if identity is not None and identity not in (ev.get("identity_id"), ev.get("merged_from")):
        return False
    if type and not (ev.get("type") == type or (type.endswith(".") and str(ev.get("type", "")).startswith(type))):
        return False
    return True

