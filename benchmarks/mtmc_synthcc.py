"""MTMC accuracy on SynthCC scenes: the whole pipeline (detect, track, ReID, cross-camera matching),
scored with global ids over all cameras as one sequence (TrackEval: IDF1, HOTA, MOTA).

    .venv/bin/python benchmarks/mtmc_synthcc.py [--preset tiny|bench] [--seeds 0,1] [--work DIR]
        [--models default cal=runs/cc_models/cal.safetensors ...] [--matcher threshold=0.5 ...]
        [--reid swap_check_per_second=0.5 ...]

`--models` compares ReID models on the same scenes and the same detections and tracks: `default` is the
pipeline's default same-clothes model (matcher thresholds from `--threshold` / `--outfit-threshold`), LABEL=FILE
any model file; a file calibrated with `python -m reid calibrate --write` runs with its own thresholds, so
nothing is tuned on the scenes. Every row also scores the same tracks with no cross-camera identity ("tracks
only"), and counts `identity.outfit_changed` events that are right: the event's track and an earlier track of
the same final identity are one ground-truth person in two different outfits.

For every seed two scene sets are generated with `python -m synth scenes`: everyone has one outfit
(`outfits_per_person=1`: no clothing change anywhere) and people change clothes at every camera change
(`outfits_per_person=2, change_prob=1`). Each scene
runs through `python -m pipeline run` (embedded store, no video output, `--mot-dir`); the final identity
of every local track is read back from the identity events (`track.ended`, with merges followed in the
store), so each MOT row gets its global identity. Cameras are then concatenated in time (camera k's frame
f becomes frame f + the frames of cameras before it) and evaluated as one sequence against the scene's
global ground truth, which is how MTMC IDF1 counts a cross-camera identity error as an ID error.

`--workers 2` splits each scene's cameras over two `pipeline run` processes started together that share one
private redis-server: the same evaluation then measures the multi-worker path (gallery log, atomic
commits, presence reports between workers). Times in the matcher are on the run clock (`pipeline/clock.py`:
each frame's position in its file, from the worker's start), so workers started together share a time line to
within their start-up difference, whatever pace each decodes at.

Also printed: identities created vs people in the scene, `identity.outfit_changed` events vs outfit
changes in the ground truth, merges, and every identity decision judged against the truth it had then
(`synth.truth.decision_kinds`: links made and missed through an outfit change, strangers joined).
"""

from __future__ import annotations

import argparse
import configparser
import contextlib
import json
import shutil
import subprocess
import sys
import time
from collections import Counter
from datetime import date
from pathlib import Path
from typing import Callable

import numpy as np
import yaml

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from machine import describe as describe_machine  # noqa: E402
from pipeline.config import ReidConfig  # noqa: E402
from pipeline.store import IdentityStore  # noqa: E402
from synth.truth import DECISION_KINDS, decision_kinds, outfit_event_check, track_people  # noqa: E402

SEQ = "synthcc-mtmc"


# SynthCC guarantees at least one outfit change per scene while a person has several outfits, so the
# scene set without changes gives everyone a single outfit.
SCENE_SETS = {"no": ["outfits_per_person=1", "change_prob=0"], "yes": ["outfits_per_person=2", "change_prob=1"]}


def generate(preset: str, seed: int, knobs: list[str], out: Path) -> None:
    if (out / "cameras.yaml").exists():
        return  # same preset/seed/knobs give byte-identical scenes: reuse
    cmd = [sys.executable, "-m", "synth", "scenes", "--preset", preset, "--seed", str(seed), "--out", str(out),
           "--force"] + [a for k in knobs for a in ("--set", k)]
    subprocess.run(cmd, cwd=ROOT, check=True, capture_output=True, text=True)


