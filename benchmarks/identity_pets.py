"""Cross-camera identity on real video, one row per config: PETS09-S2L1 dev frames 1-200 and 201-400 played as
two cameras by two `pipeline run` processes on one private redis-server (the harness of
tests/test_identity_pets.py, whose functions this script calls), scored with TrackEval (MOT15 protocol) against
gt_dev.txt. Nothing here reads the held-back frames 401-795.

    .venv/bin/python benchmarks/identity_pets.py [--rows default,openvino,crops-4] [--list]
        [--set KEY=VALUE ...] [--row NAME:KEY=VALUE,KEY=VALUE ...]

Prints per row: global IDF1 (identities as ids over the 400 frames), IDF1 of each camera on its own frames and
track ids ("per camera": what linking must not lose), the same tracks without identities ("tracks only"), the
people seen in both halves that camera b linked to camera a's identity, and the boxes on tracks that never got an
identity; the tracks that cover more than one person; and the same scores with the ground truth's re-entries as
one person (REENTRIES in tests/test_identity_pets.py: MOT gives a person who leaves and comes back a new id;
`--sheet FILE` draws every dev-frame person so the pairs can be checked).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from collections import Counter
from datetime import date
from pathlib import Path

import cv2
import numpy as np
import yaml

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from machine import describe as describe_machine  # noqa: E402
from pipeline.redis_server import RedisServer, free_port  # noqa: E402
from pipeline.store import IdentityStore  # noqa: E402
from tests.test_identity_pets import (HALF, REENTRIES, _write_half, global_idf1, linked_people,  # noqa: E402
                                      per_camera_idf1, reentry_gt, run_two_halves, track_coverage)

DATA = ROOT.parent / "shared" / "data" / "pets09-s2l1"
ROWS = {  # name -> (what, config sections merged into each camera's config)
    "default": ("pipeline defaults", {}),
    "every-1": ("detector.every 1 (every frame; the default stride is 2)", {"detector": {"every": 1}}),
    "openvino": ("YOLOX in OpenVINO, the CPU's default precision (bf16 with AMX)", {"detector": {"runtime": "openvino"}}),
    "crops-4": ("reid.max_crops_per_track 4", {"reid": {"max_crops_per_track": 4}}),
    "openvino-crops-4": ("both", {"detector": {"runtime": "openvino"}, "reid": {"max_crops_per_track": 4}}),
    # `make reid-int8` builds the file (the default ReID model quantised to INT8 for CPUs)
    "reid-int8": ("0267 in INT8 (OpenVINO; `make reid-int8`)", {"reid": {"model": "person-reidentification-retail-0267-int8.xml"}}),
    # The default until 2026-12-06 (float 0267), and the default's float source (0288 as published; its swap-check
    # level comes from its entry in the runtime's table of known files, as the INT8 file's from its runtime info)
    "reid-0267": ("reid.model 0267 (float ONNX; the default until 2026-12-06)",
                  {"reid": {"model": "person-reidentification-retail-0267.ort.onnx"}}),
    "reid-0288-float": ("reid.model 0288 as published (float IR)",
                        {"reid": {"model": "person-reidentification-retail-0288.xml"}}),
    "every-2": ("detector.every 2", {"detector": {"every": 2}}),
    "every-2-reid-int8": ("detector.every 2, 0267 in INT8", {"detector": {"every": 2},
                          "reid": {"model": "person-reidentification-retail-0267-int8.xml"}}),
    # the low-score association with plain IoU (the library's; the default grows the boxes by 0.3)
    "low-buffer-0": ("tracker.params.low_score_iou_buffer 0", {"tracker": {"params": {"low_score_iou_buffer": 0}}}),
    "every-2-low-buffer-0": ("detector.every 2, low_score_iou_buffer 0",
                             {"detector": {"every": 2}, "tracker": {"params": {"low_score_iou_buffer": 0}}}),
}


def score(work: Path, halves: dict[str, Path], extra: dict) -> dict:
    server = RedisServer(work / "redis", port=free_port(), persist=False).start()
    try:
        run_two_halves(work, halves, server.url, yaml.safe_dump(extra) if extra else "")
        store = IdentityStore(server.client())
        events = [e for _, e in store.read_events()]
        resolved = {e["identity_id"]: store.resolve(e["identity_id"]) for e in events if e["identity_id"] is not None}
    finally:
        server.stop()
    final = {(e["camera_id"], e["track_id"]): resolved[e["identity_id"]]
             for e in events if e["type"] == "track.ended" and e["identity_id"] is not None}
    gt_file = DATA / "gt" / "gt_dev.txt"
    gt_one = reentry_gt(gt_file, work / "gt_reentries.txt")
    mot_dir = work / "mot"
    gt_one_rows = np.loadtxt(gt_one, delimiter=",", ndmin=2)
    linked, both = linked_people(events, resolved.__getitem__, np.loadtxt(gt_file, delimiter=",", ndmin=2), mot_dir)
    linked_one, both_one = linked_people(events, resolved.__getitem__, gt_one_rows, mot_dir)
    mots = {cam: np.loadtxt(mot_dir / f"{cam}.txt", delimiter=",", ndmin=2) for cam in ("pets-a", "pets-b")}
    boxes = Counter((cam, int(r[1])) for cam, m in mots.items() for r in m)
    unidentified = sum(n for key, n in boxes.items() if key not in final) / max(1, sum(boxes.values()))
    mixed = {cam: {t: dict(c) for t, c in track_coverage(mots[cam], gt_one_rows, offset).items() if len(c) > 1}
             for offset, cam in ((0, "pets-a"), (HALF, "pets-b"))}
    return {"global": global_idf1(gt_file, mot_dir, final, work / "eval"),
            "mixed": mixed, "tracks": {cam: len(np.unique(m[:, 1])) for cam, m in mots.items()},
            "per_camera": per_camera_idf1(gt_file, mot_dir, work / "eval-per-camera"),
            "tracks_only": global_idf1(gt_file, mot_dir, {}, work / "eval-tracks-only"),
            "linked": f"{len(linked)} of {len(both)}", "unidentified": 100 * unidentified,
            "global_one": global_idf1(gt_one, mot_dir, final, work / "eval-reentries"),
            "per_camera_one": per_camera_idf1(gt_one, mot_dir, work / "eval-per-camera-reentries"),
            "linked_one": f"{len(linked_one)} of {len(both_one)}"}


def contact_sheet(out: Path, tiles: int = 6) -> None:
    """Every person of the dev ground truth (frames 1-400), `tiles` crops each spread over their frames, one row per
    gt id: the evidence for REENTRIES, for anyone to check."""
    gt = np.loadtxt(DATA / "gt" / "gt_dev.txt", delimiter=",", ndmin=2)
    cap = cv2.VideoCapture(str(DATA / "vtest.avi"))
    frames = {}
    for index in range(1, int(gt[:, 0].max()) + 1):
        ok, frame = cap.read()
        if not ok:
            raise SystemExit(f"{DATA / 'vtest.avi'} ended at frame {index}")
        frames[index] = frame
    cap.release()
    rows = []
    for pid in sorted(set(gt[:, 1].astype(int))):
        mine = gt[gt[:, 1] == pid]
        row = []
        for r in mine[np.linspace(0, len(mine) - 1, tiles).astype(int)]:
            x, y, w, h = r[2:6].astype(int)
            crop = cv2.resize(frames[int(r[0])][max(0, y):y + h, max(0, x):x + w], (64, 144))
            cv2.putText(crop, f"f{int(r[0])}", (2, 12), cv2.FONT_HERSHEY_SIMPLEX, 0.4, (0, 255, 255), 1)
            row.append(crop)
        strip = np.hstack(row)
        same = f" = gt {REENTRIES[pid]}" if pid in REENTRIES else ""
        cv2.putText(strip, f"gt {pid}{same}", (2, 138), cv2.FONT_HERSHEY_SIMPLEX, 0.45, (0, 0, 255), 1)
        rows.append(strip)
    out.parent.mkdir(parents=True, exist_ok=True)
    if not cv2.imwrite(str(out), np.vstack(rows)):
        raise SystemExit(f"could not write {out}")
    print(f"wrote {out}: {len(rows)} people of gt_dev.txt, {tiles} crops each")


def _settings_row(items: list[str], option: str) -> tuple[str, dict]:
    """(what, config sections) of a row made of KEY=VALUE items (dotted keys, YAML values)."""
    extra: dict = {}
    for item in items:
        key, _, value = item.partition("=")
        if not key or not value:
            raise SystemExit(f"{option} {item!r}: expected KEY=VALUE, e.g. matcher.threshold=0.65")
        node = extra
        *path, last = key.split(".")
        for part in path:
            node = node.setdefault(part, {})
        node[last] = yaml.safe_load(value)
    return ", ".join(f"`{item.partition('=')[0]}: {item.partition('=')[2]}`" for item in items), extra


def missing_models(names: list[str]) -> list[str]:
    """'row: section.key: why' for each model file a row names that the pipeline's resolver cannot find."""
    from pipeline.models import ModelNotFound, resolve_model

    missing = []
    for name in names:
        for section, keys in (("detector", ("model",)), ("reid", ("model", "outfit_model"))):
            for key in keys:
                file = ROWS[name][1].get(section, {}).get(key)
                if not file:
                    continue
                try:
                    resolve_model(file)
                except ModelNotFound as exc:
                    missing.append(f"{name}: {section}.{key}: {exc}")
    return missing


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rows", default=",".join(ROWS))
    ap.add_argument("--list", action="store_true")
    ap.add_argument("--sheet", metavar="PNG", help="write a contact sheet of every dev-frame person (the evidence for "
                    "the re-entry pairs) and exit")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                    help="an extra row 'set:KEY=VALUE' with that config key (dotted path, YAML value); repeatable")
    ap.add_argument("--row", action="append", default=[], metavar="NAME:KEY=VALUE,KEY=VALUE",
                    help="an extra row NAME with several config keys at once; repeatable")
    args = ap.parse_args()
    for item in args.set:
        ROWS[f"set:{item}"] = _settings_row([item], "--set")
        args.rows += f",set:{item}"
    for item in args.row:
        name, _, rest = item.partition(":")
        if not name or not rest or name in ROWS:
            raise SystemExit(f"--row {item!r}: expected a new NAME:KEY=VALUE,KEY=VALUE, e.g. "
                             "lean:reid.max_crops_per_track=4,reid.swap_check_per_second=0.5")
        ROWS[name] = _settings_row(rest.split(","), "--row")
        args.rows += f",{name}"
    if args.sheet:
        contact_sheet(Path(args.sheet))
        return
    if args.list:
        for name, (what, extra) in ROWS.items():
            print(f"{name}: {what} {extra}")
        return
    names = args.rows.split(",")
    unknown = [n for n in names if n not in ROWS]
    if unknown:
        raise SystemExit(f"unknown rows {unknown}; choose from {list(ROWS)}")
    missing = missing_models(names)
    if missing:  # before any row runs: a row that fails half an hour in would take the finished rows with it
        raise SystemExit("rows whose model files are not here (nothing was run):\n" + "\n".join(missing))
    with tempfile.TemporaryDirectory(prefix="identity_pets_") as tmp:
        root = Path(tmp)
        halves = {"pets-a": root / "a.avi", "pets-b": root / "b.avi"}
        _write_half(DATA / "vtest.avi", 0, HALF, halves["pets-a"])
        _write_half(DATA / "vtest.avi", HALF, HALF, halves["pets-b"])
        results = {}
        for k, name in enumerate(names):
            work = root / f"row{k}"  # a --set row's name may hold a path
            work.mkdir()
            results[name] = score(work, halves, ROWS[name][1])
            print(name, results[name], flush=True)
            for cam, tracks in results[name]["mixed"].items():
                print(f"  {cam}: {len(tracks)} of {results[name]['tracks'][cam]} tracks cover more than one person "
                      f"(track: boxes per gt person, re-entries as one): {tracks}")
    print(f"\n`python benchmarks/identity_pets.py --rows {args.rows}` ({describe_machine()}, {date.today()})")
    print("| row | what | global IDF1 | per-camera IDF1 | tracks only | people of both halves linked | "
          "boxes without identity % | re-entries as one: global | per-camera | people linked |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for name, r in results.items():
        print(f"| {name} | {ROWS[name][0]} | {r['global']:.1f} | {r['per_camera']:.1f} | {r['tracks_only']:.1f} | "
              f"{r['linked']} | {r['unidentified']:.1f} | {r['global_one']:.1f} | {r['per_camera_one']:.1f} | "
              f"{r['linked_one']} |")


if __name__ == "__main__":
    main()
