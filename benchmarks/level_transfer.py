"""Move a cosine level of one ReID model to another at the same error rate, on SynthCC test people (stills).

    .venv/bin/python benchmarks/level_transfer.py --root SYNTHCC_DIR [--from MODEL] [--to MODEL]
        [--link 0.55] [--swap 0.3]

Levels belong to one model: another model spreads different people over other cosines. `--link` (a matcher
threshold, compared with a tracklet's mean feature) is moved on sightings (one person, one outfit, one camera:
the mean of their images, as `reid calibrate` builds them; pairs in different cameras): the level of `--to` that
accepts the same share of different-people pairs as `--from` does at `--link`. `--swap` (reid.swap_threshold,
compared crop against crops) is moved on single images: the level below which `--to` puts the same share of
different-people image pairs (200,000 pairs drawn with seed 0). Printed with what each level keeps of the same
person. Used for Intel 0288's levels (README, "A lighter default ReID model"); never run on the scenes or PETS
frames the levels are scored on.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def pairs(model: str, root: str) -> dict[str, np.ndarray]:
    from pipeline.models import resolve_model
    from reid.calibrate import embed_sightings
    from reid.datasets.levelling import load_for_model
    from reid.inference.factory import create_embedder
    from reid.transforms import read_record

    embedder = create_embedder(resolve_model(model))
    data = load_for_model("synthcc", root, embedder.spec)
    records = list({r.path: r for split in data.eval_splits for r in (*split.query, *split.gallery)}.values())
    s, _ = embed_sightings(embedder, records)
    iu = np.triu_indices(len(s.person), 1)
    other_camera = (s.camera[:, None] != s.camera[None, :])[iu]
    same_person = (s.person[:, None] == s.person[None, :])[iu]
    same_outfit = (s.outfit[:, None] == s.outfit[None, :])[iu]
    cos = (s.identity @ s.identity.T)[iu]
    images = np.concatenate([embedder.embed([read_record(r) for r in records[i:i + 64]]).identity
                             for i in range(0, len(records), 64)])
    person = np.array([r.pid for r in records])
    rng = np.random.default_rng(0)
    a, b = rng.integers(0, len(person), 200_000), rng.integers(0, len(person), 200_000)
    image_cos = (images[a] * images[b]).sum(1)
    return {"sightings_other": cos[other_camera & ~same_person],
            "sightings_same": cos[other_camera & same_person & same_outfit],
            "images_other": image_cos[person[a] != person[b]],
            "images_same": image_cos[(person[a] == person[b]) & (a != b)]}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--root", required=True, help="a SynthCC set (its test people: query + gallery)")
    ap.add_argument("--from", dest="source", default="person-reidentification-retail-0267.ort.onnx")
    ap.add_argument("--to", dest="target", default="person-reidentification-retail-0288-224x112-int8.xml")
    ap.add_argument("--link", type=float, default=0.55, help="a link level of --from (matcher.threshold)")
    ap.add_argument("--swap", type=float, default=0.3, help="a swap-check level of --from (reid.swap_threshold)")
    args = ap.parse_args()
    src, dst = pairs(args.source, args.root), pairs(args.target, args.root)
    rate = float(np.mean(src["sightings_other"] >= args.link))
    link = float(np.quantile(dst["sightings_other"], 1 - rate))
    print(f"link {args.link}: {args.source} accepts {100 * rate:.3f} % of different-people sightings (keeps "
          f"{100 * np.mean(src['sightings_same'] >= args.link):.1f} % of one person in one outfit); {args.target} "
          f"at the same rate: {link:.3f} (keeps {100 * np.mean(dst['sightings_same'] >= link):.1f} %; at "
          f"{args.link} it accepts {100 * np.mean(dst['sightings_other'] >= args.link):.3f} %)")
    below = float(np.mean(src["images_other"] < args.swap))
    swap = float(np.quantile(dst["images_other"], below))
    print(f"swap {args.swap}: {args.source} puts {100 * below:.1f} % of different-people image pairs below it "
          f"({100 * np.mean(src['images_same'] < args.swap):.1f} % of one person's); {args.target} at the same "
          f"share: {swap:.3f} ({100 * np.mean(dst['images_same'] < swap):.1f} % of one person's)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
