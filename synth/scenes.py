"""Multi-camera scene generator: videos, MOTChallenge ground truth with global ids, sightings.

Cameras are synchronised (frame f of every video is the same instant). Each person walks
through ``cams_per_person`` cameras one after another, entering from a frame edge (or
from the far end of the floor) and leaving at another; between cameras they may put on
another of their outfits. Ground-plane perspective sets each person's pixel height from
the foot position; static objects in front of the walkway occlude people.
"""

from __future__ import annotations

import math
import shutil
import time
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path

import cv2
import numpy as np

from . import rng as R
from .body import BODY_FIELDS, Body, sample_body
from .camera import Camera, apply_camera, bank_noise, noise_bank, sample_camera
from .io import prepare_out, write_json
from .outfit import sample_wardrobes
from .presets import SceneConfig, config_json
from .render import Pose, render_person

VERSION = 1
_FOURCC = {".mp4": "mp4v", ".avi": "MJPG"}


@dataclass
class _Geometry:
    """Flat-floor perspective: person height in pixels = k * (foot_y - horizon_y)."""

    horizon: float
    k: float
    y_top: float  # nearest-to-horizon foot row people use
    y_bottom: float

    def px_height(self, foot_y: float, body_h: float) -> float:
        return max(1.0, self.k * (foot_y - self.horizon)) * body_h / 1.75


@dataclass
class _Occluder:
    x0: int
    y0: int
    x1: int
    y1: int
    foot_y: float  # depth order: people with a foot row below this are in front
    rgb: tuple[float, float, float]


@dataclass
class _Visit:
    gid: int
    cam: int
    clothes: int  # 1-based
    t0: int  # frame index (0-based) at which the walk starts; may be negative
    track: list[tuple[float, float, float, float]]  # per frame: foot x, foot y, yaw, phase


def _geometry(rng: np.random.Generator, w: int, h: int) -> _Geometry:
    horizon = h * float(rng.uniform(-0.35, 0.15))
    bottom_px = h * float(rng.uniform(0.5, 0.7))  # a person's height with feet on the bottom row
    k = bottom_px / (h - horizon)
    y_top = horizon + (h * 0.24) / k  # where people are ~24% of the frame height
    return _Geometry(horizon, k, max(y_top, h * 0.3), h - 2.0)


def _occluders(rng: np.random.Generator, geo: _Geometry, w: int, h: int, n: int) -> list[_Occluder]:
    out = []
    for _ in range(n):
        fy = float(rng.uniform(geo.y_top + 0.3 * (geo.y_bottom - geo.y_top), geo.y_bottom))
        ppm = geo.k * (fy - geo.horizon) / 1.75  # pixels per metre at that row
        if rng.uniform() < 0.5:  # pillar up to the top of the frame
            ow = 0.35 * ppm
            x = float(rng.uniform(0.1, 0.9)) * w
            box = (int(x - ow / 2), 0, int(x + ow / 2), int(fy))
        else:  # planter / bench
            ow, oh = 1.3 * ppm, 0.6 * ppm
            x = float(rng.uniform(0.1, 0.9)) * w
            box = (int(x - ow / 2), int(fy - oh), int(x + ow / 2), int(fy))
        col = rng.uniform(0.15, 0.7, 3)
        out.append(_Occluder(*box, foot_y=fy, rgb=(float(col[0]), float(col[1]), float(col[2]))))
    return out


def _walk(rng: np.random.Generator, geo: _Geometry, w: int, h: int, body: Body, fps: int) -> list[tuple[float, float, float, float]]:
    """A straight walk from one edge of the floor to another, one entry per frame."""
    edges = ["left", "right", "bottom", "far"]
    a = str(rng.choice(edges))
    b = str(rng.choice([e for e in edges if e != a]))

    def point(edge: str) -> tuple[float, float]:
        y = float(rng.uniform(geo.y_top, geo.y_bottom))
        margin = 0.25 * geo.px_height(y, body.height_m)
        if edge == "left":
            return -margin, y
        if edge == "right":
            return w + margin, y
        if edge == "bottom":
            return float(rng.uniform(0.1, 0.9)) * w, h + 0.15 * geo.px_height(h, body.height_m)
        return float(rng.uniform(0.15, 0.85)) * w, geo.y_top

    (x, y), (x1, y1) = point(a), point(b)
    speed = body.height_m * 0.41 * body.cadence * (body.stride / 0.42) * 0.95 * float(rng.uniform(0.85, 1.15))  # m/s
    phase = float(rng.uniform(0, 2 * math.pi))
    track = []
    for _ in range(100000):
        dx, dy = x1 - x, y1 - y
        dist = math.hypot(dx, dy)
        ppm = geo.px_height(min(max(y, geo.horizon + 1.0), h * 1.5), body.height_m) / body.height_m
        step = speed * ppm / fps
        # Facing from the motion on the floor: image rows are foreshortened, so weigh them up.
        yaw = math.atan2(-dx, 2.5 * dy)
        track.append((x, y, yaw, phase))
        if dist <= step:
            break
        x += dx / dist * step
        y += dy / dist * step
        phase += math.pi * body.cadence / fps
    return track


