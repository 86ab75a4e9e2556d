"""Cross-camera identity on real video, one row per config: PETS09-S2L1 dev frames 1-200 and 201-400 played as
two cameras by two `pipeline run` processes on one private redis-server (the harness of
tests/test_identity_pets.py, whose functions this script calls), scored with TrackEval (MOT15 protocol) against
gt_dev.txt. Nothing here reads the held-back frames 401-795.

    .venv/bin/python benchmarks/identity_pets.py [--rows default,openvino,crops-4] [--list]

Prints per row: global IDF1 (identities as ids over the 400 frames), IDF1 of each camera on its own frames and
track ids ("per camera": what linking must not lose), the same tracks without identities ("tracks only"), the
people seen in both halves that camera b linked to camera a's identity, and the boxes on tracks that never got an
identity.
"""

from __future__ import annotations

import argparse
import platform
import sys
import tempfile
from collections import Counter
from datetime import date
from pathlib import Path

import numpy as np
import yaml

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from pipeline.redis_server import RedisServer, free_port  # noqa: E402
from pipeline.store import IdentityStore  # noqa: E402
from tests.test_identity_pets import (HALF, _write_half, global_idf1, per_camera_idf1, run_two_halves,  # noqa: E402
                                      track_people)

DATA = ROOT.parent / "shared" / "data" / "pets09-s2l1"
ROWS = {  # name -> (what, config sections merged into each camera's config)
    "default": ("pipeline defaults", {}),
    "openvino": ("YOLOX in OpenVINO, the CPU's default precision (bf16 with AMX)", {"detector": {"runtime": "openvino"}}),
    "crops-4": ("reid.max_crops_per_track 4", {"reid": {"max_crops_per_track": 4}}),
    "openvino-crops-4": ("both", {"detector": {"runtime": "openvino"}, "reid": {"max_crops_per_track": 4}}),
}


def score(work: Path, halves: dict[str, Path], extra: dict) -> dict:
    server = RedisServer(work / "redis", port=free_port(), persist=False).start()
    try:
        run_two_halves(work, halves, server.url, yaml.safe_dump(extra) if extra else "")
        store = IdentityStore(server.client())
        events = [e for _, e in store.read_events()]
        final = {(e["camera_id"], e["track_id"]): store.resolve(e["identity_id"])
                 for e in events if e["type"] == "track.ended" and e["identity_id"] is not None}
        created_by = {store.resolve(e["identity_id"]): (e["camera_id"], e["track_id"])
                      for e in events if e["type"] == "identity.created"}
        assigned_b = [(e["track_id"], store.resolve(e["identity_id"])) for e in events
                      if e["type"] == "identity.assigned" and e["camera_id"] == "pets-b"]
    finally:
        server.stop()
    gt_file = DATA / "gt" / "gt_dev.txt"
    gt = np.loadtxt(gt_file, delimiter=",", ndmin=2)
    mot_dir = work / "mot"
    mots = {cam: np.loadtxt(mot_dir / f"{cam}.txt", delimiter=",", ndmin=2) for cam in ("pets-a", "pets-b")}
    person = {cam: track_people(mots[cam], gt, offset) for offset, cam in ((0, "pets-a"), (HALF, "pets-b"))}
    both = {int(i) for i in gt[gt[:, 0] <= HALF, 1]} & {int(i) for i in gt[gt[:, 0] > HALF, 1]}
    linked = set()
    for track_id, identity in assigned_b:
        origin = created_by.get(identity)
        if origin and origin[0] == "pets-a" and person["pets-a"].get(origin[1]) is not None \
                and person["pets-a"][origin[1]] == person["pets-b"].get(track_id):
            linked.add(person["pets-b"][track_id])
    boxes = Counter((cam, int(r[1])) for cam, m in mots.items() for r in m)
    unidentified = sum(n for key, n in boxes.items() if key not in final) / max(1, sum(boxes.values()))
    return {"global": global_idf1(gt_file, mot_dir, final, work / "eval"),
            "per_camera": per_camera_idf1(gt_file, mot_dir, work / "eval-per-camera"),
            "tracks_only": global_idf1(gt_file, mot_dir, {}, work / "eval-tracks-only"),
            "linked": f"{len(linked)} of {len(both)}", "unidentified": 100 * unidentified}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rows", default=",".join(ROWS))
    ap.add_argument("--list", action="store_true")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                    help="an extra row 'set:KEY=VALUE' with that config key (dotted path, YAML value); repeatable")
    args = ap.parse_args()
    for item in args.set:
        key, _, value = item.partition("=")
        if not key or not value:
            raise SystemExit(f"--set {item!r}: expected KEY=VALUE, e.g. matcher.threshold=0.65")
        extra: dict = {}
        node = extra
        *path, last = key.split(".")
        for part in path:
            node = node.setdefault(part, {})
        node[last] = yaml.safe_load(value)
        ROWS[f"set:{item}"] = (f"`{key}: {value}`", extra)
        args.rows += f",set:{item}"
    if args.list:
        for name, (what, extra) in ROWS.items():
            print(f"{name}: {what} {extra}")
        return
    names = args.rows.split(",")
    unknown = [n for n in names if n not in ROWS]
    if unknown:
        raise SystemExit(f"unknown rows {unknown}; choose from {list(ROWS)}")
    with tempfile.TemporaryDirectory(prefix="identity_pets_") as tmp:
        root = Path(tmp)
        halves = {"pets-a": root / "a.avi", "pets-b": root / "b.avi"}
        _write_half(DATA / "vtest.avi", 0, HALF, halves["pets-a"])
        _write_half(DATA / "vtest.avi", HALF, HALF, halves["pets-b"])
        results = {}
        for name in names:
            work = root / name
            work.mkdir()
            results[name] = score(work, halves, ROWS[name][1])
            print(name, results[name], flush=True)
    print(f"\n`python benchmarks/identity_pets.py --rows {args.rows}` ({platform.machine()}, "
          f"{len(__import__('os').sched_getaffinity(0))} CPUs, {date.today()})")
    print("| row | what | global IDF1 | per-camera IDF1 | tracks only | people of both halves linked | boxes without identity % |")
    print("|---|---|---|---|---|---|---|")
    for name, r in results.items():
        print(f"| {name} | {ROWS[name][0]} | {r['global']:.1f} | {r['per_camera']:.1f} | {r['tracks_only']:.1f} | "
              f"{r['linked']} | {r['unidentified']:.1f} |")


if __name__ == "__main__":
    main()
