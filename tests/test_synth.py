"""SynthCC generator: determinism, on-disk layout, outfit sharing, renderer independence."""

from __future__ import annotations

import json
import math
import re
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import cv2
import numpy as np
import pytest

from synth import rng as R
from synth.body import BODY_FIELDS, sample_body
from synth.camera import sample_camera
from synth.outfit import Accessories, sample_outfit
from synth.people import compose_crop, generate_people
from synth.presets import PEOPLE_PRESETS, with_overrides
from synth.render import CLOTHES_LABELS, Pose, coverage_labels, render_person

REPO = Path(__file__).resolve().parents[1]
NAME = re.compile(r"^(\d{4})_(\d{2})_c(\d{2})_(\d{6})\.png$")


def _tree(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def _quiet(_msg: str) -> None:
    pass


@pytest.fixture(scope="module")
def tiny_people(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("people") / "a"
    generate_people(PEOPLE_PRESETS["tiny"], 3, out, preset="tiny", log=_quiet)
    return out


def test_people_cli_is_deterministic_and_seed_matters(tiny_people: Path, tmp_path: Path) -> None:
    # Same seed through the CLI contract gives byte-identical files.
    cmd = [sys.executable, "-m", "synth", "people", "--preset", "tiny", "--seed", "3", "--out", str(tmp_path / "b")]
    subprocess.run(cmd, cwd=REPO, check=True, capture_output=True, timeout=120)
    a, b = _tree(tiny_people), _tree(tmp_path / "b")
    assert a.keys() == b.keys()
    differing = [k for k in a if a[k] != b[k]]
    assert not differing, f"same seed, different bytes: {differing[:5]}"
    # Another seed: different people, different images.
    generate_people(PEOPLE_PRESETS["tiny"], 4, tmp_path / "c", preset="tiny", log=_quiet)
    c = _tree(tmp_path / "c")
    assert a["meta.json"] != c["meta.json"]
    pngs = [k for k in a if k.startswith("train/")]
    same = sum(1 for k in pngs if k in c and a[k] == c[k])
    assert same == 0


def test_people_layout_matches_contract(tiny_people: Path) -> None:
    cfg = PEOPLE_PRESETS["tiny"]
    meta = json.loads((tiny_people / "meta.json").read_text())
    assert meta["preset"] == "tiny" and meta["seed"] == 3 and meta["version"] >= 1
    assert meta["labels"] == {"0": "background", "1": "skin", "2": "hair", "3": "top", "4": "bottom", "5": "shoes",
                              "6": "outerwear_bag", "7": "accessory"}
    recs: dict[str, list[tuple[int, int, int]]] = {}
    idxs = []
    for split in ("train", "query", "test"):
        recs[split] = []
        for f in sorted((tiny_people / split).iterdir()):
            m = NAME.match(f.name)
            assert m, f"bad file name {f}"
            pid, clothes, cam, idx = map(int, m.groups())
            recs[split].append((pid, clothes, cam))
            idxs.append(idx)
            img = cv2.imread(str(f), cv2.IMREAD_UNCHANGED)
            mask = cv2.imread(str(tiny_people / "masks" / split / f.name), cv2.IMREAD_UNCHANGED)
            assert img.shape == (cfg.crop_h, cfg.crop_w, 3) and img.dtype == np.uint8
            assert mask is not None and mask.shape == (cfg.crop_h, cfg.crop_w) and mask.dtype == np.uint8
            assert mask.max() <= 7
            # A person is in the crop: skin or hair, and clothes.
            assert np.isin(mask, (1, 2)).any() and np.isin(mask, (3, 4, 5, 6)).any(), f
            assert f"{pid}_{clothes}" in meta["outfits"]
            assert len(meta["identities"][str(pid)]["body"]) == len(BODY_FIELDS)
    assert len(idxs) == len(set(idxs)), "running index must be unique"
    train_p = {r[0] for r in recs["train"]}
    q_p, g_p = {r[0] for r in recs["query"]}, {r[0] for r in recs["test"]}
    assert len(train_p) == cfg.n_train and len(q_p) == cfg.n_test
    assert not train_p & (q_p | g_p), "train and test identities must be disjoint"
    assert q_p == g_p
    assert len(recs["query"]) == cfg.n_test * cfg.outfits_per_person * cfg.query_per_outfit
    # Every query has a same-clothes and a cloth-changing true match in another camera.
    for pid, clothes, cam in recs["query"]:
        assert any(p == pid and c == clothes and k != cam for p, c, k in recs["test"])
        assert any(p == pid and c != clothes and k != cam for p, c, k in recs["test"])
    # Several cameras per test identity and several outfits per camera set.
    for pid in q_p:
        assert len({k for p, _, k in recs["test"] if p == pid}) >= 2


def test_outfit_share_knob_controls_shared_outfits(tmp_path: Path) -> None:
    base = with_overrides(PEOPLE_PRESETS["tiny"], {"images_per_cam": "1", "outfit_share": "0.0"})
    none = generate_people(base, 5, tmp_path / "none", log=_quiet)
    assert none["shared_outfits"] == 0
    many = generate_people(replace(base, outfit_share=1.0, pool_size=4), 5, tmp_path / "many", log=_quiet)
    assert many["shared_outfits"] >= 3
    meta = json.loads((tmp_path / "many" / "meta.json").read_text())
    uids = {}
    for key, o in meta["outfits"].items():
        uids.setdefault(o["uid"], set()).add(key.split("_")[0])
    assert any(len(p) > 1 for p in uids.values()), "shared outfits must be worn by different people"


def test_bad_knob_is_a_clear_cli_error(tmp_path: Path) -> None:
    cmd = [sys.executable, "-m", "synth", "people", "--preset", "tiny", "--out", str(tmp_path / "x"),
           "--set", "outfits_per_person=1"]
    res = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=60)
    assert res.returncode == 2
    assert "outfits_per_person" in res.stderr


def test_outfit_changes_colours_but_not_the_body() -> None:
    body = sample_body(R.rng_for(7, R.IDENTITY, 1))
    o1 = sample_outfit(np.random.default_rng(1), uid=1)
    # Same garment shapes, other colours and pattern.
    o2 = replace(o1, uid=2, top_rgb=(0.9, 0.1, 0.1), bottom_rgb=(0.1, 0.8, 0.2), top_pattern="solid",
                 shoe_rgb=(0.9, 0.9, 0.1), outer_rgb=(0.2, 0.2, 0.9), bag_rgb=(0.5, 0.1, 0.5))
    pose = Pose(yaw=0.4, phase=1.0)
    a, b = render_person(body, o1, pose, 120), render_person(body, o2, pose, 120)
    assert np.array_equal(a.labels, b.labels) and np.array_equal(a.alpha, b.alpha)
    top = a.labels == 3
    assert top.any() and np.abs(a.rgb[top] - b.rgb[top]).mean() > 0.05
    # Skin away from garment edges (where anti-aliasing mixes colours) is untouched.
    skin = cv2.erode((a.labels == 1).astype(np.uint8), np.ones((3, 3), np.uint8)).astype(bool)
    assert skin.any() and np.allclose(a.rgb[skin], b.rgb[skin])
    # A different body in the same outfit and pose has another silhouette.
    other = sample_body(R.rng_for(7, R.IDENTITY, 2))
    c = render_person(other, o1, pose, 120)
    assert a.labels.shape != c.labels.shape or not np.array_equal(a.labels, c.labels)


def test_render_views_and_bad_size() -> None:
    body = sample_body(R.rng_for(0, R.IDENTITY, 3))
    o = sample_outfit(np.random.default_rng(3), uid=0)
    front = render_person(body, o, Pose(yaw=0.0, phase=0.0), 100)
    side = render_person(body, o, Pose(yaw=math.pi / 2, phase=0.0), 100)
    assert front.labels.shape[0] == pytest.approx(side.labels.shape[0], abs=3)
    # People are about as tall as asked.
    rows = np.nonzero(front.alpha.max(1) > 0.5)[0]
    assert 90 <= rows.max() - rows.min() + 1 <= 115
    with pytest.raises(ValueError, match="px_height"):
        render_person(body, o, Pose(0.0, 0.0), 3)


# ------------------------------------------------------------------------------------------ SynthCC v2


def _records(root: Path, split: str) -> list[tuple[int, int, int]]:
    return [tuple(map(int, NAME.match(f.name).groups()[:3])) for f in sorted((root / split).iterdir())]


def test_training_outfit_knob_is_separate_from_test_outfits(tmp_path: Path) -> None:
    cfg = with_overrides(PEOPLE_PRESETS["tiny"], {"train_outfits_per_person": "7", "train_cams_per_outfit": "2",
                                                  "train_images_per_cam": "1"})
    generate_people(cfg, 1, tmp_path, log=_quiet)
    train, query, gallery = (_records(tmp_path, s) for s in ("train", "query", "test"))
    per_train = {}
    for pid, clothes, _cam in train:
        per_train.setdefault(pid, set()).add(clothes)
    assert len(per_train) == cfg.n_train and all(len(c) == 7 for c in per_train.values())
    assert len(train) == cfg.n_train * 7 * 2 * 1
    per_test = {}
    for pid, clothes, _cam in query + gallery:
        per_test.setdefault(pid, set()).add(clothes)
    assert len(per_test) == cfg.n_test and all(len(c) == cfg.outfits_per_person for c in per_test.values())
    assert len(query) + len(gallery) == cfg.n_test * cfg.outfits_per_person * cfg.cams_per_outfit * cfg.images_per_cam
    # A training person's outfits are distinct outfits (uids), not copies.
    meta = json.loads((tmp_path / "meta.json").read_text())
    uids = [meta["outfits"][f"1_{k}"]["uid"] for k in range(1, 8)]
    assert len(set(uids)) == 7
    # The bench preset is v2: many outfits per training person, >= 100 test people, >= 300 queries.
    bench = PEOPLE_PRESETS["bench"]
    assert bench.train_outfits >= 12 and 3 <= bench.outfits_per_person <= 4
    assert bench.n_test >= 100 and bench.n_test * bench.outfits_per_person * bench.query_per_outfit >= 300


def test_bodies_are_keyed_by_split_so_sets_never_share_test_people(tmp_path: Path) -> None:
    small = with_overrides(PEOPLE_PRESETS["tiny"], {"images_per_cam": "1"})
    big = replace(small, n_train=3 * small.n_train)
    generate_people(small, 2, tmp_path / "small", log=_quiet)
    generate_people(big, 2, tmp_path / "big", log=_quiet)

    def bodies(root: Path, split: str) -> list[tuple[float, ...]]:
        ids = json.loads((root / "meta.json").read_text())["identities"]
        return [tuple(v["body"]) for _, v in sorted(ids.items(), key=lambda kv: int(kv[0])) if v["split"] == split]

    small_test, big_train = bodies(tmp_path / "small", "test"), bodies(tmp_path / "big", "train")
    assert len(big_train) == big.n_train
    assert not set(small_test) & set(big_train), "a bigger set's training people include another set's test people"
    # Test people do not depend on how many training people a set has; training people are the same prefix.
    assert small_test == bodies(tmp_path / "big", "test")
    assert bodies(tmp_path / "small", "train") == big_train[: small.n_train]


def test_near_and_far_cameras_are_balanced(tmp_path: Path) -> None:
    for seed in range(4):
        cfg = with_overrides(PEOPLE_PRESETS["tiny"], {"n_cameras": "4", "images_per_cam": "1", "n_train": "2",
                                                      "n_test": "2"})
        out = tmp_path / str(seed)
        generate_people(cfg, seed, out, log=_quiet)
        cams = json.loads((out / "meta.json").read_text())["cameras"]
        near = [c["near"] for c in cams.values()]
        assert sum(near) == 2, (seed, near)
        for c in cams.values():
            assert (c["person_px"][0] >= 90) == c["near"]


def test_masks_cover_every_pixel_the_person_reaches_and_all_clothes_colour() -> None:
    """No clothes-colour rim outside the masks: the mask marks every pixel whose colour the person (and,
    as clothes, every pixel the clothes) contributed to, before the camera model."""
    rng = np.random.default_rng(0)
    cam = sample_camera(R.rng_for(0, R.CAMERA, 1), 1, (384, 288), near=False)
    for i in range(12):
        body = sample_body(R.rng_for(9, R.IDENTITY, i))
        outfit = sample_outfit(np.random.default_rng(100 + i), uid=i)
        acc = Accessories(glasses=True, bag_type="backpack", bag_rgb=(0.2, 0.6, 0.2)) if i % 2 else None
        _img, cov, _info = compose_crop(body, outfit, cam, rng, (128, 64), acc)
        labels = coverage_labels(cov)
        person = cov[..., 1:].sum(-1) > 1e-6
        clothes = cov[..., list(CLOTHES_LABELS)].sum(-1) > 1e-6
        assert np.array_equal(person, labels > 0)
        assert np.isin(labels[clothes], CLOTHES_LABELS).all()
        # The sprite itself: every pixel with any alpha has a label, and no label sits where there is none.
        sp = render_person(body, outfit, Pose(yaw=0.3 * i, phase=0.5 * i), float(rng.uniform(40, 170)), acc=acc)
        assert np.array_equal(sp.alpha > 0, sp.labels > 0)


def test_accessories_persist_across_a_persons_outfits(tmp_path: Path) -> None:
    cfg = with_overrides(PEOPLE_PRESETS["tiny"], {"accessories": "1.0", "train_outfits_per_person": "4"})
    generate_people(cfg, 0, tmp_path, log=_quiet)
    meta = json.loads((tmp_path / "meta.json").read_text())
    for pid, ident in meta["identities"].items():
        acc = ident["accessories"]
        assert acc["glasses"] and acc["bag_type"] in ("backpack", "shoulder"), (pid, acc)
    # The accessory label shows up in (nearly) every outfit of every person: the bag goes with the person.
    seen: dict[tuple[int, int], bool] = {}
    for split in ("train", "query", "test"):
        for f in sorted((tmp_path / split).iterdir()):
            pid, clothes = map(int, NAME.match(f.name).groups()[:2])
            mask = cv2.imread(str(tmp_path / "masks" / split / f.name), cv2.IMREAD_UNCHANGED)
            seen[(pid, clothes)] = seen.get((pid, clothes), False) or bool((mask == 7).any())
    assert np.mean(list(seen.values())) >= 0.9, seen
    # Off by default: the same seed without accessories has none.
    off = generate_people(replace(cfg, accessories=0.0), 0, tmp_path / "off", log=_quiet)
    assert off["counts"]["train"] > 0
    meta_off = json.loads((tmp_path / "off" / "meta.json").read_text())
    assert not any(i["accessories"]["glasses"] or i["accessories"]["bag_type"] != "none"
                   for i in meta_off["identities"].values())


def test_grey_clothes_knob_removes_clothes_colour_only(tmp_path: Path) -> None:
    cfg = with_overrides(PEOPLE_PRESETS["tiny"], {"images_per_cam": "1"})
    generate_people(cfg, 0, tmp_path / "colour", log=_quiet)
    generate_people(replace(cfg, clothes_grey=True), 0, tmp_path / "grey", log=_quiet)
    chroma_clothes, chroma_skin = [], []
    for f in sorted((tmp_path / "grey" / "train").iterdir()):
        img = cv2.imread(str(f))
        mask = cv2.imread(str(tmp_path / "grey" / "masks" / "train" / f.name), cv2.IMREAD_UNCHANGED)
        assert np.array_equal(mask, cv2.imread(str(tmp_path / "colour" / "masks" / "train" / f.name),
                                               cv2.IMREAD_UNCHANGED)), "painting clothes grey must not move parts"
        inner = cv2.erode(np.isin(mask, (3, 4)).astype(np.uint8), np.ones((3, 3), np.uint8)).astype(bool)
        hsv = cv2.cvtColor(img, cv2.COLOR_BGR2HSV)
        if inner.any():
            chroma_clothes.append(float(hsv[..., 1][inner].mean()))
        skin = cv2.erode((mask == 1).astype(np.uint8), np.ones((3, 3), np.uint8)).astype(bool)
        if skin.any():
            chroma_skin.append(float(hsv[..., 1][skin].mean()))
    # Camera white balance tints everything a little; grey clothes stay far less saturated than skin.
    assert np.mean(chroma_clothes) < 0.5 * np.mean(chroma_skin), (np.mean(chroma_clothes), np.mean(chroma_skin))


def test_camera_seed_films_the_same_people_with_another_sets_cameras(tiny_people: Path, tmp_path: Path) -> None:
    """`camera_seed`: seed 3's people, outfits and shots under seed 4's cameras (the new-camera half of the
    new-people-on-new-cameras gap), through the CLI's --set."""
    cmd = [sys.executable, "-m", "synth", "people", "--preset", "tiny", "--seed", "3", "--set", "camera_seed=4",
           "--out", str(tmp_path / "recam")]
    subprocess.run(cmd, cwd=REPO, check=True, capture_output=True, timeout=120)
    generate_people(PEOPLE_PRESETS["tiny"], 4, tmp_path / "four", preset="tiny", log=_quiet)
    own, recam, four = (json.loads((p / "meta.json").read_text()) for p in (tiny_people, tmp_path / "recam",
                                                                          tmp_path / "four"))
    assert recam["identities"] == own["identities"] and recam["outfits"] == own["outfits"]
    assert recam["cameras"] == four["cameras"] != own["cameras"]
    assert recam["config"]["camera_seed"] == 4
    rows = lambda p: [r.split(",")[:6] for r in (p / "images.csv").read_text().splitlines()]  # noqa: E731
    assert rows(tmp_path / "recam") == rows(tiny_people)  # the same shots: file, split, person, outfit, camera
    a, b = _tree(tiny_people), _tree(tmp_path / "recam")
    pngs = [k for k in a if k.startswith("train/")]
    assert sum(a[k] != b[k] for k in pngs) > 0.9 * len(pngs)  # filmed differently
    with pytest.raises(ValueError, match="camera_seed"):
        generate_people(replace(PEOPLE_PRESETS["tiny"], camera_seed=-2), 3, tmp_path / "bad", log=_quiet)


def test_camera_parts_take_only_the_named_parts_of_the_other_cameras(tiny_people: Path, tmp_path: Path) -> None:
    cfg = with_overrides(PEOPLE_PRESETS["tiny"], {"camera_seed": "4", "camera_parts": "colour,sharpness,view"})
    generate_people(cfg, 3, tmp_path / "mixed", log=_quiet)
    generate_people(PEOPLE_PRESETS["tiny"], 4, tmp_path / "four", log=_quiet)
    own, mixed, four = (json.loads((p / "meta.json").read_text())["cameras"]
                        for p in (tiny_people, tmp_path / "mixed", tmp_path / "four"))
    photometric = ("gain", "white_balance", "gamma", "blur_sigma", "noise_sigma", "jpeg_quality")
    for c in own:
        for key in (*photometric, "yaws_deg"):
            assert mixed[c][key] == four[c][key]
        for key in ("person_px", "occlusion_prob", "near"):
            assert mixed[c][key] == own[c][key]
    with pytest.raises(ValueError, match="camera_parts"):
        with_overrides(PEOPLE_PRESETS["tiny"], {"camera_seed": "4", "camera_parts": "lens"})


def test_inverse_colour_lut_undoes_the_cameras_colour_table():
    from dataclasses import replace

    from synth.camera import apply_camera, inverse_colour_lut, sample_camera

    for cam_id in range(4):
        cam = sample_camera(R.rng_for(7, R.CAMERA, cam_id), cam_id, (64, 32), None, 0.0)
        cam = replace(cam, blur_sigma=0.0, noise_sigma=0.0, jpeg_quality=0)
        rgb = np.random.default_rng(cam_id).uniform(0.15, 0.75, (32, 16, 3))
        seen = apply_camera(rgb, cam, np.random.default_rng(0), gain_jitter=0.0,
                            noise=np.zeros((32, 16, 3), np.int16))
        undone = cv2.LUT(seen, inverse_colour_lut(cam.white_balance, cam.gain, cam.gamma)).astype(int)
        truth = (rgb[..., ::-1] * 255 + 0.5).astype(int)
        assert np.abs(seen.astype(int) - truth).mean() > 3  # the camera changed the colours
        assert np.abs(undone - truth).max() <= 3, cam