def run_pipeline(scene: Path, work: Path, matcher: dict, reid: dict, workers: int = 1,
                 colour_gains: dict[str, list[float]] | None = None,
                 prefill: Callable[[IdentityStore], None] | None = None,
                 detector: dict | None = None) -> tuple[float, Path]:
    """Run the scene's cameras through `python -m pipeline run`; returns (wall seconds, store directory).

    With `workers` > 1 the cameras are split round-robin over that many `pipeline run` processes started
    together, sharing one private redis-server (as several machines would share one Redis). `prefill` writes
    into the fresh store before the run what earlier runs on the site would have left there."""
    from pipeline.redis_server import RedisServer

    cfg = yaml.safe_load((scene / "cameras.yaml").read_text())
    cameras = [{**c, "source": str((scene / c["source"]).resolve()),
                **({"colour_gains": colour_gains[c["id"]]} if colour_gains else {})} for c in cfg["cameras"]]
    work.mkdir(parents=True, exist_ok=True)
    for old in [work / "mot", work / "store", *work.glob("out*")]:
        if old.exists():
            shutil.rmtree(old)
    server = None
    if workers == 1:
        groups, store_dir, store = [cameras], work / "out" / "store", "embedded"
    else:
        groups = [cameras[k::workers] for k in range(workers)]
        store_dir = work / "store"
        server = RedisServer(store_dir).start()
        store = server.url
    if prefill is not None:
        if server is not None:
            prefill(IdentityStore(server.client()))
        else:
            with RedisServer(store_dir) as srv:
                prefill(IdentityStore(srv.client()))
    procs = []
    t = time.perf_counter()
    try:
        for k, group in enumerate(groups):
            config = work / f"run{k}.yaml"
            config.write_text(yaml.safe_dump({"cameras": group, "store": store, "output": {"video": False},
                                              "matcher": matcher, "reid": reid,
                                              "detector": detector or {"every": 1}}))
            out = work / ("out" if workers == 1 else f"out{k}")
            procs.append(subprocess.Popen(
                [sys.executable, "-m", "pipeline", "run", str(config), "--output-dir", str(out),
                 "--mot-dir", str(work / "mot"), "--no-progress"],
                cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True))
        errors = [(p.wait(), p.stderr.read()) for p in procs]
    finally:
        for p in procs:
            if p.stderr:
                p.stderr.close()
        if server is not None:
            server.stop()
    wall = time.perf_counter() - t
    for rc, err in errors:
        if rc != 0:
            raise SystemExit(f"pipeline run failed ({rc}) on {scene}:\n{err[-3000:]}")
    return wall, store_dir


def read_identities(store_dir: Path) -> tuple[dict[tuple[str, int], int], list[dict], int]:
    """(camera, track id) -> final global identity; the events in order; identities not merged away."""
    from pipeline.redis_server import RedisServer
    from pipeline.store import IdentityStore

    with RedisServer(store_dir) as srv:
        store = IdentityStore(srv.client())
        events = [e for _, e in store.read_events()]
        final = {(e["camera_id"], e["track_id"]): store.resolve(e["identity_id"])
                 for e in events if e["type"] == "track.ended" and e["identity_id"] is not None}
        alive = len(store.identities(include_merged=False))
    return final, events, alive


def build_sequence(scene: Path, mot_dir: Path, final: dict, out: Path) -> tuple[int, int]:
    """Concatenate cameras in time into one gt and one tracker file; returns (sequence length, boxes
    whose identity was already on another box of the same frame)."""
    cams = [c["id"] for c in yaml.safe_load((scene / "cameras.yaml").read_text())["cameras"]]
    gt_rows, tr_rows, offset = [], [], 0
    used: set[tuple[int, int]] = set()
    duplicates = 0
    unlinked = 10_000_000  # tracks that never got an identity keep an id of their own
    own_ids: dict[tuple[str, int], int] = {}
    width = height = 0
    for cam in cams:
        ini = configparser.ConfigParser()
        ini.read(scene / "seqinfo" / f"{cam}.ini")
        length = int(ini["Sequence"]["seqLength"])
        width, height = int(ini["Sequence"]["imWidth"]), int(ini["Sequence"]["imHeight"])
        gt = np.loadtxt(scene / "gt" / f"{cam}.txt", delimiter=",", ndmin=2)
        for r in gt:
            gt_rows.append(f"{int(r[0]) + offset},{int(r[1])},{r[2]:.2f},{r[3]:.2f},{r[4]:.2f},{r[5]:.2f},1,1,1")
        mot = mot_dir / f"{cam}.txt"
        rows = np.loadtxt(mot, delimiter=",", ndmin=2) if mot.stat().st_size else np.zeros((0, 10))
        for r in rows:
            key = (cam, int(r[1]))
            ident = final.get(key)
            if ident is None or (int(r[0]) + offset, ident) in used:
                # No identity, or the identity already has a box in this frame (a matcher error that
                # TrackEval would refuse): the track counts under an id of its own, i.e. as ID errors.
                duplicates += ident is not None
                ident = own_ids.setdefault(key, unlinked + len(own_ids))
            used.add((int(r[0]) + offset, ident))
            tr_rows.append(f"{int(r[0]) + offset},{ident},{r[2]:.2f},{r[3]:.2f},{r[4]:.2f},{r[5]:.2f},{r[6]:.3f},-1,-1,-1")
        offset += length
    (out / "gt" / SEQ / "gt").mkdir(parents=True, exist_ok=True)
    (out / "gt" / SEQ / "gt" / "gt.txt").write_text("\n".join(gt_rows) + "\n")
    (out / "gt" / SEQ / "seqinfo.ini").write_text(
        f"[Sequence]\nname={SEQ}\nframeRate=10\nseqLength={offset}\nimWidth={width}\nimHeight={height}\n")
    (out / "trackers" / "pipeline" / "data").mkdir(parents=True, exist_ok=True)
    (out / "trackers" / "pipeline" / "data" / f"{SEQ}.txt").write_text("\n".join(tr_rows) + ("\n" if tr_rows else ""))
    if duplicates:
        print(f"warning: {duplicates} boxes had an identity already on another box of the same frame; "
              "they were scored as separate tracks", file=sys.stderr)
    return offset, duplicates


