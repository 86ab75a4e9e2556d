"""ReID data set generator (LTCC-like layout with part masks), see contracts in synth/README.md."""

from __future__ import annotations

import math
import shutil
import time
from dataclasses import dataclass, replace
from pathlib import Path

import cv2
import numpy as np

from . import rng as R
from .body import BODY_FIELDS, Body, sample_body
from .camera import Camera, apply_camera, sample_camera
from .io import prepare_out, write_json, write_png
from .outfit import Accessories, Outfit, grey_outfit, sample_accessories, sample_wardrobes
from .presets import CAMERA_PARTS, PeopleConfig, config_json
from .render import LABELS, Pose, coverage_labels, label_coverage, render_person

# 2: bodies, wardrobes and accessories keyed by (split, index) instead of pid; training people with their own
# outfit/camera/image counts; near and far cameras balanced; masks cover every pixel a part's colour reaches.
VERSION = 2
SPLITS = ("train", "query", "test")
_BG_SIZE = (384, 288)  # per-camera background used behind crops


@dataclass(frozen=True)
class Shot:
    """One crop to render."""

    pid: int
    clothes: int  # 1-based outfit index within the person
    cam: int  # 1-based
    k: int  # index within (pid, clothes, cam)
    split: str


def render_crop(
    body: Body, outfit: Outfit, cam: Camera, rng: np.random.Generator, crop_hw: tuple[int, int],
    acc: Accessories | None = None,
) -> tuple[np.ndarray, np.ndarray, dict]:
    """One detector-style crop of a person seen by ``cam``: (BGR uint8, label mask uint8, info)."""
    img, cov, info = compose_crop(body, outfit, cam, rng, crop_hw, acc)
    return apply_camera(img, cam, rng), coverage_labels(cov), info


def compose_crop(
    body: Body, outfit: Outfit, cam: Camera, rng: np.random.Generator, crop_hw: tuple[int, int],
    acc: Accessories | None = None,
) -> tuple[np.ndarray, np.ndarray, dict]:
    """The crop before the camera model: (float RGB image, per-pixel label shares (h, w, N_LABELS), info).

    The label shares go through the same resize as the image, so the mask made from them
    (``coverage_labels``) marks every pixel that a part's colour reached.
    """
    crop_h, crop_w = crop_hw
    yaw = float(cam.yaws[int(rng.integers(len(cam.yaws)))] + rng.normal(0.0, 0.35))
    walking = 1.0 if rng.uniform() < 0.85 else float(rng.uniform(0.0, 0.2))
    pose = Pose(yaw=yaw, phase=float(rng.uniform(0, 2 * math.pi)), walking=walking)
    # Source resolution scales with the crop size, so large presets are not just upsampled small ones.
    px = float(rng.uniform(*cam.person_px)) * crop_h / 128.0
    sp = render_person(body, outfit, pose, px, acc=acc)
    ys, xs = np.nonzero(sp.alpha > 0.1)
    y0, y1, x0, x1 = ys.min(), ys.max() + 1, xs.min(), xs.max() + 1
    bh, bw = y1 - y0, x1 - x0
    # Detector-like box: tight with jittered margins.
    top = bh * rng.uniform(0.01, 0.08)
    bot = bh * rng.uniform(0.0, 0.05)
    side_l = bw * rng.uniform(0.02, 0.2)
    side_r = bw * rng.uniform(0.02, 0.2)
    pad = int(math.ceil(max(top, bot, side_l, side_r))) + 2
    # Background patch behind the sprite (camera's backdrop at a random place and scale).
    H, W = sp.alpha.shape[0] + 2 * pad, sp.alpha.shape[1] + 2 * pad
    bg = cam.background
    bh_src = int(min(bg.shape[0], max(8, H * rng.uniform(0.4, 1.2))))
    bw_src = int(min(bg.shape[1], max(4, bh_src * W / H)))
    by = int(rng.integers(0, bg.shape[0] - bh_src + 1))
    bx = int(rng.integers(0, bg.shape[1] - bw_src + 1))
    canvas = cv2.resize(bg[by : by + bh_src, bx : bx + bw_src], (W, H), interpolation=cv2.INTER_LINEAR)
    a = sp.alpha[..., None]
    canvas[pad : pad + sp.alpha.shape[0], pad : pad + sp.alpha.shape[1]] *= 1.0 - a
    canvas[pad : pad + sp.alpha.shape[0], pad : pad + sp.alpha.shape[1]] += sp.rgb * a
    labels = np.zeros((H, W), np.uint8)
    labels[pad : pad + sp.alpha.shape[0], pad : pad + sp.alpha.shape[1]] = sp.labels
    cy0 = int(round(pad + y0 - top))
    cy1 = int(round(pad + y1 + bot))
    cx0 = int(round(pad + x0 - side_l))
    cx1 = int(round(pad + x1 + side_r))
    img = canvas[cy0:cy1, cx0:cx1]
    lab = labels[cy0:cy1, cx0:cx1]
    occluded = ""
    if rng.uniform() < cam.occlusion_prob:
        img, lab, occluded = _occlude(img.copy(), lab.copy(), bg, rng)
    interp = cv2.INTER_AREA if img.shape[0] > crop_h else cv2.INTER_LINEAR
    img = cv2.resize(img, (crop_w, crop_h), interpolation=interp)
    cov = label_coverage(lab, (crop_w, crop_h), interp)
    info = {"yaw_deg": round(math.degrees(yaw), 2), "walking": round(walking, 3), "person_px": round(px, 1), "occluded": occluded}
    return img, cov, info