def _plan(cfg: SceneConfig, seed: int, geos: dict[int, _Geometry], bodies: dict[int, Body]) -> list[_Visit]:
    visits: list[_Visit] = []
    for gid in range(1, cfg.n_people + 1):
        rng = R.rng_for(seed, R.SCENE_ROUTE, gid)
        # Without an outfit seed the outfits come from the route's stream (scenes made before it stay identical).
        outfit_rng = rng if cfg.outfit_seed < 0 else R.rng_for(cfg.outfit_seed, R.SCENE_OUTFIT_PLAN, gid)
        cams = [int(c) + 1 for c in rng.permutation(cfg.n_cameras)[: cfg.cams_per_person]]
        walks = [_walk(rng, geos[c], cfg.width, cfg.height, bodies[gid], cfg.fps) for c in cams]
        gaps = [int(rng.uniform(0.5, 2.5) * cfg.fps) for _ in cams]
        total = sum(len(wk) for wk in walks) + sum(gaps[:-1])
        # Start so that most of the route falls inside the video.
        lo = -len(walks[0]) // 2
        hi = max(lo + 1, cfg.frames - total // 2)
        t = int(rng.integers(lo, hi))
        clothes = 1 if cfg.outfit_seed < 0 else 1 + int(outfit_rng.integers(0, cfg.outfits_per_person))
        for j, (c, wk) in enumerate(zip(cams, walks)):
            if j > 0 and cfg.outfits_per_person > 1 and outfit_rng.uniform() < cfg.change_prob:
                clothes = 1 + (clothes + int(outfit_rng.integers(0, cfg.outfits_per_person - 1))) % cfg.outfits_per_person
            visits.append(_Visit(gid, c, clothes, t, wk))
            t += len(wk) + gaps[j]
    return visits


def _ensure_change(visits: list[_Visit], cfg: SceneConfig) -> list[_Visit]:
    """Guarantee that someone changes clothes between cameras inside the video (the point of the data)."""
    by_gid: dict[int, list[_Visit]] = {}
    for v in visits:
        by_gid.setdefault(v.gid, []).append(v)
    inside = lambda v: v.t0 < cfg.frames and v.t0 + len(v.track) > 0  # noqa: E731
    for vs in by_gid.values():
        seen = [v for v in vs if inside(v)]
        if len({v.clothes for v in seen}) > 1:
            return visits
    if cfg.outfits_per_person < 2:
        return visits
    for vs in by_gid.values():
        seen = [v for v in vs if inside(v)]
        if len(seen) >= 2:
            last = seen[-1]
            last.clothes = 1 + last.clothes % cfg.outfits_per_person
            return visits
    return visits


@dataclass(frozen=True)
class ScriptedVisit:
    person: int  # 1-based
    camera: int  # 1-based
    outfit: int  # 1-based, of that person's wardrobe
    start: int  # frame (0-based) at which the walk starts


@dataclass(frozen=True)
class SceneScript:
    """Who walks through which camera, when, in which outfit; for scenes a test or a demo needs exactly.

    `shared` lists outfits one person wears exactly as another: (person, outfit, other person, other outfit).
    `bodies` sets some body parameters of a person (e.g. skin_tone, height_m, hair_rgb), so a test can ask for
    people who are told apart by their body alone; everything else (bodies, walks, cameras, outfits) is drawn
    from the seed."""

    people: int
    outfits_per_person: int
    visits: tuple[ScriptedVisit, ...]
    shared: tuple[tuple[int, int, int, int], ...] = ()
    bodies: tuple[tuple[int, tuple[tuple[str, object], ...]], ...] = ()

    @classmethod
    def load(cls, path: Path) -> "SceneScript":
        import yaml

        try:
            raw = yaml.safe_load(Path(path).read_text())
        except (OSError, yaml.YAMLError) as exc:
            raise ValueError(f"scene script {path}: cannot read it as YAML ({exc})") from exc
        if not isinstance(raw, dict) or set(raw) - {"people", "outfits_per_person", "visits", "shared", "bodies"}:
            raise ValueError(f"scene script {path}: expected a mapping with keys people, outfits_per_person, visits "
                             "and optionally shared and bodies")
        try:
            visits = tuple(ScriptedVisit(int(v["person"]), int(v["camera"]), int(v["outfit"]), int(v["start"]))
                           for v in raw["visits"])
            shared = tuple((int(x["person"]), int(x["outfit"]), int(x["as_person"]), int(x["as_outfit"]))
                           for x in raw.get("shared") or [])
            bodies = tuple((int(person), tuple(sorted(dict(params).items())))
                           for person, params in (raw.get("bodies") or {}).items())
            return cls(int(raw["people"]), int(raw.get("outfits_per_person", 1)), visits, shared, bodies)
        except (KeyError, TypeError, ValueError) as exc:
            raise ValueError(f"scene script {path}: every visit needs person, camera, outfit and start, every shared "
                             f"entry person, outfit, as_person and as_outfit (integers), bodies a mapping of person "
                             f"to body parameters: {exc!r}") from exc

    def body(self, person: int, drawn: Body) -> Body:
        """`drawn` with this script's parameters for `person`, each converted to the type of the drawn value."""
        params = {}
        for key, value in dict(self.bodies).get(person, ()):
            current = getattr(drawn, key)
            try:
                if isinstance(current, tuple):
                    params[key] = tuple(float(v) for v in value)
                    if len(params[key]) != len(current):
                        raise ValueError(f"needs {len(current)} values")
                else:
                    params[key] = type(current)(value)
            except (TypeError, ValueError) as exc:
                raise ValueError(f"scene script: bodies of person {person}: {key}={value!r} is not a "
                                 f"{type(current).__name__} like {current!r} ({exc})") from exc
        return replace(drawn, **params)

    def validate(self, cfg: SceneConfig) -> None:
        for v in self.visits:
            if not (1 <= v.person <= self.people and 1 <= v.camera <= cfg.n_cameras
                    and 1 <= v.outfit <= self.outfits_per_person and 0 <= v.start < cfg.frames):
                raise ValueError(f"scene script: visit {v} is outside people 1-{self.people}, cameras "
                                 f"1-{cfg.n_cameras}, outfits 1-{self.outfits_per_person}, start 0-{cfg.frames - 1}")
        for p, o, q, r in self.shared:
            if not (1 <= p <= self.people and 1 <= q <= self.people and p != q
                    and 1 <= o <= self.outfits_per_person and 1 <= r <= self.outfits_per_person):
                raise ValueError(f"scene script: shared outfit ({p}, {o}) as ({q}, {r}) names an unknown person/outfit")
        known = {f.name for f in fields(Body)}
        for person, params in self.bodies:
            if not 1 <= person <= self.people:
                raise ValueError(f"scene script: bodies names person {person}, outside 1-{self.people}")
            unknown = sorted(k for k, _ in params if k not in known)
            if unknown:
                raise ValueError(f"scene script: bodies of person {person}: unknown parameter(s) {', '.join(unknown)}; "
                                 f"known: {', '.join(sorted(known))}")
            self.body(person, sample_body(np.random.default_rng(0)))  # values of the wrong type fail here, early


def _scripted_plan(script: SceneScript, cfg: SceneConfig, seed: int, geos: dict[int, _Geometry],
                   bodies: dict[int, Body]) -> list[_Visit]:
    visits = []
    for k, v in enumerate(script.visits):
        rng = R.rng_for(seed, R.SCENE_ROUTE, v.person, k)
        visits.append(_Visit(v.person, v.camera, v.outfit, v.start,
                             _walk(rng, geos[v.camera], cfg.width, cfg.height, bodies[v.person], cfg.fps)))
    return visits


@dataclass
class SceneWorld:
    """Everything a scene's frames are drawn from (people, outfits, cameras, walks), rebuilt from its seed."""

    cfg: SceneConfig
    bodies: dict[int, Body]
    wardrobes: list
    cams: dict[int, Camera]
    geos: dict[int, _Geometry]
    occs: dict[int, list[_Occluder]]
    banks: dict[int, np.ndarray]
    visits: list[_Visit]

    def camera_visits(self, c: int) -> list[_Visit]:
        return [v for v in self.visits if v.cam == c]

    def compose(self, f: int, c: int, mine: list[_Visit], labels: bool = False):
        """Frame f (0-based) of camera c: (float RGB frame, gt) or, with `labels`, (frame, gt, owner, parts):
        owner per pixel (index into `mine`, -1 occluder, -2 nobody) and each visible person pixel's part label."""
        return _compose(f, mine, self.cams[c], self.geos[c], self.occs[c], self.bodies, self.wardrobes,
                        self.cfg.width, self.cfg.height, labels)


def build_world(cfg: SceneConfig, seed: int, backgrounds: list[Path] | None = None,
                script: SceneScript | None = None, noise: bool = True) -> SceneWorld:
    """The scene's people, outfits, cameras and walks (the random draws of `generate_scenes`, in its order).
    `noise=False` skips the cameras' sensor-noise banks (their last draw, and most of the time), which only the
    video needs."""
    if script is not None:
        cfg = replace(cfg, n_people=script.people, outfits_per_person=script.outfits_per_person)
        script.validate(cfg)
    cfg.validate()
    W, H = cfg.width, cfg.height
    pseed = seed if cfg.people_seed < 0 else cfg.people_seed
    bodies = {g: sample_body(R.rng_for(pseed, R.SCENE_PEOPLE, g), cfg.body_distinct) for g in range(1, cfg.n_people + 1)}
    if script is not None:
        bodies = {g: script.body(g, b) for g, b in bodies.items()}
    oseed = pseed if cfg.outfit_seed < 0 else cfg.outfit_seed
    wardrobes = sample_wardrobes(
        cfg.n_people, cfg.outfits_per_person, cfg.outfit_share, max(3, cfg.n_people * cfg.outfits_per_person // 3),
        lambda i: R.rng_for(oseed, R.OUTFIT, 1_000_000 + i), lambda j: R.rng_for(oseed, R.OUTFIT_POOL, 1_000_000 + j),
    )
    if script is not None:
        for p, o, q, r in script.shared:
            wardrobes[p - 1][o - 1] = wardrobes[q - 1][r - 1]
    cams: dict[int, Camera] = {}
    geos: dict[int, _Geometry] = {}
    occs: dict[int, list[_Occluder]] = {}
    banks: dict[int, np.ndarray] = {}
    for c in range(1, cfg.n_cameras + 1):
        rng = R.rng_for(seed, R.SCENE_LAYOUT, c)
        # Video frames: no per-image JPEG round trip (the codec compresses) and almost no flicker.
        cams[c] = replace(sample_camera(rng, c, (W, H), backgrounds), jpeg_quality=0)
        geos[c] = _geometry(rng, W, H)
        occs[c] = _occluders(rng, geos[c], W, H, cfg.occluders)
        if noise:
            banks[c] = noise_bank(rng, cams[c], H, W)
    visits = (_scripted_plan(script, cfg, pseed, geos, bodies) if script is not None
              else _ensure_change(_plan(cfg, pseed, geos, bodies), cfg))
    return SceneWorld(cfg, bodies, wardrobes, cams, geos, occs, banks, visits)


def world_of(root: Path) -> SceneWorld:
    """The world of a `synth scenes` output, rebuilt from its sightings.json (config, seed, script). Scenes
    drawn over --backgrounds cannot be rebuilt this way (their cameras drew from the videos)."""
    import json

    meta = json.loads((Path(root) / "sightings.json").read_text())
    raw = meta.get("script")
    script = None
    if raw:
        script = SceneScript(int(raw["people"]), int(raw["outfits_per_person"]),
                             tuple(ScriptedVisit(**v) for v in raw["visits"]),
                             tuple(tuple(x) for x in raw.get("shared") or ()),
                             tuple((int(p), tuple(tuple(kv) for kv in params)) for p, params in raw.get("bodies") or ()))
    return build_world(SceneConfig(**meta["config"]), int(meta["seed"]), script=script, noise=False)


def generate_scenes(cfg: SceneConfig, seed: int, out: Path, preset: str = "custom",
                    backgrounds: list[Path] | None = None, force: bool = False, log=print,
                    script: SceneScript | None = None) -> dict:
    world = build_world(cfg, seed, backgrounds, script)
    cfg = world.cfg
    t_start = time.perf_counter()
    prepare_out(out, force)
    # With --force, clear only what an earlier scene run wrote here.
    for sub in ("gt", "seqinfo"):
        if (out / sub).exists():
            shutil.rmtree(out / sub)
        (out / sub).mkdir()
    for old in list(out.glob("cam[0-9][0-9].mp4")) + list(out.glob("cam[0-9][0-9].avi")):
        old.unlink()
    W, H = cfg.width, cfg.height
    bodies, wardrobes, cams, banks = world.bodies, world.wardrobes, world.cams, world.banks

    sightings = []
    cam_meta = []
    n_rows = 0
    for c in range(1, cfg.n_cameras + 1):
        name = f"cam{c:02d}"
        video = out / f"{name}{cfg.video_ext}"
        writer = cv2.VideoWriter(str(video), cv2.VideoWriter_fourcc(*_FOURCC[cfg.video_ext]), cfg.fps, (W, H))
        if not writer.isOpened():
            raise RuntimeError(f"OpenCV could not open a {cfg.video_ext} writer for {video} (codec {_FOURCC[cfg.video_ext]})")
        mine = world.camera_visits(c)
        rows: list[str] = []
        seen: dict[int, list[int]] = {i: [] for i in range(len(mine))}
        for f in range(cfg.frames):
            frame, gt = world.compose(f, c, mine)
            frng = R.rng_for(seed, R.SCENE_FRAME, c, f)
            bgr = apply_camera(frame, cams[c], frng, gain_jitter=0.01, noise=bank_noise(banks[c], frng))
            writer.write(bgr)
            for i, (x, y, bw, bh, vis) in gt:
                rows.append(f"{f + 1},{mine[i].gid},{x:.2f},{y:.2f},{bw:.2f},{bh:.2f},1,1,{vis:.3f}")
                seen[i].append(f + 1)
        writer.release()
        rows.sort(key=lambda r: (int(r.split(",")[0]), int(r.split(",")[1])))
        (out / "gt" / f"{name}.txt").write_text("".join(r + "\n" for r in rows))
        n_rows += len(rows)
        (out / "seqinfo" / f"{name}.ini").write_text(
            f"[Sequence]\nname={name}\nimDir=img1\nframeRate={cfg.fps}\nseqLength={cfg.frames}\n"
            f"imWidth={W}\nimHeight={H}\nimExt=.jpg\nvideo={video.name}\n"
        )
        for i, v in enumerate(mine):
            if seen[i]:
                o = wardrobes[v.gid - 1][v.clothes - 1]
                sightings.append({
                    "camera": name, "global_id": v.gid, "first_frame": seen[i][0], "last_frame": seen[i][-1],
                    "clothes": v.clothes, "outfit": f"{v.gid}_{v.clothes}", "outfit_uid": o.uid,
                })
        cam_meta.append({"id": name, "video": video.name, "gt": f"gt/{name}.txt", "width": W, "height": H,
                         "fps": cfg.fps, "frames": cfg.frames, **{k: v for k, v in cams[c].to_json().items() if k != "cam_id"}})
    sightings.sort(key=lambda s: (s["global_id"], s["first_frame"], s["camera"]))
    used = {(s["global_id"], s["clothes"]) for s in sightings}
    meta = {
        "preset": preset, "seed": seed, "version": VERSION, "config": config_json(cfg),
        "script": asdict(script) if script is not None else None,
        "frame_numbering": "1-based (MOTChallenge)",
        "body_fields": list(BODY_FIELDS),
        "identities": {str(g): {"body": [round(float(x), 6) for x in bodies[g].vector()], "params": bodies[g].to_json()}
                       for g in bodies},
        "outfits": {f"{g}_{k}": wardrobes[g - 1][k - 1].to_json() for g, k in sorted(used)},
        "cameras": cam_meta,
        "sightings": sightings,
    }
    write_json(out / "sightings.json", meta)
    lines = [f"# SynthCC scene (preset {preset}, seed {seed}); video paths are relative to this file.", "cameras:"]
    for cm in cam_meta:
        lines += [f"  - id: {cm['id']}", f"    source: {cm['video']}"]
    (out / "cameras.yaml").write_text("\n".join(lines) + "\n")
    changes = _count_changes(sightings)
    secs = time.perf_counter() - t_start
    log(f"synth scenes: preset={preset} seed={seed} -> {out}: {cfg.n_cameras} cameras x {cfg.frames} frames, "
        f"{len(sightings)} sightings of {len({s['global_id'] for s in sightings})} people, "
        f"{changes} outfit changes between cameras, {n_rows} gt boxes, {secs:.1f} s")
    return {"sightings": len(sightings), "changes": changes, "gt_rows": n_rows, "seconds": secs}


def _count_changes(sightings: list[dict]) -> int:
    by: dict[int, list[dict]] = {}
    for s in sightings:
        by.setdefault(s["global_id"], []).append(s)
    return sum(1 for ss in by.values() for a, b in zip(ss, ss[1:]) if a["clothes"] != b["clothes"])


def _compose(f, visits, cam, geo, occluders, bodies, wardrobes, W, H, labels: bool = False):
    """One frame (float RGB) and its gt: list of (visit index, (x, y, w, h, visibility)); with `labels` also
    the owner map and the part label (synth.render.LABELS) of every person pixel."""
    frame = cam.background.copy()
    owner = np.full((H, W), -2, np.int32)  # -2 nobody, -1 occluder, i person
    parts = np.zeros((H, W), np.uint8) if labels else None
    items = []  # (foot_y, kind, payload)
    for i, v in enumerate(visits):
        j = f - v.t0
        if 0 <= j < len(v.track):
            items.append((v.track[j][1], 1, i))
    for o in occluders:
        items.append((o.foot_y, 0, o))
    items.sort(key=lambda t: (t[0], t[1], t[2] if t[1] == 1 else 0))
    placed = {}
    for _, kind, p in items:
        if kind == 0:
            o = p
            x0, y0, x1, y1 = max(0, o.x0), max(0, o.y0), min(W, o.x1), min(H, o.y1)
            if x1 > x0 and y1 > y0:
                shade = np.linspace(0.8, 1.1, x1 - x0, dtype=np.float32)[None, :, None]
                frame[y0:y1, x0:x1] = np.array(o.rgb, np.float32) * shade
                owner[y0:y1, x0:x1] = -1
            continue
        i = p
        v = visits[i]
        x, y, yaw, phase = v.track[f - v.t0]
        body = bodies[v.gid]
        px = geo.px_height(y, body.height_m)
        if px < 8:
            continue
        sp = render_person(body, wardrobes[v.gid - 1][v.clothes - 1], Pose(yaw=yaw, phase=phase), px)
        ox = int(round(x - sp.foot[0]))
        oy = int(round(y - sp.foot[1]))
        sh, sw = sp.alpha.shape
        X0, Y0, X1, Y1 = max(0, ox), max(0, oy), min(W, ox + sw), min(H, oy + sh)
        full = sp.alpha > 0.5
        ys, xs = np.nonzero(sp.alpha > 0.1)
        if ys.size == 0:
            continue
        box = (ox + xs.min(), oy + ys.min(), ox + xs.max() + 1, oy + ys.max() + 1)
        placed[i] = (box, int(full.sum()))
        if X1 <= X0 or Y1 <= Y0:
            continue
        a = sp.alpha[Y0 - oy : Y1 - oy, X0 - ox : X1 - ox, None]
        frame[Y0:Y1, X0:X1] = frame[Y0:Y1, X0:X1] * (1.0 - a) + sp.rgb[Y0 - oy : Y1 - oy, X0 - ox : X1 - ox] * a
        owner[Y0:Y1, X0:X1][full[Y0 - oy : Y1 - oy, X0 - ox : X1 - ox]] = i
        if parts is not None:
            on = full[Y0 - oy : Y1 - oy, X0 - ox : X1 - ox]
            parts[Y0:Y1, X0:X1][on] = sp.labels[Y0 - oy : Y1 - oy, X0 - ox : X1 - ox][on]
    gt = []
    for i, (box, n_full) in placed.items():
        bx0, by0, bx1, by1 = box
        cx0, cy0, cx1, cy1 = max(0, bx0), max(0, by0), min(W, bx1), min(H, by1)
        full_area = (bx1 - bx0) * (by1 - by0)
        if cx1 <= cx0 or cy1 <= cy0 or (cx1 - cx0) * (cy1 - cy0) < 0.3 * full_area:
            continue  # mostly outside the frame
        vis = float((owner == i).sum()) / max(1, n_full)
        gt.append((i, (float(cx0), float(cy0), float(cx1 - cx0), float(cy1 - cy0), min(1.0, vis))))
    if labels:
        return frame, gt, owner, parts
    return frame, gt