def trackeval_scores(root: Path, seq_len: int) -> dict:
    import trackeval

    dataset_cfg = trackeval.datasets.MotChallenge2DBox.get_default_dataset_config()
    dataset_cfg.update(GT_FOLDER=str(root / "gt"), TRACKERS_FOLDER=str(root / "trackers"), BENCHMARK="MOT15",
                       SEQ_INFO={SEQ: seq_len}, SKIP_SPLIT_FOL=True, TRACKERS_TO_EVAL=["pipeline"],
                       PRINT_CONFIG=False)
    eval_cfg = trackeval.Evaluator.get_default_eval_config()
    eval_cfg.update(PRINT_RESULTS=False, PRINT_CONFIG=False, OUTPUT_SUMMARY=False, OUTPUT_DETAILED=False,
                    PLOT_CURVES=False, OUTPUT_EMPTY_CLASSES=False, TIME_PROGRESS=False, DISPLAY_LESS_PROGRESS=True)
    with contextlib.redirect_stdout(sys.stderr):  # TrackEval prints its configs; keep stdout for the table
        metrics = [trackeval.metrics.HOTA(), trackeval.metrics.CLEAR(), trackeval.metrics.Identity()]
        res, _ = trackeval.Evaluator(eval_cfg).evaluate([trackeval.datasets.MotChallenge2DBox(dataset_cfg)], metrics)
    r = res["MotChallenge2DBox"]["pipeline"]["COMBINED_SEQ"]["pedestrian"]
    return {"IDF1": 100 * r["Identity"]["IDF1"], "HOTA": 100 * float(np.mean(r["HOTA"]["HOTA"])),
            "MOTA": 100 * r["CLEAR"]["MOTA"], "IDSW": int(r["CLEAR"]["IDSW"])}


def scene_truth(scene: Path) -> tuple[int, int]:
    """(people, outfit changes between consecutive sightings of a person)."""
    s = json.loads((scene / "sightings.json").read_text())["sightings"]
    by_person: dict[int, list] = {}
    for x in sorted(s, key=lambda x: x["first_frame"]):
        by_person.setdefault(x["global_id"], []).append(x["outfit"])
    changes = sum(sum(a != b for a, b in zip(o, o[1:])) for o in by_person.values())
    return len(by_person), changes


def scene_topology(scene: Path, min_s: float, max_s: float) -> dict:
    """matcher.topology with one transit window for every pair of the scene's cameras (SynthCC routes visit
    cameras in any order, so every pair is a possible walk)."""
    ids = [c["id"] for c in yaml.safe_load((scene / "cameras.yaml").read_text())["cameras"]]
    # A longer gap is a person who went through a camera where they were missed (or not linked), not an
    # impossibility: revisit_after_s = max_s allows it, at the plain threshold (matcher.window_threshold is for
    # arrivals inside the window).
    return {"transits": [{"cameras": [a, b], "min_s": min_s, "max_s": max_s}
                         for k, a in enumerate(ids) for b in ids[k + 1:]], "revisit_after_s": max_s}


