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
