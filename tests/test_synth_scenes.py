"""SynthCC scenes: determinism, MOTChallenge ground truth, sightings, pipeline config."""

from __future__ import annotations

import configparser
import json
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import cv2
import numpy as np
import pytest

from synth.presets import SCENE_PRESETS
from synth.scenes import generate_scenes

REPO = Path(__file__).resolve().parents[1]


def _tree(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def tiny_scene(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("scene") / "a"
    cmd = [sys.executable, "-m", "synth", "scenes", "--preset", "tiny", "--seed", "2", "--out", str(out)]
    subprocess.run(cmd, cwd=REPO, check=True, capture_output=True, timeout=120)
    return out


def test_scenes_deterministic_and_seed_matters(tiny_scene: Path, tmp_path: Path) -> None:
    generate_scenes(SCENE_PRESETS["tiny"], 2, tmp_path / "b", preset="tiny", log=lambda m: None)
    a, b = _tree(tiny_scene), _tree(tmp_path / "b")
    assert a.keys() == b.keys()
    assert [k for k in a if a[k] != b[k]] == []
    generate_scenes(SCENE_PRESETS["tiny"], 9, tmp_path / "c", preset="tiny", log=lambda m: None)
    c = _tree(tmp_path / "c")
    assert a["sightings.json"] != c["sightings.json"] and a["cam01.mp4"] != c["cam01.mp4"]


def test_people_seed_films_other_people_with_the_same_cameras(tiny_scene: Path, tmp_path: Path) -> None:
    cfg = replace(SCENE_PRESETS["tiny"], frames=20, people_seed=77)
    generate_scenes(cfg, 2, tmp_path / "other", preset="tiny", log=lambda m: None)
    a = json.loads((tiny_scene / "sightings.json").read_text())
    b = json.loads((tmp_path / "other" / "sightings.json").read_text())
    drop = ("frames",)
    assert [{k: v for k, v in c.items() if k not in drop} for c in a["cameras"]] == \
        [{k: v for k, v in c.items() if k not in drop} for c in b["cameras"]]
    assert all(a["identities"][g]["body"] != b["identities"][g]["body"] for g in a["identities"])
    # the background behind the people is the same picture: a frame's pixels match where nobody stands
    fa, fb = (cv2.VideoCapture(str(root / "cam01.mp4")).read()[1] for root in (tiny_scene, tmp_path / "other"))
    assert np.median(np.abs(fa.astype(int) - fb.astype(int))) <= 2


def test_outfit_seed_dresses_the_same_people_in_other_outfits() -> None:
    """`outfit_seed` redraws the wardrobes and which outfit each walk wears; bodies, cameras and walks stay."""
    from synth.scenes import build_world

    cfg = replace(SCENE_PRESETS["tiny"], people_seed=77, outfits_per_person=3, change_prob=1.0)
    base, a, b = (build_world(replace(cfg, outfit_seed=o), 2, noise=False) for o in (-1, 5, 6))
    for w in (a, b):
        assert w.bodies == base.bodies
        assert [(v.gid, v.cam, v.t0, v.track) for v in w.visits] == [(v.gid, v.cam, v.t0, v.track) for v in base.visits]
    looks = lambda w: [[o.to_json() for o in outfits] for outfits in w.wardrobes]  # noqa: E731
    assert all(x != y for x, y in zip(looks(a), looks(b)))  # every person: another wardrobe
    assert looks(base) != looks(a)
    # which outfit each walk wears follows the outfit seed too (not always outfit 1 first)
    assert [v.clothes for v in a.visits] != [v.clothes for v in b.visits]
    first_outfit = {v.gid: v.clothes for v in reversed(a.visits)}  # reversed: each person's first walk wins
    assert set(first_outfit.values()) != {1}


def test_scene_ground_truth_is_consistent(tiny_scene: Path) -> None:
    cfg = SCENE_PRESETS["tiny"]
    meta = json.loads((tiny_scene / "sightings.json").read_text())
    sightings = meta["sightings"]
    assert sightings
    gids = set()
    for cam in meta["cameras"]:
        name = cam["id"]
        ini = configparser.ConfigParser()
        ini.read(tiny_scene / "seqinfo" / f"{name}.ini")
        seq = ini["Sequence"]
        n, w, h = int(seq["seqLength"]), int(seq["imWidth"]), int(seq["imHeight"])
        assert (n, w, h) == (cfg.frames, cfg.width, cfg.height)
        cap = cv2.VideoCapture(str(tiny_scene / cam["video"]))
        frames = 0
        while True:
            ok, frame = cap.read()
            if not ok:
                break
            assert frame.shape == (h, w, 3)
            frames += 1
        cap.release()
        assert frames == n
        rows = np.loadtxt(tiny_scene / "gt" / f"{name}.txt", delimiter=",", ndmin=2)
        if rows.size == 0:
            continue
        assert rows.shape[1] == 9
        f, ids, x, y, bw, bh = rows[:, 0], rows[:, 1].astype(int), rows[:, 2], rows[:, 3], rows[:, 4], rows[:, 5]
        assert f.min() >= 1 and f.max() <= n
        assert (x >= 0).all() and (y >= 0).all() and (x + bw <= w + 1e-6).all() and (y + bh <= h + 1e-6).all()
        assert (bw > 0).all() and (bh > 0).all()
        assert ((rows[:, 8] >= 0) & (rows[:, 8] <= 1)).all()
        # At most one box per identity per frame, and each box belongs to a listed sighting.
        assert len({(int(a), int(b)) for a, b in zip(f, ids)}) == len(f)
        mine = [s for s in sightings if s["camera"] == name]
        for fr, gid in zip(f.astype(int), ids):
            assert any(s["global_id"] == gid and s["first_frame"] <= fr <= s["last_frame"] for s in mine)
        for s in mine:
            sel = ids == s["global_id"]
            in_range = f[sel][(f[sel] >= s["first_frame"]) & (f[sel] <= s["last_frame"])]
            assert in_range.min() == s["first_frame"] and in_range.max() == s["last_frame"]
        gids |= set(ids.tolist())
    assert len(gids) >= 2
    # Global ids: someone appears in two cameras, and someone changes outfit between cameras.
    cams_of: dict[int, set[str]] = {}
    clothes_of: dict[int, set[int]] = {}
    for s in sightings:
        cams_of.setdefault(s["global_id"], set()).add(s["camera"])
        clothes_of.setdefault(s["global_id"], set()).add(s["clothes"])
        assert s["outfit"] in meta["outfits"]
    assert any(len(c) > 1 for c in cams_of.values())
    assert any(len(c) > 1 for c in clothes_of.values())


def test_cameras_yaml_loads_in_the_pipeline(tiny_scene: Path) -> None:
    from pipeline.config import load_config

    cfg = load_config(tiny_scene / "cameras.yaml")
    assert [c.id for c in cfg.cameras] == ["cam01", "cam02", "cam03"]
    for c in cfg.cameras:
        assert Path(str(c.source)).is_file()


PETS = REPO.parent / "shared" / "data" / "pets09-s2l1" / "vtest.avi"


def test_real_video_backdrops(tmp_path: Path) -> None:
    assert PETS.is_file(), f"real background video {PETS} missing: put the shared folder beside the checkout"
    cfg = replace(SCENE_PRESETS["tiny"], frames=20)
    generate_scenes(cfg, 0, tmp_path / "a", backgrounds=[PETS], log=lambda m: None)
    generate_scenes(cfg, 0, tmp_path / "b", log=lambda m: None)
    cap = cv2.VideoCapture(str(tmp_path / "a" / "cam01.mp4"))
    ok, real = cap.read()
    cap.release()
    cap = cv2.VideoCapture(str(tmp_path / "b" / "cam01.mp4"))
    ok2, procedural = cap.read()
    cap.release()
    assert ok and ok2 and real.shape == procedural.shape
    # The backdrop is the PETS median frame, not the procedural one of the same seed.
    assert np.abs(real.astype(int) - procedural.astype(int)).mean() > 10


SCRIPT = """\
people: 3
outfits_per_person: 2
shared:
  - {person: 3, outfit: 1, as_person: 2, as_outfit: 1}
visits:
  - {person: 1, camera: 1, outfit: 1, start: 0}
  - {person: 2, camera: 1, outfit: 1, start: 5}
  - {person: 1, camera: 2, outfit: 2, start: 90}
  - {person: 3, camera: 2, outfit: 1, start: 95}
bodies:
  3: {skin_tone: 0.95, hair_rgb: [0.06, 0.05, 0.05], height_m: 1.6}
"""


def test_a_scripted_scene_plays_its_script_with_bodies_no_people_set_has(tmp_path: Path) -> None:
    from synth.people import generate_people
    from synth.presets import PEOPLE_PRESETS

    (tmp_path / "plan.yaml").write_text(SCRIPT)
    cmd = [sys.executable, "-m", "synth", "scenes", "--preset", "tiny", "--seed", "3", "--set", "n_cameras=2",
           "--set", "frames=200", "--set", "outfit_share=0", "--set", "occluders=0", "--script",
           str(tmp_path / "plan.yaml"), "--out", str(tmp_path / "scene")]
    subprocess.run(cmd, cwd=REPO, check=True, capture_output=True, timeout=120)
    meta = json.loads((tmp_path / "scene" / "sightings.json").read_text())
    seen = {(s["global_id"], s["camera"]): s for s in meta["sightings"]}
    assert set(seen) == {(1, "cam01"), (2, "cam01"), (1, "cam02"), (3, "cam02")}
    assert seen[(1, "cam01")]["clothes"] == 1 and seen[(1, "cam02")]["clothes"] == 2
    assert seen[(1, "cam01")]["outfit_uid"] != seen[(1, "cam02")]["outfit_uid"]
    assert seen[(2, "cam01")]["outfit_uid"] == seen[(3, "cam02")]["outfit_uid"], "persons 2 and 3 share an outfit"
    assert meta["outfits"]["2_1"] == meta["outfits"]["3_1"]
    for (gid, cam), s in seen.items():
        start = {(1, "cam01"): 0, (2, "cam01"): 5, (1, "cam02"): 90, (3, "cam02"): 95}[(gid, cam)]
        assert start < s["first_frame"] <= start + 15 and s["last_frame"] - s["first_frame"] >= 25, s
    # Scene bodies come from a stream of their own: no people data set of the same seed has them.
    generate_people(PEOPLE_PRESETS["tiny"], 3, tmp_path / "people", log=lambda m: None)
    people = {tuple(v["body"]) for v in json.loads((tmp_path / "people" / "meta.json").read_text())["identities"].values()}
    assert not people & {tuple(v["body"]) for v in meta["identities"].values()}
    # The script's body parameters, and only those, replace the drawn ones.
    third = meta["identities"]["3"]["params"]
    assert (third["skin_tone"], third["hair_rgb"], third["height_m"]) == (0.95, [0.06, 0.05, 0.05], 1.6)
    assert meta["identities"]["2"]["params"]["skin_tone"] != 0.95
    (tmp_path / "nobody.yaml").write_text(SCRIPT.replace("skin_tone", "skin_colour"))
    bad = subprocess.run(cmd[:-4] + ["--script", str(tmp_path / "nobody.yaml"), "--out", str(tmp_path / "bad")],
                         cwd=REPO, capture_output=True, text=True, timeout=120)
    assert bad.returncode == 2 and "skin_colour" in bad.stderr and "Traceback" not in bad.stderr
    # A script that names a camera the scene does not have: one clear line, exit 2.
    (tmp_path / "bad.yaml").write_text(SCRIPT.replace("camera: 2, outfit: 2", "camera: 7, outfit: 2"))
    bad = subprocess.run(cmd[:-4] + ["--script", str(tmp_path / "bad.yaml"), "--out", str(tmp_path / "bad")],
                         cwd=REPO, capture_output=True, text=True, timeout=120)
    assert bad.returncode == 2 and "cameras 1-2" in bad.stderr and "Traceback" not in bad.stderr


def test_a_scripted_scene_redraws_from_its_sightings(tmp_path: Path) -> None:
    """`world_of` rebuilds a scripted scene (visits, shared outfits, body parameters) from sightings.json alone:
    its redrawn frames give the ground-truth boxes the file holds (what `synth crops` relies on for masks)."""
    from synth.scenes import SceneScript, world_of

    (tmp_path / "plan.yaml").write_text(SCRIPT)
    cfg = replace(SCENE_PRESETS["tiny"], n_cameras=2, frames=120, outfit_share=0.0, occluders=0)
    generate_scenes(cfg, 3, tmp_path / "scene", script=SceneScript.load(tmp_path / "plan.yaml"), log=lambda m: None)
    world = world_of(tmp_path / "scene")
    checked = 0
    for c in (1, 2):
        gt = np.loadtxt(tmp_path / "scene" / "gt" / f"cam{c:02d}.txt", delimiter=",", ndmin=2)
        mine = world.camera_visits(c)
        for f in sorted({int(r[0]) for r in gt})[::7]:
            _, boxes, owner, parts = world.compose(f - 1, c, mine, labels=True)
            got = sorted((mine[i].gid, *np.round(b[:4], 2)) for i, b in boxes)
            want = sorted((int(r[1]), *r[2:6]) for r in gt[gt[:, 0] == f])
            assert np.allclose(got, want, atol=0.011), (c, f)
            assert (parts[owner >= 0] > 0).all() and (parts[owner < 0] == 0).all()
            checked += 1
    assert checked >= 10


def test_outfit_events_are_scored_against_tracks_decided_before_them() -> None:
    """A right `identity.outfit_changed`: an earlier-decided track of the same identity is the same person in
    another outfit, even while that earlier track is still held by its tracker (not ended yet)."""
    from synth.truth import outfit_event_check

    people = {("c1", 1): (1, "a"), ("c2", 5): (1, "b"), ("c2", 6): (2, "a"), ("c1", 2): (3, "c")}
    final = {("c1", 1): 10, ("c2", 5): 10, ("c2", 6): 10, ("c1", 2): 11}
    ev = lambda kind, cam, tid: {"type": kind, "camera_id": cam, "track_id": tid}  # noqa: E731
    events = [ev("identity.created", "c1", 1), ev("identity.assigned", "c2", 5), ev("identity.outfit_changed", "c2", 5),
              ev("identity.assigned", "c2", 6), ev("identity.outfit_changed", "c2", 6),  # a stranger: wrong
              ev("identity.outfit_changed", "c1", 2),  # nothing earlier: wrong
              ev("track.ended", "c1", 1)]
    assert outfit_event_check(events, final, people) == (3, 1)
    # The same run, the first track not yet decided when the event came: not right.
    assert outfit_event_check(events[1:], final, people) == (3, 0)


def test_decisions_are_judged_against_the_truth_at_their_time() -> None:
    """`decision_kinds`: each track's first decision is new / missed (same or other outfit) / right (same or other
    outfit) / wrong (a stranger's first sighting or a known person), against what was decided before it; merges
    join identities from then on and are right when both sides were one person."""
    from synth.truth import decision_kinds

    people = {("c1", 1): (1, "a"), ("c2", 2): (1, "b"), ("c2", 3): (2, "x"), ("c1", 4): (1, "a"), ("c1", 7): (1, "a"),
              ("c3", 5): (1, "c"), ("c3", 6): (2, "x"), ("c4", 8): (3, "z"), ("c4", 9): (1, "c"),
              ("c2", 10): (3, "z")}

    def ev(kind, cam, tid, ident, **kw):
        return {"type": kind, "camera_id": cam, "track_id": tid, "identity_id": ident, **kw}

    events = [ev("identity.created", "c1", 1, 10),     # new person
              ev("identity.assigned", "c2", 2, 10),    # right: other outfit (person 1 through a change)
              ev("identity.assigned", "c2", 3, 10),    # wrong: a stranger's first sighting
              ev("identity.created", "c1", 4, 11),     # missed: person 1 was seen in outfit a
              ev("identity.assigned", "c1", 7, 11),    # right: same outfit
              ev("identity.created", "c3", 5, 12),     # missed: person 1 never wore c before
              ev("identity.assigned", "c3", 6, 11),    # wrong: person 2 is known (identity 10)
              ev("identity.assigned", "c1", 1, 11),    # a re-decision: not counted
              ev("identity.assigned", "c9", 1, 10),    # a track on nobody: not counted
              ev("identity.created", "c4", 8, 13),     # new person
              ev("identity.created", "c2", 10, 14),    # missed: person 3 in the same outfit z
              ev("identity.merged", None, None, 10, merged_from=12),  # both person 1: right
              ev("identity.merged", None, None, 10, merged_from=13),  # person 3 into person 1: wrong
              ev("identity.assigned", "c4", 9, 12),    # 12 now is 10, which holds person 1 in c: right, same outfit
              ev("track.ended", "c1", 1, 10)]
    got = decision_kinds(events, people)
    assert dict(got) == {"new person": 2, "missed: same outfit": 2, "missed: other outfit": 1,
                         "right: same outfit": 2, "right: other outfit": 1, "wrong: first sighting": 1,
                         "wrong: known person": 1, "merge right": 1, "merge wrong": 1}


def test_scene_crops_cut_each_labelled_person_from_its_own_frame(tiny_scene: Path, tmp_path: Path) -> None:
    """`synth crops`: every crop is the ground-truth box of its frame in the decoded video (an off-by-one frame
    or a shifted box changes the pixels of a walking person), labels follow sightings.json, scenes never share
    a person id, test sightings give one query each with gallery crops, and the set loads for `reid train`."""
    from reid.datasets.synthcc import load_synthcc

    other = tmp_path / "s5"
    generate_scenes(replace(SCENE_PRESETS["tiny"], change_prob=1.0), 5, other, preset="tiny", log=lambda m: None)
    out = tmp_path / "crops"
    cmd = [sys.executable, "-m", "synth", "crops", "--train", str(tiny_scene), "--test", str(other), "--out", str(out),
           "--per-sighting", "4", "--min-height", "32"]
    done = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    rows = [line.split(",") for line in (out / "images.csv").read_text().splitlines()[1:]]
    assert len(rows) > 40

    scenes = {"train": tiny_scene, "query": other, "test": other}
    metas = {p: json.loads((p / "sightings.json").read_text()) for p in (tiny_scene, other)}
    pid_to_gid: dict[tuple[Path, int], int] = {}
    checked = 0
    cam_of: dict[int, tuple[Path, str]] = {}
    for file, split, pid, clothes, cam_no, outfit_uid, px, vis, frame, cam_id in rows:
        root, pid, clothes, frame = scenes[split], int(pid), int(clothes), int(frame)
        cam = int(cam_id[3:])
        # one camera number is one camera of one scene (colour levelling keys on it)
        assert cam_of.setdefault(int(cam_no), (root, cam_id)) == (root, cam_id), file
        assert f"_c{int(cam_no):02d}_" in file
        gt = np.loadtxt(root / "gt" / f"cam{cam:02d}.txt", delimiter=",", ndmin=2)
        here = gt[gt[:, 0] == frame]
        # the crop's person: the sighting of that camera whose outfit it carries, at that frame
        sight = [s for s in metas[root]["sightings"] if s["camera"] == f"cam{cam:02d}" and s["clothes"] == clothes
                 and s["first_frame"] <= frame <= s["last_frame"] and s["outfit_uid"] == int(outfit_uid)
                 and (here[:, 1] == s["global_id"]).any()]
        assert sight, (file, "no sighting of this camera, outfit and frame")
        gid = sight[0]["global_id"]
        assert pid_to_gid.setdefault((root, pid), gid) == gid, "one crop pid must be one scene person"
        box = here[here[:, 1] == gid][0]
        assert box[5] >= 32 and box[8] >= 0.6
        if checked < 12:  # decode independently and cut the box again
            cap = cv2.VideoCapture(str(root / f"cam{cam:02d}.mp4"))
            cap.set(cv2.CAP_PROP_POS_FRAMES, frame - 1)
            ok, img = cap.read()
            cap.release()
            assert ok
            x0, y0 = int(np.floor(box[2])), int(np.floor(box[3]))
            x1, y1 = int(np.ceil(box[2] + box[4])), int(np.ceil(box[3] + box[5]))
            want = cv2.resize(img[y0:y1, x0:x1], (64, 128),
                              interpolation=cv2.INTER_AREA if y1 - y0 > 128 else cv2.INTER_LINEAR)
            got = cv2.imread(str(out / file))
            assert np.abs(got.astype(int) - want.astype(int)).mean() < 2.0, file
            checked += 1
    train_pids = {pid for (root, pid) in pid_to_gid if root == tiny_scene}
    test_pids = {pid for (root, pid) in pid_to_gid if root == other}
    assert train_pids and test_pids and not train_pids & test_pids
    queries = [r for r in rows if r[1] == "query"]
    assert queries and all(any(g[1] == "test" and g[2] == q[2] for g in rows) for q in queries)

    data = load_synthcc(out)
    assert len(data.train) == sum(r[1] == "train" for r in rows)
    assert data.num_train_pids == len(train_pids)
    assert not any("WARNING" in n for n in data.notes)
    # part masks, redrawn from each scene's description: one per crop, the crop's own person
    assert all(r.mask_path for r in data.train)
    spans = 0
    for file, split, pid, clothes, cam_no, outfit_uid, px, vis, frame, cam_id in rows:
        m = cv2.imread(str(out / "masks" / file), cv2.IMREAD_UNCHANGED)
        assert m is not None and m.shape == (128, 64) and m.max() <= 7, file
        assert (m > 0).mean() > 0.1 and np.isin(m, (3, 4, 5, 6)).any(), file  # a person, in clothes
        if float(vis) >= 0.99:  # a whole person: the box is theirs, so their pixels reach its four sides
            ys, xs = np.nonzero(m)
            assert ys.min() <= 3 and ys.max() >= 124 and xs.min() <= 4 and xs.max() >= 59, file
            spans += 1
    assert spans >= 10


def test_scene_crops_of_a_scene_that_cannot_be_redrawn_need_no_masks(tiny_scene: Path, tmp_path: Path) -> None:
    """A scene drawn over real backdrops cannot be redrawn from sightings.json (its cameras drew from the video):
    asking for part masks is an error that names --no-masks, raised before anything is written, and without
    masks its crops are cut as usual."""
    from synth.scene_crops import write_scene_crops

    assert PETS.is_file(), f"real background video {PETS} missing: put the shared folder beside the checkout"
    backdrop = tmp_path / "backdrop"
    generate_scenes(replace(SCENE_PRESETS["tiny"], frames=40), 7, backdrop, backgrounds=[PETS], log=lambda m: None)
    with pytest.raises(ValueError, match="--no-masks"):
        write_scene_crops([backdrop], [tiny_scene], tmp_path / "masked", per_sighting=2, min_height=16,
                          log=lambda m: None)
    assert not (tmp_path / "masked").exists()  # stopped before writing anything
    got = write_scene_crops([backdrop], [tiny_scene], tmp_path / "bare", per_sighting=2, min_height=16,
                            log=lambda m: None, masks=False)
    assert got["train"] > 0 and not (tmp_path / "bare" / "masks").exists()


def test_scene_crops_give_one_id_per_body_over_scenes(tiny_scene: Path, tmp_path: Path) -> None:
    """Scenes of one people seed film the same bodies: each keeps one crop id over the scenes, and each outfit
    seed's outfits are other outfits of that id; a test scene of those people is refused (it would test on
    training bodies)."""
    from synth.scene_crops import write_scene_crops

    cfg = replace(SCENE_PRESETS["tiny"], people_seed=77, outfits_per_person=3, change_prob=1.0)
    scenes = [tmp_path / f"s{seed}" for seed in (11, 12)]
    for seed, root in zip((11, 12), scenes):
        generate_scenes(replace(cfg, outfit_seed=seed), seed, root, preset="tiny", log=lambda m: None)
    out = tmp_path / "crops"
    write_scene_crops(scenes, [tiny_scene], out, per_sighting=2, min_height=16, log=lambda m: None, masks=False)
    rows = [line.split(",") for line in (out / "images.csv").read_text().splitlines()[1:]]
    train = [r for r in rows if r[1] == "train"]
    # cameras 1-3 are scene 11's, 4-6 scene 12's
    scene_of = lambda r: 0 if int(r[4]) <= 3 else 1  # noqa: E731
    metas = [json.loads((root / "sightings.json").read_text()) for root in scenes]
    bodies = {s["global_id"] for m in metas for s in m["sightings"]}
    assert len({r[2] for r in train}) == len(bodies)
    both = {r[2] for r in train if scene_of(r) == 0} & {r[2] for r in train if scene_of(r) == 1}
    assert both  # people seen in both scenes: one id each
    for pid in both:
        clothes = [{int(r[3]) for r in train if r[2] == pid and scene_of(r) == k} for k in (0, 1)]
        assert max(clothes[0]) <= 3 < min(clothes[1]), (pid, clothes)  # scene 12's outfits follow scene 11's
    # each crop id is one ground-truth person (one body) in both scenes: the sighting of its camera, frame, outfit
    gids: dict[str, set[int]] = {}
    told = 0
    for r in train:
        k, frame = scene_of(r), int(r[8])
        gt = np.loadtxt(scenes[k] / "gt" / f"{r[9]}.txt", delimiter=",", ndmin=2)
        hits = {int(g) for g in gt[gt[:, 0] == frame][:, 1]
                if any(s["global_id"] == int(g) and s["camera"] == r[9] and s["outfit_uid"] == int(r[5])
                       and s["first_frame"] <= frame <= s["last_frame"] for s in metas[k]["sightings"])}
        if len(hits) == 1:  # two people in one shared outfit on screen at once cannot be told apart here
            assert gids.setdefault(r[2], hits) == hits, "one crop id must be one body over both scenes"
            told += 1
    assert told >= 0.8 * len(train) and both & set(gids)
    test_same_people = tmp_path / "t"
    generate_scenes(replace(cfg, frames=20), 13, test_same_people, preset="tiny", log=lambda m: None)
    with pytest.raises(ValueError, match="people seed 77"):
        write_scene_crops(scenes, [test_same_people], tmp_path / "leak", per_sighting=2, log=lambda m: None)
    assert not (tmp_path / "leak").exists()


def test_scene_crops_refuse_one_scene_twice(tiny_scene: Path, tmp_path: Path) -> None:
    from synth.scene_crops import write_scene_crops

    copy = tmp_path / "copy"
    generate_scenes(SCENE_PRESETS["tiny"], 2, copy, preset="tiny", log=lambda m: None)
    with pytest.raises(ValueError, match="same scene \\(seed 2"):
        write_scene_crops([tiny_scene], [copy], tmp_path / "out", log=lambda m: None)
    with pytest.raises(FileNotFoundError, match="synth scenes"):
        write_scene_crops([tiny_scene], [tmp_path], tmp_path / "out2", log=lambda m: None)
