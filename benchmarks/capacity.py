"""How many real-time cameras one machine carries: N copies of a real video as N cameras, whole pipeline.

    .venv/bin/python benchmarks/capacity.py [--cameras 4 8] [--frames 150] [--set detector.input_size=640 ...]
        [--variant NAME[:KEY=VALUE,...] ...] [--repeat R]

For each camera count the script runs `PipelineRunner` (what `python -m pipeline run` runs: decode, detect,
track, embed, match, the embedded Redis store; annotated video off, as on a server) on N copies of
PETS09-S2L1 (768x576, ../shared/data) for `--frames` frames each, then times the detector alone on the same
frames, batched as the run batches them (one frame per camera per step; with a staggered stride, the cameras
of one phase) and fed as the run feeds them (with `detector.ahead`, the next step queued before this one's boxes
are taken), decoded beforehand, each slot of a batch its own frame (as each camera's is), once just before
the run and once just after (their mean is the detector-only rate: a shared host drifts; a run whose two lie
more than 15 % apart is marked unsteady, its ratio not to be trusted). It prints:

* pipeline frames/s over all cameras and the real-time cameras it carries at `--camera-fps` (10);
* ms per camera-frame of each stage (the run's own stage clocks; decode runs in reader threads beside them);
* the crops embedded, and how many of them were taken only for the swap check (`reid.swap_check_per_second`);
* detector-only frames/s and the ratio pipeline / detector-only: the detector is most of the work, so the
  ratio says how much the rest costs, and it holds across machines better than frames/s do. With
  `detector.every: k` the pipeline detects one frame in k, so the ratio is taken against k x the detector-only
  rate (the detector's time for the frames the run detects): the skipped frames are not counted as free.

`--variant NAME:KEY=VALUE,...` (repeatable) compares configs, and `--repeat R` runs R rounds of all of them, one
after another within a round, so compared configs meet the same drift of a shared host; the table then gives
each config's runs and their range.

Frames are read as fast as the run takes them (file sources are not paced), so frames/s is capacity, not the
cameras' own rate. `--set` overrides any config key (dotted path, YAML value; `cameras.*.KEY` sets a camera key on every camera)
for every camera count, so each option of the README's capacity table is one command. `--json` writes the rows for the README.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from datetime import date
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from machine import describe as describe_machine  # noqa: E402
from mot_pets import read_frames  # noqa: E402  (benchmarks/ is this script's own folder)
from pipeline.config import parse_config  # noqa: E402

VIDEO = ROOT.parent / "shared" / "data" / "pets09-s2l1" / "vtest.avi"


def set_key(raw: dict, dotted: str, value: str) -> None:
    """Sets a dotted key; `cameras.*.KEY` sets KEY on every camera."""
    nodes = [raw]
    *path, last = dotted.split(".")
    for key in path:
        if key == "*":
            if not all(isinstance(n, list) for n in nodes):
                raise SystemExit(f"--set {dotted}: '*' must follow a list (cameras.*.KEY)")
            nodes = [item for n in nodes for item in n]
            continue
        nodes = [n.setdefault(key, {}) for n in nodes]
        if not all(isinstance(n, (dict, list)) for n in nodes):
            raise SystemExit(f"--set {dotted}: {key} is not a mapping in the config")
    for n in nodes:
        if not isinstance(n, dict):
            raise SystemExit(f"--set {dotted}: a list needs '*' before the key (cameras.*.KEY)")
        n[last] = yaml.safe_load(value)


def apply_sets(raw: dict, items: list[str]) -> dict:
    """`--set KEY=VALUE` items (dotted path, YAML value) applied to a raw config mapping."""
    for item in items:
        key, sep, value = item.partition("=")
        if not sep:
            raise SystemExit(f"--set expects KEY=VALUE, got {item!r}")
        set_key(raw, key, value)
    return raw


def build_config(cameras: int, video: Path, store_dir: Path, overrides: list[str]):
    raw = {"cameras": [{"id": f"cam{k + 1:02d}", "source": str(video)} for k in range(cameras)],
           "store": "embedded", "output": {"video": False, "dir": str(store_dir)}}
    return parse_config(apply_sets(raw, overrides))


def run_pipeline(config, out: Path, frames: int) -> dict:
    from pipeline.runner import PipelineRunner

    summary = PipelineRunner(config, out, max_frames=frames, progress=False).run()
    if summary.failed:
        raise SystemExit(f"a camera failed: {summary.failed}")
    # The run's wall clock starts after the models are loaded (a one-off) and ends after the store drained.
    return {"frames": summary.frames, "wall_s": summary.wall_s, "fps": summary.frames / summary.wall_s,
            "stage_ms": summary.stage_ms_per_frame, "crops": summary.crops, "crops_check": summary.crops_check}


def detector_only(config, video: Path, cameras: int, frames: int, detector=None, ahead: bool | None = None,
                  stats: dict | None = None) -> float:
    """Frames/s of the configured detector alone on the same frames, batched as the run batches them: one frame
    per camera a step, or with a staggered stride (`detector.every` n, `detector.stagger`) the cameras of one
    phase a step; queued a step ahead where the run queues them so (`detector.ahead`; `ahead` overrides it).
    `detector`: one already built from the config (capacity_probes.py times its parts); `stats`, when given, gets
    the cores the process kept busy over the timed part ("cores")."""
    from detectors.base import queued
    from pipeline.perception import detector_from_config

    every = config.detector.every if config.detector.stagger else 1
    batch = -(-cameras // every)  # the largest phase
    detector = detector or detector_from_config(config.detector)
    images = read_frames(video, frames)
    # Each slot of a batch is another decoded frame, as each camera's frame is its own array in the run (one
    # array repeated in every slot could stay in the CPU's cache and flatter the detector alone).
    spread = max(len(images) // batch, 1)
    batches = [[images[(i + k * spread) % len(images)] for k in range(batch)] for i in range(len(images))]
    detector.detect(batches[0])  # warm-up: first-call allocations are not throughput
    t, cpu = time.perf_counter(), time.process_time()
    if (config.detector.ahead if ahead is None else ahead) and queued(detector):
        # As the run feeds it (detector.ahead, and a file camera's frames always wait): the next step's frames are
        # queued before this step's boxes are taken, so the detector's threads do not idle at the end of each
        # step. Step by step the detector alone left 7-9 % of 2 cores idle, which the run then filled with its
        # other work: a baseline the run beat by its schedule, not by costing little (README, Benchmarks:
        # "The detector alone, fed as the run feeds it").
        handle = detector.submit(batches[0])
        for frames_of_step in batches[1:]:
            following = detector.submit(frames_of_step)
            detector.collect(handle)
            handle = following
        detector.collect(handle)
    else:
        for frames_of_step in batches:
            detector.detect(frames_of_step)
    wall = time.perf_counter() - t
    if stats is not None:
        stats["cores"] = (time.process_time() - cpu) / wall
    return len(batches) * batch / wall


UNSTEADY = 0.15  # detector-only rates before and after a run further apart than this: the host changed speed


def unsteady(before: float, after: float, limit: float = UNSTEADY) -> float | None:
    """How far apart (a fraction of the slower) the detector-only rates before and after a run are, when more
    than `limit`; else None. The ratio divides by their mean, so such a row says more about the host than about
    the pipeline (seen: 40.2 frames/s before a run and 75.9 after it, on a fresh process's first run)."""
    gap = abs(after - before) / max(min(before, after), 1e-9)
    return gap if gap > limit else None


def parse_variant(text: str) -> tuple[str, list[str]]:
    """`NAME` or `NAME:KEY=VALUE,KEY=VALUE` -> (name, overrides)."""
    name, _, rest = text.partition(":")
    overrides = [item for item in rest.split(",") if item]
    if not name or any("=" not in item for item in overrides):
        raise SystemExit(f"--variant expects NAME or NAME:KEY=VALUE,KEY=VALUE, got {text!r}")
    return name, overrides


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--cameras", type=int, nargs="+", default=[4, 8])
    ap.add_argument("--frames", type=int, default=150, help="frames per camera")
    ap.add_argument("--camera-fps", type=float, default=10.0, help="the rate a real-time camera delivers")
    ap.add_argument("--video", type=Path, default=VIDEO)
    ap.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                    help="config override for every run, e.g. detector.input_size=640 (repeatable)")
    ap.add_argument("--variant", dest="variants", action="append", default=[], metavar="NAME[:KEY=VALUE,...]",
                    help="a config to compare, on top of --set (repeatable; default: one, named 'config')")
    ap.add_argument("--repeat", type=int, default=1,
                    help="rounds: each round runs every variant once, so compared variants meet the same drift of "
                         "a shared host; the table gives each variant's runs and their range")
    ap.add_argument("--json", type=Path, help="also write the rows here")
    args = ap.parse_args()
    if not args.video.is_file():
        raise SystemExit(f"{args.video}: video not found (../shared/data beside the checkout; see README)")
    variants = [parse_variant(v) for v in args.variants] or [("config", [])]
    if len({name for name, _ in variants}) != len(variants):
        raise SystemExit("--variant names must differ")
    rows = []
    for round_ in range(1, max(args.repeat, 1) + 1):
        for n in args.cameras:
            for name, extra in variants:
                with tempfile.TemporaryDirectory(prefix="capacity-") as tmp:
                    config = build_config(n, args.video.resolve(), Path(tmp) / "out", args.overrides + extra)
                    # the detector alone just before and just after the run: a shared host's speed drifts by
                    # a fifth within minutes, and one side alone would tilt the ratio with it
                    det_before = detector_only(config, args.video, n, args.frames)
                    run = run_pipeline(config, Path(tmp) / "out", args.frames)
                det_after = detector_only(config, args.video, n, args.frames)
                det_fps = (det_before + det_after) / 2
                every = config.detector.every
                row = {"variant": name, "round": round_, "cameras": n, "pipeline_fps": run["fps"],
                       "realtime_cameras": run["fps"] / args.camera_fps, "detector_only_fps": det_fps,
                       "detector_only_fps_before_after": [det_before, det_after],
                       "detector_every": every, "ratio": run["fps"] / (det_fps * every), "stage_ms": run["stage_ms"],
                       "frames": run["frames"], "crops": run["crops"], "crops_check": run["crops_check"],
                       "unsteady": unsteady(det_before, det_after)}
                rows.append(row)
                print(f"round {round_}, {name}, {n} cameras: pipeline {row['pipeline_fps']:.1f} frames/s "
                      f"({row['realtime_cameras']:.1f} real-time cameras at {args.camera_fps:g} fps), detector only "
                      f"{det_fps:.1f} frames/s ({det_before:.1f} before the run, {det_after:.1f} after; detecting 1 "
                      f"frame in {every}), ratio {row['ratio']:.2f}; "
                      "ms per camera-frame " + ", ".join(f"{k} {v:.1f}" for k, v in run["stage_ms"].items())
                      + f"; {run['crops']} crops embedded ({run['crops_check']} of them swap-check crops)"
                      + (f"; UNSTEADY HOST: the detector alone ran {row['unsteady']:.0%} apart before and after the "
                         "run, so this ratio is not to be trusted (run it again)" if row["unsteady"] else ""), flush=True)
    machine = describe_machine()
    import torch  # the pipeline has loaded it already; named so a GPU run's table says which GPU embedded

    if torch.cuda.is_available():
        machine += f", {torch.cuda.get_device_name()}"
    print(f"\n`python benchmarks/capacity.py --cameras {' '.join(map(str, args.cameras))} --frames {args.frames}"
          + (f" --video {args.video}" if args.video != VIDEO else "")  # the table names its data
          + (f" --camera-fps {args.camera_fps:g}" if args.camera_fps != 10.0 else "")
          + "".join(f" --set {o}" for o in args.overrides) + "".join(f" --variant {v}" for v in args.variants)
          + (f" --repeat {args.repeat}" if args.repeat > 1 else "") + f"` ({machine}, {date.today()})")
    stages = list(rows[0]["stage_ms"])
    print("| variant | cameras | pipeline frames/s (runs) | real-time cameras | detector-only frames/s | ratio | "
          + " | ".join(f"{k} ms" for k in stages) + " |")
    print("|---" * (6 + len(stages)) + "|")

    def spread(values, fmt: str) -> str:
        lo, hi = format(min(values), fmt), format(max(values), fmt)
        return lo if lo == hi else f"{lo}–{hi}"

    for name, _ in variants:
        for n in args.cameras:
            runs = [r for r in rows if r["variant"] == name and r["cameras"] == n]
            print(f"| {name} | {n} | " + ", ".join(f"{r['pipeline_fps']:.1f}" for r in runs)
                  + f" | {spread([r['realtime_cameras'] for r in runs], '.1f')}"
                  + f" | {spread([r['detector_only_fps'] for r in runs], '.1f')}"
                  + " | " + ", ".join(f"{r['ratio']:.2f}" + (" (unsteady)" if r["unsteady"] else "") for r in runs)
                  + " | "
                  + " | ".join(spread([r["stage_ms"][k] for r in runs], ".1f") for k in stages) + " |")
    if args.json:
        args.json.write_text(json.dumps({"machine": machine, "date": str(date.today()), "overrides": args.overrides,
                                         "variants": args.variants, "repeat": args.repeat, "rows": rows}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
