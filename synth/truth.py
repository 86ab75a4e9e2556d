"""Ground truth of a SynthCC scene against what a pipeline run made of it: which person and outfit each local
track followed, whether an `identity.outfit_changed` event was right, and what kind each identity decision was.
Used by the MTMC benchmark and the end-to-end clothes-change test, so both score a run the same way."""

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


DECISION_KINDS = ("new person", "missed: same outfit", "missed: other outfit", "right: same outfit",
                  "right: other outfit", "wrong: first sighting", "wrong: known person", "merge right", "merge wrong")


def decision_kinds(events: list[dict], people: dict) -> Counter:
    """Each identity decision of a run, in event order, judged against the truth it had then: where the
    identities a run gets wrong come from (a link through an outfit change not made, a stranger joined...).

    A track's first decision (`identity.created` / `identity.assigned`; later ones are re-decisions) on a
    person (`track_people`):
    * created: "new person" when no earlier track of the person holds an identity, else a missed link, "same
      outfit" when an earlier track of the person wore this outfit, "other outfit" when none did;
    * assigned: right when most tracks of the identity so far are this person ("same outfit" when one of them
      is the person in this outfit, "other outfit": linked through a change), else wrong ("first sighting"
      when the person had no identity yet: a stranger joined; "known person": the person's own identity lost).
    `identity.merged` (merged_from into identity_id) joins the two identities' tracks from then on: "merge
    right" when both had the same person most often."""
    alias: dict[int, int] = {}

    def resolve(ident: int) -> int:
        while ident in alias:
            ident = alias[ident]
        return ident

    members: dict[int, list[tuple[int, str]]] = {}  # identity -> (person, outfit) of its decided tracks
    held: dict[int, list[str]] = {}  # person -> outfits of their decided tracks
    decided: set[tuple[str, int]] = set()
    out: Counter = Counter({k: 0 for k in DECISION_KINDS})

    def majority(ident: int) -> int | None:
        got = Counter(p for p, _ in members.get(ident, [])).most_common(1)
        return got[0][0] if got else None

    for e in events:
        if e["type"] == "identity.merged" and e.get("merged_from") is not None:
            into, gone = resolve(e["identity_id"]), resolve(e["merged_from"])
            if into == gone:
                continue
            a, b = majority(into), majority(gone)
            out["merge right" if a is not None and a == b else "merge wrong"] += 1
            alias[gone] = into
            members.setdefault(into, []).extend(members.pop(gone, []))
            continue
        key = (e.get("camera_id"), e.get("track_id"))
        if e["type"] not in ("identity.created", "identity.assigned") or key in decided or key not in people:
            continue
        decided.add(key)
        person, outfit = people[key]
        ident = resolve(e["identity_id"])
        before = held.get(person, [])
        if e["type"] == "identity.created":
            out["new person" if not before else
                "missed: same outfit" if outfit in before else "missed: other outfit"] += 1
        elif majority(ident) == person:
            out["right: same outfit" if (person, outfit) in members[ident] else "right: other outfit"] += 1
        else:
            out["wrong: known person" if before else "wrong: first sighting"] += 1
        members.setdefault(ident, []).append((person, outfit))
        held.setdefault(person, []).append(outfit)
    return out
