"""A ReID training set cut from SynthCC scene videos (`python -m synth crops`).

Why: models trained on `synth people` crops find the same person in another outfit about half the time on
those still crops, but on the pipeline's video crops of scene people they pick the wrong person among four
as often as the right one (README, "Camera topology and the run's clock"). Scene crops differ from people
crops in what the pipeline actually sees: the video codec, the scene cameras' perspective (people 40-300 px
tall, cut by the frame edge or an occluder), walking poses seen from the cameras' angles, tight boxes. This
writes those crops, with person and outfit labels, in the SynthCC people layout (`reid/datasets/synthcc.py`)
so `python -m reid train` takes them as they are.

Which crops: every sighting (a person's walk through one camera, in one outfit) gives `per_sighting` crops at
evenly spaced frames among its ground-truth boxes that are tall and visible enough (`min_height`,
`min_visibility`), cut from the decoded video at the ground-truth box and resized to the people preset's
128x64. Person ids are renumbered over all scenes, one id per body: scenes of one people seed
(`--set people_seed=N`) film the same people, who keep their id in every such scene, and an outfit is (outfit
seed, person, clothes index), numbered per person (the scene's own index for a person's first outfit seed, the
next ones after it), so the same people filmed with other outfit seeds (`--set outfit_seed=M`) add outfits to
them (a person shown in many outfits instead of a few). Cameras are
numbered over all scenes too (each scene's cameras are other cameras, with their own colour cast: colour
levelling keys on the camera number), and images.csv names each one's scene camera. Test scenes
give query and gallery: each sighting's middle crop is a query, its other crops gallery, so every query has
same-outfit images in another camera when the person wears that outfit twice, and other-outfit images always
(scenes with `change_prob` 1). No body may be in both a training and a test scene (same people seed: an
error), and no scene may be given twice.

Part masks (masks/<split>/<name>, SynthCC's labels, as `synth people` writes them): each picked frame is drawn
again from the scene's own description (sightings.json: config, seed, script; `synth.scenes.world_of`), and
the crop's person's visible pixels get their part label, everything else (background, occluders, other people)
background. The redrawn ground-truth box must equal the file's, or the scene cannot be redrawn (drawn over
--backgrounds): an error then, and `masks=False` (`--no-masks`) cuts crops without masks.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from .io import prepare_out, write_json, write_png

VERSION = 3  # 2: cameras numbered over all scenes, images.csv scene_camera, part masks; 3: one id per body over scenes


@dataclass(frozen=True)
class _Pick:
    frame: int  # 1-based, as the gt
    box: tuple[float, float, float, float]  # x, y, w, h
    pid: int  # renumbered over all scenes
    gid: int  # the person's global id in its scene
    clothes: int  # 1-based index within the person, over all scenes
    cam: int  # numbered over all scenes
    scene_cam: str  # the camera's id in its scene (cam01 ...)
    outfit_uid: int
    split: str  # train / query / test
    visibility: float


def _read_meta(root: Path) -> dict:
    meta_path = root / "sightings.json"
    if not meta_path.is_file():
        raise FileNotFoundError(f"{root} is not a `python -m synth scenes` output: {meta_path} is missing "
                                "(generate one with python -m synth scenes --preset bench --seed S --out DIR)")
    return json.loads(meta_path.read_text())


def _read_scene(root: Path) -> tuple[dict, dict[str, np.ndarray]]:
    meta = _read_meta(root)
    return meta, {cam["id"]: np.loadtxt(root / cam["gt"], delimiter=",", ndmin=2) for cam in meta["cameras"]}


def _choose(rows: np.ndarray, k: int) -> np.ndarray:
    """Up to k rows evenly spread over the sighting (first and last frames included when k >= 2)."""
    if len(rows) <= k:
        return rows
    idx = np.unique(np.round(np.linspace(0, len(rows) - 1, k)).astype(int))
    return rows[idx]


def people_key(meta: dict, root: Path) -> tuple:
    """What a scene's bodies are drawn from: its people seed (its own seed unless `people_seed` is set). A
    scripted scene may set body parameters, so its people are its own."""
    cfg = meta.get("config") or {}
    pseed = int(cfg.get("people_seed", -1))
    pseed = int(meta["seed"]) if pseed < 0 else pseed
    return ("script", str(root.resolve())) if meta.get("script") else ("seed", pseed)


def outfit_key(meta: dict, root: Path) -> tuple:
    """What a scene's wardrobes are drawn from (`outfit_seed`, else the people's seed)."""
    oseed = int((meta.get("config") or {}).get("outfit_seed", -1))
    return people_key(meta, root) if oseed < 0 else ("seed", oseed)


def plan_crops(scenes: list[tuple[Path, str]], per_sighting: int, min_height: float,
               min_visibility: float) -> tuple[list[tuple[Path, str, list[_Pick]]], dict]:
    """Per (scene, camera): the crops to cut. `scenes` pairs each scene folder with its role (train / test)."""
    plan = []
    next_cam = 1
    stats = {"sightings": 0, "sightings_without_crops": 0}
    pid_of: dict[tuple, int] = {}  # (people key, person) -> id over all scenes
    # Per id: where each outfit key's clothes indices start, and how many outfits it has over all scenes. A
    # person of one scene keeps the scene's clothes index; other outfit seeds' wardrobes follow on.
    clothes_base: dict[int, dict[tuple, int]] = {}
    n_clothes: dict[int, int] = {}
    for root, role in scenes:
        meta, gts = _read_scene(root)
        pkey, okey = people_key(meta, root), outfit_key(meta, root)
        wardrobe = max([int((meta.get("config") or {}).get("outfits_per_person", 1)),
                        *(int(s["clothes"]) for s in meta["sightings"])])
        for g in sorted({s["global_id"] for s in meta["sightings"]}):
            pid = pid_of.setdefault((pkey, g), len(pid_of) + 1)
            bases = clothes_base.setdefault(pid, {})
            if okey not in bases:
                bases[okey] = n_clothes.get(pid, 0)
                n_clothes[pid] = bases[okey] + wardrobe
                if n_clothes[pid] > 99:
                    raise ValueError(f"person {g} of {root} wears more than 99 outfits over the scenes: the file "
                                     "names hold a two-digit outfit; cut crops from fewer scenes")
        per_cam: dict[str, list[_Pick]] = {c["id"]: [] for c in meta["cameras"]}
        cam_no = {c["id"]: next_cam + k for k, c in enumerate(meta["cameras"])}
        next_cam += len(meta["cameras"])
        if next_cam > 100:
            raise ValueError("more than 99 cameras over all scenes: the file names hold a two-digit camera; "
                             "cut crops from fewer scenes")
        for s in meta["sightings"]:
            stats["sightings"] += 1
            rows = gts[s["camera"]]
            sel = rows[(rows[:, 1] == s["global_id"]) & (rows[:, 0] >= s["first_frame"])
                       & (rows[:, 0] <= s["last_frame"]) & (rows[:, 5] >= min_height)
                       & (rows[:, 8] >= min_visibility)]
            chosen = _choose(sel, per_sighting)
            if len(chosen) == 0:
                stats["sightings_without_crops"] += 1
                continue
            query_row = len(chosen) // 2 if role == "test" and len(chosen) >= 2 else -1
            pid = pid_of[(pkey, s["global_id"])]
            clothes = clothes_base[pid][okey] + int(s["clothes"])
            for j, r in enumerate(chosen):
                split = "train" if role == "train" else ("query" if j == query_row else "test")
                per_cam[s["camera"]].append(_Pick(int(r[0]), (float(r[2]), float(r[3]), float(r[4]), float(r[5])),
                                                  pid, int(s["global_id"]), clothes,
                                                  cam_no[s["camera"]],
                                                  s["camera"], int(s["outfit_uid"]), split, float(r[8])))
        for cam in meta["cameras"]:
            picks = sorted(per_cam[cam["id"]], key=lambda p: p.frame)
            plan.append((root / cam["video"], cam["id"], picks))
    return plan, stats


def _cut(frame: np.ndarray, box: tuple[float, float, float, float], crop_hw: tuple[int, int]) -> np.ndarray:
    x, y, w, h = box
    H, W = frame.shape[:2]
    x0, y0 = max(0, int(np.floor(x))), max(0, int(np.floor(y)))
    x1, y1 = min(W, int(np.ceil(x + w))), min(H, int(np.ceil(y + h)))
    crop = frame[y0:y1, x0:x1]
    interp = cv2.INTER_AREA if crop.shape[0] > crop_hw[0] else cv2.INTER_LINEAR
    return cv2.resize(crop, (crop_hw[1], crop_hw[0]), interpolation=interp)


def _cut_mask(owner: np.ndarray, parts: np.ndarray, person: int, box, crop_hw: tuple[int, int]) -> np.ndarray:
    x, y, w, h = box
    H, W = owner.shape
    x0, y0 = max(0, int(np.floor(x))), max(0, int(np.floor(y)))
    x1, y1 = min(W, int(np.ceil(x + w))), min(H, int(np.ceil(y + h)))
    mine = np.where(owner[y0:y1, x0:x1] == person, parts[y0:y1, x0:x1], 0).astype(np.uint8)
    return cv2.resize(mine, (crop_hw[1], crop_hw[0]), interpolation=cv2.INTER_NEAREST)


class _Redrawn:
    """Owner and part maps of the frames a camera's picks need, drawn again from the scene's world."""

    def __init__(self, world, root: Path, cam_id: str):
        self.root, self.cam_id = root, cam_id
        self.world = world
        self.c = int(cam_id[3:])
        self.mine = self.world.camera_visits(self.c)
        self.frame = -1
        self.maps = None

    def mask(self, pick: _Pick, crop_hw: tuple[int, int]) -> np.ndarray:
        if pick.frame != self.frame:
            _, gt, owner, parts = self.world.compose(pick.frame - 1, self.c, self.mine, labels=True)
            self.frame, self.maps = pick.frame, (gt, owner, parts)
        gt, owner, parts = self.maps
        hit = [(i, b) for i, b in gt if self.mine[i].gid == pick.gid]
        if not hit or max(abs(a - b) for a, b in zip(hit[0][1][:4], pick.box)) > 0.011:
            raise ValueError(f"{self.root}: frame {pick.frame} of {self.cam_id} drawn again from sightings.json does "
                             f"not give person {pick.gid}'s ground-truth box {pick.box} (got "
                             f"{hit[0][1][:4] if hit else 'no box'}); a scene drawn over --backgrounds cannot be "
                             "redrawn for part masks: cut its crops with --no-masks")
        return _cut_mask(owner, parts, hit[0][0], pick.box, crop_hw)


def write_scene_crops(train_scenes: list[Path], test_scenes: list[Path], out: Path, per_sighting: int = 8,
                      min_height: float = 48.0, min_visibility: float = 0.6, crop_hw: tuple[int, int] = (128, 64),
                      force: bool = False, log=print, masks: bool = True) -> dict:
    if not train_scenes or not test_scenes:
        raise ValueError("need at least one training scene and one test scene (--train / --test)")
    overlap = {p.resolve() for p in train_scenes} & {p.resolve() for p in test_scenes}
    if overlap:
        raise ValueError(f"scene(s) {sorted(map(str, overlap))} given as both training and test scene")
    seeds: dict[tuple, Path] = {}
    people: dict[str, dict[tuple, Path]] = {"train": {}, "test": {}}
    for root, role in [*((p, "train") for p in train_scenes), *((p, "test") for p in test_scenes)]:
        meta = _read_meta(root)
        pkey = people_key(meta, root)
        draws = (meta["seed"], pkey, outfit_key(meta, root))
        if draws in seeds:
            raise ValueError(f"{root} and {seeds[draws]} are the same scene (seed {meta['seed']}, same people "
                             "and outfits): give each scene once")
        seeds[draws] = root
        people[role].setdefault(pkey, root)
    for key, root in people["test"].items():
        if key in people["train"]:
            raise ValueError(f"test scene {root} films the people of training scene {people['train'][key]} "
                             f"(people seed {key[1]}): test people must be bodies no training scene shows; give "
                             "the test scene another seed or --set people_seed")
    if per_sighting < 2:
        raise ValueError("per_sighting must be >= 2 (a test sighting gives one query and keeps gallery crops)")
    t0 = time.perf_counter()
    plan, stats = plan_crops([(p, "train") for p in train_scenes] + [(p, "test") for p in test_scenes],
                             per_sighting, min_height, min_visibility)
    worlds: dict[Path, object] = {}
    if masks:
        from .scenes import world_of

        # Every scene must redraw to its own ground truth before anything is written (one mask per scene).
        for video, cam_id, picks in plan:
            if picks and video.parent not in worlds:
                worlds[video.parent] = world_of(video.parent)
                _Redrawn(worlds[video.parent], video.parent, cam_id).mask(picks[0], crop_hw)
    prepare_out(out, force)
    for sub in ("train", "query", "test"):
        (out / sub).mkdir(exist_ok=True)
        if masks:
            (out / "masks" / sub).mkdir(parents=True, exist_ok=True)
    rows = ["file,split,pid,clothes,cam,outfit_uid,person_px,visibility,scene_frame,scene_camera"]
    idx = 0
    for video, cam_id, picks in plan:
        if not picks:
            continue
        redrawn = _Redrawn(worlds[video.parent], video.parent, cam_id) if masks else None
        cap = cv2.VideoCapture(str(video))
        if not cap.isOpened():
            raise RuntimeError(f"OpenCV cannot open {video}")
        try:
            want = iter(picks)
            pick = next(want)
            f = 0
            while pick is not None:
                ok, frame = cap.read()
                if not ok:
                    raise RuntimeError(f"{video} ended at frame {f} before gt frame {pick.frame} ({cam_id})")
                f += 1
                while pick is not None and pick.frame == f:
                    name = f"{pick.split}/{pick.pid:04d}_{pick.clothes:02d}_c{pick.cam:02d}_{idx:06d}.png"
                    write_png(out / name, _cut(frame, pick.box, crop_hw))
                    if redrawn is not None:
                        write_png(out / "masks" / name, redrawn.mask(pick, crop_hw))
                    rows.append(f"{name},{pick.split},{pick.pid},{pick.clothes},{pick.cam},{pick.outfit_uid},"
                                f"{pick.box[3]:.1f},{pick.visibility:.3f},{pick.frame},{pick.scene_cam}")
                    idx += 1
                    pick = next(want, None)
        finally:
            cap.release()
    (out / "images.csv").write_text("\n".join(rows) + "\n")
    counts = {s: sum(1 for r in rows[1:] if r.split(",")[1] == s) for s in ("train", "query", "test")}
    write_json(out / "meta.json", {
        "preset": "scene-crops", "seed": sorted({d[0] for d in seeds}), "version": VERSION,
        "train_scenes": [str(p) for p in train_scenes], "test_scenes": [str(p) for p in test_scenes],
        "per_sighting": per_sighting, "min_height": min_height, "min_visibility": min_visibility,
        "crop_hw": list(crop_hw), "images": counts, "masks": masks, **stats,
    })
    secs = time.perf_counter() - t0
    log(f"synth crops -> {out}: train {counts['train']}, query {counts['query']}, gallery {counts['test']} images "
        f"from {stats['sightings']} sightings ({stats['sightings_without_crops']} without a usable box), {secs:.1f} s")
    return {**counts, **stats, "seconds": secs}