def key_values(items: list[str], option: str) -> dict:
    """`KEY=VALUE` items (YAML values) of a command-line option as a mapping."""
    out = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not key or not sep:
            raise SystemExit(f"{option} {item!r}: expected KEY=VALUE")
        out[key] = yaml.safe_load(value)
    return out


def model_thresholds(model: str | None) -> dict | None:
    """The calibrated matcher thresholds a model file carries, if any (None: the pipeline's default model)."""
    from pipeline.config import ReidConfig
    from pipeline.models import resolve_model
    from reid.inference.factory import create_embedder

    model = model or ReidConfig().model
    return create_embedder(resolve_model(model), "onnxruntime" if model.endswith(".onnx") else "auto").spec.extra.get("matcher")


def scene_gains(scene: Path) -> dict[str, list[float]]:
    """Per camera, the B, G, R multipliers that take its box centres back to the neutral view."""
    from benchmarks.levelling_scene_gains import camera_means

    out = {}
    for cam in json.loads((scene / "sightings.json").read_text())["cameras"]:
        recorded, neutral, _ = camera_means(scene, cam, step=5, min_height=64)
        out[cam["id"]] = [float(v) for v in neutral / recorded]
    return out


def warm_colour_stats(scene: Path, region: str) -> dict[str, tuple[list[float], float]]:
    """Per camera, the colour sums and box count a run on `scene` (other people, the same cameras) would leave in
    the store: ground-truth boxes every 5th frame, 64 px or taller, means over `region` as the pipeline takes them."""
    from benchmarks.levelling_scene_gains import camera_means

    if not (scene / "sightings.json").is_file():
        raise SystemExit(f"{scene}: no sightings.json; make it with `python -m synth scenes ... --set people_seed=N`")
    out = {}
    for cam in json.loads((scene / "sightings.json").read_text())["cameras"]:
        recorded, _, n = camera_means(scene, cam, step=5, min_height=64, estimator=region)
        out[cam["id"]] = ([float(v) * n for v in recorded], float(n))
    return out


def warm_stats_from_run(warm_scene: Path, work: Path, matcher: dict, reid: dict,
                        detector: dict | None = None) -> dict[str, dict]:
    """Every per-camera statistic the pipeline itself leaves in its store after a run on `warm_scene` (other
    people, the same cameras; its detections, tracks and crops): each camera's colour levels
    (`<prefix>:camera_colour`) and identity-feature means (`<prefix>:camera_features`), as raw store hashes, so
    the scored run restores them exactly as a site's next run would, checks of region and model included. The
    identities of that run are dropped (the run is cached in `work`)."""
    from pipeline.redis_server import RedisServer

    if not (warm_scene / "cameras.yaml").is_file():
        raise SystemExit(f"{warm_scene}: no cameras.yaml; make it with `python -m synth scenes ... --set people_seed=N`")
    store_dir = work / "out" / "store"
    if not store_dir.is_dir():
        run_pipeline(warm_scene, work, matcher, reid, detector=detector)
    with RedisServer(store_dir) as srv:
        store = IdentityStore(srv.client())
        stats = {key: store.r.hgetall(key) for key in (store.camera_colour_key, store.camera_features_key)}
    if not any(stats.values()):
        raise SystemExit(f"{store_dir}: the warm-up run left no camera statistics (neither colour levels nor "
                         "feature means): is the model colour-levelled or `reid.centring: camera` set?")
    return stats


def put_raw_stats(stats: dict[str, dict]) -> Callable[[IdentityStore], None]:
    def prefill(store: IdentityStore) -> None:
        for key, fields in stats.items():
            if fields:
                store.r.hset(key, mapping=fields)
    return prefill


def put_colour_stats(stats: dict[str, tuple[list[float], float]], region: str) -> Callable[[IdentityStore], None]:
    return lambda store: store.save_camera_colour(stats, region)


def model_region(model: str | None) -> str | None:
    """Where a colour-levelled model's camera means are taken ("centre" or "person"); None: not levelled."""
    if model is None:
        return None
    from pipeline.models import resolve_model
    from reid.inference.factory import create_embedder
    from reid.inference.levelling import reference_of, region_of

    spec = create_embedder(resolve_model(model), "onnxruntime" if model.endswith(".onnx") else "auto").spec
    return region_of(spec) if reference_of(spec) is not None else None