def _occlude(img: np.ndarray, lab: np.ndarray, bg: np.ndarray, rng: np.random.Generator):
    """Cover part of the crop with an object (bench/car at the bottom, pole/wall at a side)."""
    h, w = lab.shape
    kind = str(rng.choice(["bottom", "left", "right"], p=[0.6, 0.2, 0.2]))
    if kind == "bottom":
        y0 = int(h * (1.0 - rng.uniform(0.15, 0.35)))
        region = (slice(y0, h), slice(0, w))
    else:
        cw = int(w * rng.uniform(0.2, 0.4))
        region = (slice(0, h), slice(0, cw)) if kind == "left" else (slice(0, h), slice(w - cw, w))
    rh = region[0].stop - region[0].start
    rw = region[1].stop - region[1].start
    colour = rng.uniform(0.1, 0.8, 3).astype(np.float32)
    # Textured object: its own colour mixed with a scrap of background texture.
    sy = int(rng.integers(0, max(1, bg.shape[0] - rh)))
    sx = int(rng.integers(0, max(1, bg.shape[1] - rw)))
    scrap = cv2.resize(bg[sy : sy + max(rh, 2), sx : sx + max(rw, 2)], (rw, rh))
    img[region] = 0.6 * colour + 0.4 * scrap
    lab[region] = 0
    return img, lab, kind


def person_key(cfg: PeopleConfig, pid: int) -> tuple[int, int]:
    """(split code, 1-based index within the split): what a person's body, wardrobe and accessories are keyed by,
    so that a set with more training people never draws another set's test people."""
    return (R.SPLIT_TRAIN, pid) if pid <= cfg.n_train else (R.SPLIT_TEST, pid - cfg.n_train)


