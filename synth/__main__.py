"""CLI: ``python -m synth people|scenes --preset NAME --seed S --out DIR`` and ``python -m synth sheet``."""

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
        else:
            from .sheet import contact_sheet

            contact_sheet(args.root, args.pid, args.out, per_cell=args.per_cell, masks=args.masks)
    except (ValueError, FileNotFoundError, FileExistsError) as e:
        print("error: " + " ".join(str(e).split()), file=sys.stderr)  # one line, as pipeline and reid
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