def mean_std(values: list[float]) -> str:
    return f"{np.mean(values):.1f} ± {np.std(values, ddof=1):.1f}" if len(values) > 1 else f"{values[0]:.1f}"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--preset", default="tiny")
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--work", default=str(ROOT / "runs" / "mtmc_synthcc"))
    ap.add_argument("--models", nargs="+", default=["default"], metavar="LABEL[=FILE]",
                    help="ReID models to compare on the same scenes; `default` is the pipeline's default model, "
                         "LABEL=FILE any model file the pipeline reads (.safetensors, .onnx, .xml)")
    ap.add_argument("--threshold", type=float, default=0.55,
                    help="matcher.threshold for models that carry no calibrated thresholds")
    ap.add_argument("--outfit-threshold", type=float, default=0.7,
                    help="matcher.outfit_threshold for models that carry no calibrated thresholds")
    ap.add_argument("--matcher", nargs="*", default=[], metavar="KEY=VALUE",
                    help="matcher settings for every model (they win over a model file's calibrated thresholds)")
    ap.add_argument("--reid", nargs="*", default=[], metavar="KEY=VALUE",
                    help="reid settings for every model, e.g. swap_check_per_second=0 (crop selection, swap split)")
    ap.add_argument("--outfit-model", metavar="FILE",
                    help="reid.outfit_model for every LABEL=FILE model (not `default`): a same-clothes model whose "
                         "feature is the outfit descriptor and links a known outfit on its own (e.g. "
                         "person-reidentification-retail-0267.ort.onnx, the default model)")
    ap.add_argument("--label-suffix", default="", help="appended to the run folders (keeps sweeps apart)")
    ap.add_argument("--min-height", type=int, default=64, help="reid.min_height: smallest crop embedded")
    ap.add_argument("--changes", nargs="+", default=list(SCENE_SETS), choices=list(SCENE_SETS))
    ap.add_argument("--transit", nargs=2, type=float, metavar=("MIN_S", "MAX_S"),
                    help="matcher.topology for every run: a walk between any two cameras takes MIN_S to MAX_S "
                         "video seconds (the scenes' own gaps are 0.5-2.5 s plus entering and leaving the view); "
                         "longer gaps stay possible (revisit_after_s = MAX_S) at the plain threshold, arrivals "
                         "inside the window need the model's calibrated window_threshold")
    ap.add_argument("--measured-gains", action="store_true",
                    help="give each camera `colour_gains` that undo its known colour response (measured on its "
                         "ground-truth boxes, benchmarks/levelling_scene_gains.py): what a grey-card calibration "
                         "would give a colour-levelled model, instead of the running estimate from its crops")
    ap.add_argument("--warm", "--warm-colour", dest="warm", metavar="SCENE_DIR_PATTERN",
                    help="a scene folder per seed ('{seed}' in the pattern) filmed by the same cameras with other "
                         "people (`synth scenes --seed S --set people_seed=N`): each camera's statistics are taken "
                         "from it and put in the run's store first, as earlier runs on a site leave them (models "
                         "that level colour or run with `--reid centring=camera`; others start fresh)")
    ap.add_argument("--warm-from", "--warm-colour-from", dest="warm_from", choices=("run", "gt"), default="run",
                    help="run: the pipeline runs the warm-up scene first with the same model and settings and its "
                         "store's per-camera statistics (colour levels, feature means) are kept (the identities "
                         "dropped); gt: colour statistics only, from the warm-up scene's ground-truth boxes (every "
                         "5th frame, 64 px or taller)")
    ap.add_argument("--detector-every", type=int, default=1,
                    help="detector.every: 1 (every frame, as every scene figure in the README was measured; the "
                         "pipeline's default stride came later) or the pipeline's stride to compare")
    ap.add_argument("--detector", nargs="*", default=[], metavar="KEY=VALUE",
                    help="detector settings for every run, e.g. workers=1 (every: --detector-every)")
    ap.add_argument("--workers", type=int, default=1,
                    help="split the cameras over this many `pipeline run` processes sharing one Redis")
    args = ap.parse_args()
    forced, reid_settings = key_values(args.matcher, "--matcher"), key_values(args.reid, "--reid")
    detector = {"every": args.detector_every, **key_values(args.detector, "--detector")}
    work = Path(args.work)
    models: dict[str, str | None] = {}
    for item in args.models:
        label, _, path = item.partition("=")
        models[label] = path or None
    settings = {}
    for label, path in models.items():
        calibrated = model_thresholds(path)
        matcher = {} if calibrated else {"threshold": args.threshold, "outfit_threshold": args.outfit_threshold}
        if path and args.outfit_model:
            matcher.pop("outfit_threshold", None)  # the outfit model's level (pipeline.matcher.thresholds_from_model)
        matcher.update(forced)
        shown = {**(calibrated or {}), **matcher}
        reid = {"min_height": args.min_height, **reid_settings}
        if path:
            reid["model"] = str(Path(path).resolve())
            if args.outfit_model:
                reid["outfit_model"] = args.outfit_model
        settings[label] = (matcher, reid,
                           ", ".join(f"{k} {shown[k]}" for k in ("threshold", "outfit_threshold", "merge_threshold")
                                     if k in shown) + (" (calibrated, from the model file)" if calibrated else "")
                           + (f"; set here: {forced}" if forced else "")
                           + (f"; outfit model {args.outfit_model} (outfit_threshold and outfit_link_threshold at its "
                              "level unless set here)" if path and args.outfit_model else ""))
    # where each colour-levelled model takes its camera means (read once per model file)
    regions = {label: model_region(path) if args.warm else None for label, path in models.items()}
    centred = reid_settings.get("centring") == "camera"
    if args.warm and args.warm_from == "gt" and centred:
        raise SystemExit("--warm-from gt gives colour statistics only; feature means for `centring=camera` come "
                         "from a run: use --warm-from run")
    rows = []
    for changes in args.changes:
        for seed in (int(s) for s in args.seeds.split(",")):
            scene = work / f"{args.preset}-s{seed}-changes-{changes}" / "scene"
            generate(args.preset, seed, SCENE_SETS[changes], scene)
            people, gt_changes = scene_truth(scene)
            for label, (matcher, reid, _) in settings.items():
                if args.transit:
                    matcher = {**matcher, "topology": scene_topology(scene, *args.transit)}
                run_dir = scene.parent / (f"run-{label}{args.label_suffix}" + ("" if args.workers == 1 else f"-{args.workers}workers"))
                gains = scene_gains(scene) if args.measured_gains else None
                region, prefill = regions[label], None
                if args.warm and (region is not None or centred):
                    warm_scene = Path(args.warm.format(seed=seed))
                    prefill = (put_colour_stats(warm_colour_stats(warm_scene, region), region)
                               if args.warm_from == "gt" else
                               put_raw_stats(warm_stats_from_run(warm_scene, warm_scene.parent / run_dir.name,
                                                                 matcher, reid, detector)))
                wall, store_dir = run_pipeline(scene, run_dir, matcher, reid, args.workers, gains, prefill,
                                               detector)
                final, events, alive = read_identities(store_dir)
                kinds = Counter(e["type"] for e in events)
                seq_len, dup = build_sequence(scene, run_dir / "mot", final, run_dir / "eval")
                scores = trackeval_scores(run_dir / "eval", seq_len)
                # The same tracks with no cross-camera identity (every local track its own person): what the
                # ReID + matcher stage adds over per-camera tracking alone.
                build_sequence(scene, run_dir / "mot", {}, run_dir / "eval-tracks-only")
                scores["IDF1_tracks_only"] = trackeval_scores(run_dir / "eval-tracks-only", seq_len)["IDF1"]
                people_of_tracks = track_people(scene, run_dir / "mot")
                outfit_events, correct = outfit_event_check(events, final, people_of_tracks)
                rows.append({"changes": changes, "seed": seed, "model": label, **scores, "people": people,
                             "identities": alive, "gt_changes": gt_changes, "outfit_events": outfit_events,
                             "outfit_correct": correct, "merges": kinds["identity.merged"], "wall": wall, "dup": dup,
                             "decisions": decision_kinds(events, people_of_tracks)})
                print(f"done: outfit changes {changes}, seed {seed}, model {label}: IDF1 {scores['IDF1']:.1f}",
                      file=sys.stderr, flush=True)
    print(f"SynthCC scenes, preset {args.preset}, seeds {args.seeds}; pipeline defaults (YOLOX-nano, ByteTrack), "
          f"detector.every {args.detector_every}; reid.min_height {args.min_height}; {args.workers} worker process(es); matcher clock: video (files); "
          + (f"transit {args.transit[0]:g}-{args.transit[1]:g} s between any two cameras" if args.transit
             else "no topology"))
    if args.reid:
        print(f"reid settings for every model: {', '.join(args.reid)}")
    if args.detector:
        print(f"detector settings: {', '.join(args.detector)}")
    for label, (_, reid, shown) in settings.items():
        print(f"model {label}: {reid.get('model', 'the default (' + ReidConfig().model + ')')}; matcher {shown}")
    if args.measured_gains:
        print("cameras: colour_gains measured on each camera's ground-truth boxes (benchmarks/levelling_scene_gains.py)")
    if args.warm:
        print(f"cameras: {'colour statistics of levelled models' if args.warm_from == 'gt' else 'per-camera statistics (colour levels, feature means)'} "
              f"learnt first from {args.warm} (other people, the same cameras; "
              + ("ground-truth boxes" if args.warm_from == "gt" else
                 "a pipeline run on it with the same model and settings, identities dropped")
              + "), as earlier runs leave them in the store")
    print(f"machine: {describe_machine()}; date {date.today().isoformat()}")
    print("\n| outfit changes | seed | model | MTMC IDF1 | IDF1, tracks only | HOTA | MOTA | ID sw. | people | identities "
          "| outfit changes (gt) | outfit_changed events (correct) | merges | same id twice in a frame | run s |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        label = {"no": "no (1 outfit each)", "yes": "yes (change_prob 1)"}[r["changes"]]
        print(f"| {label} | {r['seed']} | {r['model']} | {r['IDF1']:.1f} | {r['IDF1_tracks_only']:.1f} | {r['HOTA']:.1f} | "
              f"{r['MOTA']:.1f} | {r['IDSW']} | {r['people']} | {r['identities']} | {r['gt_changes']} | "
              f"{r['outfit_events']} ({r['outfit_correct']}) | {r['merges']} | {r['dup']} | {r['wall']:.0f} |")
    print("\nmean ± std over seeds:\n")
    print("| outfit changes | model | MTMC IDF1 | IDF1, tracks only | identities per person | correct outfit_changed "
          "events / gt changes |")
    print("|---|---|---|---|---|---|")
    for changes in args.changes:
        for label in settings:
            sel = [r for r in rows if r["changes"] == changes and r["model"] == label]
            print(f"| {changes} | {label} | {mean_std([r['IDF1'] for r in sel])} | "
                  f"{mean_std([r['IDF1_tracks_only'] for r in sel])} | "
                  f"{np.mean([r['identities'] / r['people'] for r in sel]):.2f} | "
                  f"{sum(r['outfit_correct'] for r in sel)} / {sum(r['gt_changes'] for r in sel)} |")
    # Where the identity errors come from (synth.truth.decision_kinds): each track's first decision judged
    # against the truth at that moment, summed over seeds.
    print("\ndecisions, summed over seeds (synth.truth.decision_kinds):\n")
    print("| outfit changes | model | " + " | ".join(DECISION_KINDS) + " |")
    print("|---|---|" + "---|" * len(DECISION_KINDS))
    for changes in args.changes:
        for label in settings:
            sel = [r for r in rows if r["changes"] == changes and r["model"] == label]
            print(f"| {changes} | {label} | " + " | ".join(str(sum(r["decisions"][k] for r in sel))
                                                       for k in DECISION_KINDS) + " |")
    if len(settings) > 1:
        labels = list(settings)
        base = labels[0]
        for changes in args.changes:
            for label in labels[1:]:
                diffs = [r["IDF1"] - b["IDF1"] for r in rows for b in rows
                         if r["changes"] == b["changes"] == changes and r["seed"] == b["seed"]
                         and r["model"] == label and b["model"] == base]
                print(f"IDF1 {label} - {base}, outfit changes {changes}: {mean_std(diffs)} "
                      f"(per seed {', '.join(f'{d:+.1f}' for d in diffs)})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
