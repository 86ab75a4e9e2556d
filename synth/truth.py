"""Ground truth of a SynthCC scene against what a pipeline run made of it: which person and outfit each local
track followed, and whether an `identity.outfit_changed` event was right. Used by the MTMC benchmark and the
end-to-end clothes-change test, so both score a run the same way."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import numpy as np


def track_people(scene: Path, mot_dir: Path) -> dict[tuple[str, int], tuple[int, str]]:
    """(camera, local track id) -> (global person id, outfit uid) of the ground-truth box its boxes overlap
    most (IoU >= 0.5, majority over its boxes); tracks on nobody are left out."""
    sightings = json.loads((scene / "sightings.json").read_text())["sightings"]
    out = {}
    for mot in sorted(mot_dir.glob("*.txt")):
        cam = mot.stem
        rows = np.loadtxt(mot, delimiter=",", ndmin=2) if mot.stat().st_size else np.zeros((0, 10))
        gt = np.loadtxt(scene / "gt" / f"{cam}.txt", delimiter=",", ndmin=2)
        hits: dict[int, list[tuple[int, int]]] = {}  # track -> (person, frame) of each matched box
        for r in rows:
            g = gt[gt[:, 0] == r[0]]
            if not len(g):
                continue
            w = np.clip(np.minimum(r[2] + r[4], g[:, 2] + g[:, 4]) - np.maximum(r[2], g[:, 2]), 0, None)
            h = np.clip(np.minimum(r[3] + r[5], g[:, 3] + g[:, 5]) - np.maximum(r[3], g[:, 3]), 0, None)
            iou = w * h / (r[4] * r[5] + g[:, 4] * g[:, 5] - w * h)
            if iou.max() >= 0.5:
                hits.setdefault(int(r[1]), []).append((int(g[iou.argmax(), 1]), int(r[0])))
        for tid, pf in hits.items():
            person = Counter(p for p, _ in pf).most_common(1)[0][0]
            mid = int(np.median([f for p, f in pf if p == person]))
            outfit = next((x["outfit_uid"] for x in sightings if x["camera"] == cam and x["global_id"] == person
                           and x["first_frame"] <= mid <= x["last_frame"]), None)
            out[(cam, tid)] = (person, outfit)
    return out


def outfit_event_check(events: list[dict], final: dict, people: dict) -> tuple[int, int]:
    """(identity.outfit_changed events, correct ones). An event is correct when its track's person is the
    person of an earlier track of the same (final) identity, in another outfit: the matcher linked one person
    through a clothing change and said so. "Earlier" is a track that received its identity before the event,
    whether or not it has ended: a person's track in one camera may still be held as lost by its tracker while
    they already walk through the next one."""
    seen: dict[int, list[tuple[int, str]]] = {}  # identity -> (person, outfit) of its decided tracks so far
    decided: set[tuple[str, int]] = set()
    total = correct = 0
    for e in events:
        key = (e["camera_id"], e["track_id"])
        if e["type"] == "identity.outfit_changed":
            total += 1
            ident, truth = final.get(key), people.get(key)
            if ident is not None and truth is not None:
                correct += any(p == truth[0] and o != truth[1] for p, o in seen.get(ident, []))
        elif e["type"] in ("identity.created", "identity.assigned") and key not in decided \
                and key in final and key in people:
            decided.add(key)
            seen.setdefault(final[key], []).append(people[key])
    return total, correct
