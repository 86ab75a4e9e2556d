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
from synth.outfit import sample_outfit
from synth.people import generate_people
from synth.presets import PEOPLE_PRESETS, with_overrides
from synth.render import Pose, render_person

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
                              "6": "outerwear_bag"}
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
            assert mask.max() <= 6
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