def _plan(cfg: PeopleConfig, seed: int) -> list[Shot]:
    """Which crops exist, in a fixed order, with their split."""
    shots: list[Shot] = []
    for pid in range(1, cfg.n_train + cfg.n_test + 1):
        rng = R.rng_for(seed, R.SPLIT, *person_key(cfg, pid))
        is_train = pid <= cfg.n_train
        n_outfits = cfg.train_outfits if is_train else cfg.outfits_per_person
        n_cams = cfg.train_cams if is_train else cfg.cams_per_outfit
        n_images = cfg.train_images if is_train else cfg.images_per_cam
        for clothes in range(1, n_outfits + 1):
            cams = sorted(int(c) + 1 for c in rng.choice(cfg.n_cameras, size=n_cams, replace=False))
            slots = [(cam, k) for cam in cams for k in range(n_images)]
            query: set[tuple[int, int]] = set()
            if not is_train:
                # Query images come from distinct cameras where possible (LTCC-like).
                order = rng.permutation(len(cams))
                for q in range(cfg.query_per_outfit):
                    query.add((cams[int(order[q % len(cams)])], q // len(cams)))
            for cam, k in slots:
                split = "train" if is_train else ("query" if (cam, k) in query else "test")
                shots.append(Shot(pid, clothes, cam, k, split))
    return shots


def _cameras(cfg: PeopleConfig, seed: int, backgrounds: list[Path] | None) -> tuple[dict[int, Camera], dict[int, bool]]:
    """The set's cameras and which are near: its own, or with `camera_seed` those of that seed's set, whole or
    only the parts `camera_parts` names (the others stay the set's own)."""
    def drawn(s: int) -> tuple[dict[int, Camera], dict[int, bool]]:
        ranges = camera_ranges(cfg, s)
        return ({c: sample_camera(R.rng_for(s, R.CAMERA, c), c, _BG_SIZE, backgrounds, cfg.occlusion, near=near)
                 for c, near in ranges.items()}, ranges)

    own, own_near = drawn(seed)
    if cfg.camera_seed < 0:
        return own, own_near
    other, other_near = drawn(cfg.camera_seed)
    parts = list(CAMERA_PARTS) if cfg.camera_parts == "all" else cfg.camera_parts.split(",")
    taken = [f for part in parts for f in CAMERA_PARTS[part]]
    cams = {c: replace(own[c], **{f: getattr(other[c], f) for f in taken}) for c in own}
    return cams, (other_near if "range" in parts else own_near)


def camera_ranges(cfg: PeopleConfig, seed: int) -> dict[int, bool]:
    """camera id -> True when near. Exactly ``cfg.n_far_cameras`` cameras are far, which ones drawn per seed."""
    order = R.rng_for(seed, R.CAMERA_RANGE).permutation(cfg.n_cameras)
    far = {int(c) + 1 for c in order[: cfg.n_far_cameras]}
    return {c: c not in far for c in range(1, cfg.n_cameras + 1)}


def generate_people(cfg: PeopleConfig, seed: int, out: Path, preset: str = "custom",
                    backgrounds: list[Path] | None = None, force: bool = False, log=print) -> dict:
    """Write the data set to ``out``; returns a summary dict."""
    cfg.validate()
    t0 = time.perf_counter()
    prepare_out(out, force)
    for sub in (*SPLITS, "masks"):
        if (out / sub).exists():
            shutil.rmtree(out / sub)  # only our own folders, and only with --force
    for split in SPLITS:
        (out / split).mkdir(parents=True)
        (out / "masks" / split).mkdir(parents=True)
    n_ids = cfg.n_train + cfg.n_test
    pids = range(1, n_ids + 1)
    bodies = {pid: sample_body(R.rng_for(seed, R.PERSON, *person_key(cfg, pid)), cfg.body_distinct) for pid in pids}
    accessories = {pid: sample_accessories(R.rng_for(seed, R.ACCESSORY, *person_key(cfg, pid)), cfg.accessories)
                   for pid in pids}
    wardrobes = sample_wardrobes(
        n_ids, [cfg.train_outfits if pid <= cfg.n_train else cfg.outfits_per_person for pid in pids],
        cfg.outfit_share, cfg.shared_pool,
        lambda i: R.rng_for(seed, R.WARDROBE, *person_key(cfg, i + 1)), lambda j: R.rng_for(seed, R.OUTFIT_POOL, j),
    )
    cams, near_of = _cameras(cfg, seed, backgrounds)
    shots = _plan(cfg, seed)
    rows = ["file,split,pid,clothes,cam,outfit_uid,yaw_deg,walking,person_px,occluded"]
    counts = {s: 0 for s in SPLITS}
    for idx, sh in enumerate(shots):
        rng = R.rng_for(seed, R.IMAGE, sh.pid, sh.clothes, sh.cam, sh.k)
        outfit = wardrobes[sh.pid - 1][sh.clothes - 1]
        if cfg.clothes_grey:
            outfit = grey_outfit(outfit)
        bgr, lab, info = render_crop(bodies[sh.pid], outfit, cams[sh.cam], rng, (cfg.crop_h, cfg.crop_w),
                                     accessories[sh.pid])
        name = f"{sh.pid:04d}_{sh.clothes:02d}_c{sh.cam:02d}_{idx:06d}.png"
        write_png(out / sh.split / name, bgr)
        write_png(out / "masks" / sh.split / name, lab)
        counts[sh.split] += 1
        rows.append(f"{sh.split}/{name},{sh.split},{sh.pid},{sh.clothes},{sh.cam},{outfit.uid},"
                    f"{info['yaw_deg']},{info['walking']},{info['person_px']},{info['occluded']}")
    (out / "images.csv").write_text("\n".join(rows) + "\n")
    uid_wearers: dict[int, set[int]] = {}
    for pid in range(1, n_ids + 1):
        for o in wardrobes[pid - 1]:
            uid_wearers.setdefault(o.uid, set()).add(pid)
    shared = sum(1 for w in uid_wearers.values() if len(w) > 1)
    meta = {
        "preset": preset,
        "seed": seed,
        "version": VERSION,
        "config": config_json(cfg),
        "labels": {str(k): v for k, v in LABELS.items()},
        "body_fields": list(BODY_FIELDS),
        "identities": {
            str(pid): {
                "body": [round(float(v), 6) for v in bodies[pid].vector()],
                "params": bodies[pid].to_json(),
                "split": "train" if pid <= cfg.n_train else "test",
                "key": list(person_key(cfg, pid)),
                "accessories": accessories[pid].to_json(),
            }
            for pid in range(1, n_ids + 1)
        },
        "outfits": {
            f"{pid}_{k + 1}": o.to_json() for pid in range(1, n_ids + 1) for k, o in enumerate(wardrobes[pid - 1])
        },
        "cameras": {str(c): {**cam.to_json(), "near": near} for (c, cam), near in
                    zip(cams.items(), near_of.values())},
        "splits": {
            "train": {"pids": list(range(1, cfg.n_train + 1)), "images": counts["train"]},
            "query": {"pids": list(range(cfg.n_train + 1, n_ids + 1)), "images": counts["query"]},
            "test": {"pids": list(range(cfg.n_train + 1, n_ids + 1)), "images": counts["test"]},
        },
        "shared_outfits": {"outfits_worn_by_several_people": shared, "distinct_outfits": len(uid_wearers)},
    }
    write_json(out / "meta.json", meta)
    secs = time.perf_counter() - t0
    log(f"synth people: preset={preset} seed={seed} -> {out}: train {counts['train']}, query {counts['query']}, "
        f"gallery {counts['test']} images, {shared}/{len(uid_wearers)} outfits shared between people, {secs:.1f} s")
    return {"counts": counts, "seconds": secs, "shared_outfits": shared}
