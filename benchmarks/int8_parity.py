"""How close an INT8 ReID file's features are to its float model's on real PETS crops, on this CPU.

    .venv/bin/python benchmarks/int8_parity.py [--files A.xml B.onnx ...] [--reference FLOAT.xml]
        [--overflow-fix first_layer_only enable --calib SYNTHCC_ROOT]

The reference (default: Intel's 0288 float IR in ../shared) runs in OpenVINO in exact FP32; each file runs as the
pipeline runs it (`create_embedder`, backend auto). Crops: every 7th ground-truth box of PETS09-S2L1 dev frames
1-200 at least 64 px tall (154 crops). Prints the cosine of each crop's identity feature to the reference's, its
mean and minimum.

`--overflow-fix MODE ...` also quantises the reference with NNCF (`reid export`'s recipe, calibrated on
`--calib`'s train/ images) once per MODE of NNCF's `OverflowFix` and measures each: on a CPU without VNNI
(AVX2 only), 8-bit products saturate unless every layer is guarded (README, Benchmarks: "INT8 on CPUs without
VNNI").
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from mot_pets import read_frames  # noqa: E402  (benchmarks/ is this script's own folder)

SHARED = ROOT.parent / "shared"
VIDEO = SHARED / "data" / "pets09-s2l1" / "vtest.avi"
GT = VIDEO.parent / "gt" / "gt_dev.txt"
FLOAT_0288 = (SHARED / "models" / "reid" / "person-reidentification-retail-0288" / "FP32"
              / "person-reidentification-retail-0288.xml")


def pets_crops(frames: int = 200, every: int = 7, min_height: int = 64) -> list[np.ndarray]:
    images = read_frames(VIDEO, frames)
    gt = np.loadtxt(GT, delimiter=",")
    rows = gt[(gt[:, 0] <= frames) & (gt[:, 5] >= min_height)][::every]
    return [images[int(f) - 1][max(int(y), 0):int(y + h), max(int(x), 0):int(x + w)]
            for f, x, y, w, h in rows[:, [0, 2, 3, 4, 5]]]


def quantise(reference: Path, mode: str, calib_root: Path, out: Path) -> Path:
    """`reid export`'s INT8 recipe with NNCF's overflow_fix `mode`, calibrated on `calib_root`'s train/, to `out`."""
    from reid.export import calibration_images, export_openvino
    from reid.inference.openvino_backend import OpenVinoEmbedder

    spec = OpenVinoEmbedder(reference, precision="f32").spec
    export_openvino(reference, out, spec, False, calibration_images(calib_root / "train", 300, spec), mode)
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--files", nargs="*", type=Path, default=[], help="INT8 (or any) model files to measure")
    ap.add_argument("--reference", type=Path, default=FLOAT_0288, help="the float OpenVINO IR they come from")
    ap.add_argument("--overflow-fix", nargs="*", default=[], metavar="MODE",
                    help="quantise the reference once per NNCF OverflowFix mode (disable, first_layer_only, enable)")
    ap.add_argument("--calib", type=Path, help="a SynthCC root (its train/ calibrates --overflow-fix builds)")
    args = ap.parse_args()
    if args.overflow_fix and args.calib is None:
        raise SystemExit("--overflow-fix needs --calib SYNTHCC_ROOT (e.g. `python -m synth people --preset bench "
                         "--seed 1 --out DIR`)")
    from reid.inference.factory import create_embedder
    from reid.inference.openvino_backend import OpenVinoEmbedder

    crops = pets_crops()
    reference = OpenVinoEmbedder(args.reference, precision="f32").embed(crops).identity
    reference = reference / np.linalg.norm(reference, axis=1, keepdims=True)
    with tempfile.TemporaryDirectory(prefix="int8-parity-") as tmp:
        files = [(str(f), f) for f in args.files]
        files += [(f"{args.reference.name} quantised here, overflow_fix {mode}",
                   quantise(args.reference, mode, args.calib, Path(tmp) / f"q-{mode}.xml"))
                  for mode in args.overflow_fix]
        for label, path in files:
            got = create_embedder(path, "auto").embed(crops).identity
            cos = (got / np.linalg.norm(got, axis=1, keepdims=True) * reference).sum(axis=1)
            print(f"{label}: {len(crops)} PETS crops, cosine to {args.reference.name} in FP32: mean {cos.mean():.3f}, "
                  f"min {cos.min():.3f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
