"""Embedding throughput and latency per backend and batch size, side by side in one run.

    python benchmarks/embed.py --weights CKPT.safetensors --threads 2 --batch 1,16,64
    python benchmarks/embed.py --random resnet50 --threads 2        # random-init ResNet-50 256x128

Every backend runs the same model: the checkpoint in PyTorch eager, and the files `reid export` makes
from it (ONNX FP32 / INT8 for ONNX Runtime, OpenVINO IR FP32 / INT8, TensorRT FP16 when a GPU and
tensorrt are present), and with a GPU the checkpoint in PyTorch on CUDA, FP32 and FP16. Inputs are real
person crops (PETS09-S2L1 boxes), cycled to fill each batch; timings include preprocessing (resize +
normalise), as on the hot path. INT8 files are calibrated on --calib (a SynthCC root or crop folder) or,
without it, on the PETS crops.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

ALL_BACKENDS = ("torch", "onnxruntime", "onnxruntime-int8", "openvino", "openvino-bf16", "openvino-int8",
                "openvino-int8-tput", "tensorrt-fp16", "torch-cuda", "torch-cuda-fp16")
DEFAULT_BACKENDS = ("torch", "onnxruntime", "onnxruntime-int8", "openvino", "openvino-bf16", "openvino-int8",
                    "tensorrt-fp16")


def make_random_checkpoint(backbone: str, folder: Path) -> Path:
    import torch

    from reid.checkpoint import save_checkpoint
    from reid.inference.base import PreprocessSpec
    from reid.models import ArchConfig, build_model

    torch.manual_seed(0)
    path = folder / f"{backbone}_random.safetensors"
    save_checkpoint(path, build_model(ArchConfig(backbone=backbone)).eval(),
                    PreprocessSpec(method=f"{backbone} random init (speed only)", train_dataset="none"),
                    inference_only=True)
    return path


def build_artefacts(weights: Path, folder: Path, backends: list[str], calib: list[np.ndarray]) -> dict[str, Path]:
    """Export the files the backends need, with the same functions `reid export` uses."""
    from reid.export import export_onnx, export_openvino, load_model, onnx_to_int8, sha256_file

    model, spec = load_model(weights)
    sha = sha256_file(weights)
    files = {"onnx": folder / "model.onnx"}
    export_onnx(model, spec, files["onnx"], sha)
    if "onnxruntime-int8" in backends:
        files["onnx-int8"] = folder / "model_int8.onnx"
        onnx_to_int8(files["onnx"], files["onnx-int8"], spec, calib, sha)
    if any(b in backends for b in ("openvino", "openvino-bf16")):
        files["ov"] = folder / "ov" / "model.xml"
        export_openvino(files["onnx"], files["ov"], spec, fp16=False, calib=None)
    if any(b.startswith("openvino-int8") for b in backends):
        files["ov-int8"] = folder / "ov_int8" / "model.xml"
        export_openvino(files["onnx"], files["ov-int8"], spec, fp16=False, calib=calib)
    return files


def make_embedder(backend: str, weights: Path, files: dict[str, Path], threads: int, max_batch: int):
    if backend.startswith("torch"):
        from reid.inference.torch_backend import TorchEmbedder

        # On CUDA embed() still returns numpy: each timed call includes the upload, the GPU's work and the download.
        return TorchEmbedder(weights, device="cuda" if "cuda" in backend else "cpu", threads=threads,
                             max_batch=max_batch, half=backend.endswith("fp16"))
    if backend.startswith("onnxruntime"):
        from reid.inference.onnx_backend import OnnxRuntimeEmbedder

        return OnnxRuntimeEmbedder(files["onnx-int8" if backend.endswith("int8") else "onnx"], threads=threads,
                                   max_batch=max_batch)
    if backend.startswith("openvino"):
        from reid.inference.openvino_backend import OpenVinoEmbedder

        int8 = "int8" in backend
        return OpenVinoEmbedder(files["ov-int8" if int8 else "ov"], threads=threads, max_batch=max_batch,
                                precision="auto" if (backend == "openvino-bf16" or int8) else "f32",
                                hint="throughput" if backend.endswith("tput") else "latency",
                                # each timing repeats one batch size, which needs no fixed-shape copy; one
                                # compiling in the background would only load the CPU being measured
                                fixed_batches=0)
    if backend == "tensorrt-fp16":
        from reid.inference.tensorrt_backend import BatchProfile, TensorRTEmbedder

        return TensorRTEmbedder(files["onnx"], fp16=True, profile=BatchProfile(1, min(16, max_batch), max_batch))
    raise ValueError(f"unknown backend {backend!r}; choose from {ALL_BACKENDS}")


def time_cell(embedder, pool: list[np.ndarray], seconds: float, min_iters: int) -> list[float]:
    """Per-call latencies of `embed(pool)` over at least `seconds` and `min_iters` calls."""
    lat = []
    start = time.perf_counter()
    while len(lat) < min_iters or time.perf_counter() - start < seconds:
        t = time.perf_counter()
        embedder.embed(pool)
        lat.append(time.perf_counter() - t)
    return lat


def summarise(lat: list[float], batch: int) -> dict[str, float]:
    return {"crops_per_s": batch * len(lat) / sum(lat), "latency_ms_median": 1000 * statistics.median(lat),
            "latency_ms_p90": 1000 * float(np.percentile(lat, 90)), "iterations": len(lat)}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--weights", help="a .safetensors checkpoint")
    src.add_argument("--random", choices=["resnet50", "resnet34", "resnet18"], help="random-init model (speed only)")
    p.add_argument("--backends", default=",".join(DEFAULT_BACKENDS), help=f"comma list from {ALL_BACKENDS}")
    p.add_argument("--batch", default="1,16,64", help="comma list of batch sizes")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--seconds", type=float, default=6.0, help="minimum timed seconds per cell (over all rounds)")
    p.add_argument("--min-iters", type=int, default=1, help="minimum calls per cell and round")
    p.add_argument("--rounds", type=int, default=3, help="interleaved rounds over the backends")
    p.add_argument("--calib", help="INT8 calibration folder (SynthCC root or crops); default: the PETS crops")
    p.add_argument("--json", help="also write the results here")
    args = p.parse_args(argv)

    import torch

    from reid.export import default_pets_paths, image_files, pets_crops, read_images
    from reid.inference.tensorrt_backend import tensorrt_available

    torch.set_num_threads(args.threads)
    batches = [int(b) for b in args.batch.split(",")]
    backends = [b.strip() for b in args.backends.split(",") if b.strip()]
    unknown = [b for b in backends if b not in ALL_BACKENDS]
    if unknown:
        p.error(f"unknown backends {unknown}; choose from {ALL_BACKENDS}")
    trt_ok, trt_why = tensorrt_available()
    skipped = {}
    if "tensorrt-fp16" in backends and not trt_ok:
        skipped["tensorrt-fp16"] = trt_why
        backends.remove("tensorrt-fp16")
    for cuda_backend in [b for b in backends if b.startswith("torch-cuda")]:
        if not torch.cuda.is_available():
            skipped[cuda_backend] = "no CUDA GPU visible to PyTorch"
            backends.remove(cuda_backend)

    video, gt = default_pets_paths()
    crops = pets_crops(video, gt, max_crops=128)
    calib = read_images(image_files(args.calib, 300)) if args.calib else crops
    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        weights = Path(args.weights) if args.weights else make_random_checkpoint(args.random, folder)
        t = time.perf_counter()
        files = build_artefacts(weights, folder, backends, calib)
        print(f"exported in {time.perf_counter() - t:.0f} s; timing {len(backends)} backends x {len(batches)} "
              f"batch sizes on {len(crops)} real crops, {args.threads} threads", file=sys.stderr)
        embedders = {b: make_embedder(b, weights, files, args.threads, max(batches)) for b in backends}
        pools = {b: [crops[i % len(crops)] for i in range(b)] for b in batches}
        for backend, emb in embedders.items():
            for b in batches:
                for _ in range(2):  # warm-up: first calls allocate and pick kernels
                    emb.embed(pools[b])
        # Rounds interleave the backends so that load from other processes falls on all of them alike.
        lat: dict[str, dict[int, list[float]]] = {bk: {b: [] for b in batches} for bk in backends}
        for r in range(args.rounds):
            for b in batches:
                for backend, emb in embedders.items():
                    lat[backend][b] += time_cell(emb, pools[b], args.seconds / args.rounds, args.min_iters)
            print(f"  round {r + 1}/{args.rounds} done, load {os.getloadavg()[0]:.2f}", file=sys.stderr)
        results = {bk: {b: summarise(lat[bk][b], b) for b in batches} for bk in backends}
        del embedders
    load_after = os.getloadavg()

    base = results.get("torch", {})
    header = "| backend | " + " | ".join(f"batch {b}: crops/s (ms/batch, x torch)" for b in batches) + " |"
    lines = [header, "|" + "---|" * (len(batches) + 1)]
    for backend, row in results.items():
        cells = []
        for b in batches:
            r = row[b]
            ratio = f", {r['crops_per_s'] / base[b]['crops_per_s']:.2f}x" if b in base else ""
            cells.append(f"{r['crops_per_s']:.1f} ({r['latency_ms_median']:.1f} ms{ratio})")
        lines.append(f"| {backend} | " + " | ".join(cells) + " |")
    model = args.weights or f"{args.random} random init"
    print(f"model: {model}; input from the checkpoint spec; {args.threads} threads; "
          f"load average before {load_before[0]:.2f}, after {load_after[0]:.2f}; {platform.processor() or 'cpu'}"
          + (f"; GPU {torch.cuda.get_device_name()}, torch {torch.__version__}" if torch.cuda.is_available() else ""))
    print("\n".join(lines))
    for name, why in skipped.items():
        print(f"skipped {name}: {why}")
    if args.json:
        Path(args.json).write_text(json.dumps({"model": model, "threads": args.threads, "batches": batches,
                                               "load_before": load_before, "load_after": load_after,
                                               "results": results, "skipped": skipped}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
