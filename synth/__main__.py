"""CLI: ``python -m synth people|scenes --preset NAME --seed S --out DIR``, ``python -m synth crops`` (a ReID set
cut from scene videos) and ``python -m synth sheet``."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from .presets import PEOPLE_PRESETS, SCENE_PRESETS, with_overrides


def _knobs(items: list[str]) -> dict[str, str]:
    out = {}
    for it in items:
        if "=" not in it:
            raise ValueError(f"--set expects KEY=VALUE, got {it!r}")
        k, v = it.split("=", 1)
        out[k.strip()] = v.strip()
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m synth", description="SynthCC: synthetic clothes-changing people and scenes")
    sub = p.add_subparsers(dest="cmd", required=True)
    for name, presets in (("people", PEOPLE_PRESETS), ("scenes", SCENE_PRESETS)):
        sp = sub.add_parser(name, help=f"generate the {name} data set")
        sp.add_argument("--preset", default="tiny", choices=sorted(presets))
        sp.add_argument("--seed", type=int, default=0)
        sp.add_argument("--out", type=Path, required=True)
        sp.add_argument("--set", dest="knobs", action="append", default=[], metavar="KEY=VALUE",
                        help="override a preset knob, e.g. --set outfit_share=0.6 (repeatable)")
        sp.add_argument("--backgrounds", type=Path, nargs="*", default=None,
                        help="videos whose median frames become camera backgrounds (default: procedural)")
        sp.add_argument("--force", action="store_true", help="write into a non-empty --out")
        if name == "scenes":
            sp.add_argument("--script", type=Path, help="YAML: who walks through which camera, when, in which "
                            "outfit, and which outfits people share (synth/scenes.py SceneScript)")
    cr = sub.add_parser("crops", help="a ReID training set (SynthCC people layout) cut from scene videos")
    cr.add_argument("--train", type=Path, nargs="+", required=True, help="scene folders (synth scenes) to train on")
    cr.add_argument("--test", type=Path, nargs="+", required=True,
                    help="scene folders of other seeds for query and gallery")
    cr.add_argument("--out", type=Path, required=True)
    cr.add_argument("--per-sighting", type=int, default=8, help="crops per person per camera walk")
    cr.add_argument("--min-height", type=float, default=48.0, help="smallest box height (px) taken")
    cr.add_argument("--min-visibility", type=float, default=0.6, help="smallest visible share of the body taken")
    cr.add_argument("--force", action="store_true", help="write into a non-empty --out")
    cr.add_argument("--no-masks", dest="masks", action="store_false",
                    help="no part masks (for scenes that cannot be redrawn: drawn over --backgrounds)")
    sh = sub.add_parser("sheet", help="contact sheet PNG of one identity from a people data set")
    sh.add_argument("--root", type=Path, required=True)
    sh.add_argument("--pid", type=int, required=True)
    sh.add_argument("--out", type=Path, required=True)
    sh.add_argument("--per-cell", type=int, default=2, help="images per (outfit, camera) cell")
    sh.add_argument("--masks", action="store_true", help="show each image's part mask beside it")
    args = p.parse_args(argv)

    import cv2

    cv2.setNumThreads(1)  # the machine is shared; generation is light
    try:
        if args.cmd == "people":
            from .people import generate_people

            cfg = with_overrides(PEOPLE_PRESETS[args.preset], _knobs(args.knobs))
            generate_people(cfg, args.seed, args.out, preset=args.preset, backgrounds=args.backgrounds, force=args.force)
        elif args.cmd == "scenes":
            from .scenes import SceneScript, generate_scenes

            cfg = with_overrides(SCENE_PRESETS[args.preset], _knobs(args.knobs))
            script = SceneScript.load(args.script) if args.script else None
            generate_scenes(cfg, args.seed, args.out, preset=args.preset, backgrounds=args.backgrounds, force=args.force,
                            script=script)
        elif args.cmd == "crops":
            from .scene_crops import write_scene_crops

            write_scene_crops(args.train, args.test, args.out, per_sighting=args.per_sighting,
                              min_height=args.min_height, min_visibility=args.min_visibility, force=args.force,
                              masks=args.masks)
        else:
            from .sheet import contact_sheet

            contact_sheet(args.root, args.pid, args.out, per_cell=args.per_cell, masks=args.masks)
    except (ValueError, FileNotFoundError, FileExistsError) as e:
        print("error: " + " ".join(str(e).split()), file=sys.stderr)  # one line, as pipeline and reid
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
