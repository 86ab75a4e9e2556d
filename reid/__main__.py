"""`python -m reid train RECIPE.yaml ...`, `python -m reid eval --weights W --dataset NAME --root DIR`, `python -m reid export`,
`python -m reid calibrate --weights W --root DIR`,
`python -m reid import --from simple-ccreid|fire2 --weights model.pth.tar --out model.safetensors`.

Exit status: 0 success, 2 configuration or data-layout error (the message says what and where), 1 other failures.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import yaml


class UsageError(Exception):
    """A wrong argument or input file: printed as one `error:` line, exit 2."""


def _parse_set(items: list[str]) -> dict:
    out = {}
    for item in items:
        if "=" not in item:
            raise SystemExit(f"--set expects KEY=VALUE (e.g. optim.epochs=5), got {item!r}")
        key, value = item.split("=", 1)
        out[key] = yaml.safe_load(value)
    return out


def cmd_train(args: argparse.Namespace) -> int:
    from reid.config import load_recipe
    from reid.train import Trainer, format_results

    overrides = _parse_set(args.set)
    for key, value in (("data.root", args.root), ("output_dir", args.output_dir), ("optim.epochs", args.epochs),
                       ("seed", args.seed), ("device", args.device), ("threads", args.threads)):
        if value is not None:
            overrides[key] = value
    recipe = load_recipe(args.recipe, overrides)
    trainer = Trainer(recipe, progress=not args.no_progress)
    if args.resume:
        path = Path(recipe.output_dir) / "last.safetensors" if args.resume == "auto" else Path(args.resume)
        if path.is_file():
            trainer.resume(path)
        elif args.resume != "auto":
            raise FileNotFoundError(f"--resume {path}: no such checkpoint")
    if trainer.start_epoch >= recipe.optim.epochs:
        print(f"nothing to do: {recipe.output_dir} already holds all {recipe.optim.epochs} epochs")
        return 0
    s = trainer.run()
    print(f"\nlast epoch ({s['last_epoch']}):\n{format_results(s['last'])}")
    print(f"\nbest epoch ({s['best_epoch']}, by {s['selection']} rank-1 on the test split, as the papers' code "
          f"selects; quote the last epoch for honest comparisons):\n{format_results(s['best'])}")
    print(f"\ncheckpoints: {recipe.output_dir}/model_last.safetensors, model_best.safetensors, last.safetensors")
    return 0


def cmd_eval(args: argparse.Namespace) -> int:
    from reid.datasets import LOADERS

    # the cheap checks first, each one line (exit 2): the data-set name, the weights file, the data-set root
    if args.dataset.lower().replace("-", "").replace("_", "") not in LOADERS:
        raise UsageError(f"--dataset {args.dataset!r}: unknown data set; choose one of {', '.join(sorted(LOADERS))}")
    if not Path(args.weights).is_file():
        raise UsageError(f"--weights {args.weights}: no such file (a .safetensors checkpoint written by `reid train`, "
                         "or an ONNX / OpenVINO ReID file)")
    if not Path(args.root).is_dir():
        raise UsageError(f"--root {args.root}: no such folder")
    import torch

    from reid.models import load_checkpoint
    from reid.train import evaluate_dataset, format_results, pick_device

    if args.threads:
        torch.set_num_threads(args.threads)
    device = pick_device(args.device)
    if Path(args.weights).suffix.lower() in (".onnx", ".xml"):
        # A deployed file (an export of ours or a third party's): scored through the runtime's own embedder.
        if args.feature:
            raise UsageError("--feature applies to .safetensors checkpoints; an ONNX / OpenVINO file has one output")
        from reid.inference.factory import create_embedder

        try:
            model = create_embedder(args.weights, backend="auto", threads=args.threads, max_batch=args.batch_size,
                                    device="cpu" if device.type == "cpu" else "auto", precision="f32")
        except Exception as exc:
            raise UsageError(f"--weights {args.weights}: cannot run it as a ReID model "
                             f"({type(exc).__name__}: {exc})") from exc
        spec = model.spec
    else:
        try:
            model, spec = load_checkpoint(args.weights, device, args.feature)
        except Exception as exc:  # not a checkpoint of ours: say so in one line
            raise UsageError(f"--weights {args.weights}: not a checkpoint `reid train` or `reid import` wrote "
                             f"({type(exc).__name__}: {exc})") from exc
    from reid.datasets.levelling import load_for_model

    dataset = load_for_model(args.dataset, args.root, spec)  # levelled as the model's training cameras were
    print(dataset.summary())
    print(f"model: {args.weights} ({spec.method}, trained on {spec.train_dataset}, input {spec.height}x{spec.width})")
    results = evaluate_dataset(model, dataset, spec, device, args.batch_size, flip=not args.no_flip,
                               progress=not args.no_progress)
    print(format_results(results))
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2))
    return 0


def _input_size(text: str | None) -> tuple[int, int] | None:
    """`--input-size HxW` as (height, width)."""
    from reid.export import ExportError

    if text is None:
        return None
    parts = text.lower().split("x")
    if len(parts) != 2 or not all(p.strip().isdigit() and int(p) > 0 for p in parts):
        raise ExportError(f"--input-size {text!r}: give HEIGHTxWIDTH in pixels, e.g. 224x112")
    return int(parts[0]), int(parts[1])


def cmd_export(args: argparse.Namespace) -> int:
    from reid.export import ExportError, ExportOptions, run_export
    from reid.inference.tensorrt_backend import BatchProfile

    try:
        batch = BatchProfile.parse(args.batch)
    except ValueError as exc:
        raise ExportError(str(exc)) from exc
    opts = ExportOptions(
        weights=Path(args.weights), format=args.format, out=Path(args.out) if args.out else None, fp16=args.fp16,
        int8=args.int8, calib=Path(args.calib) if args.calib else None, calib_size=args.calib_size,
        eval_root=Path(args.eval_root) if args.eval_root else None, batch=batch,
        parity_video=Path(args.parity_video) if args.parity_video else None,
        parity_gt=Path(args.parity_gt) if args.parity_gt else None, threads=args.threads, feature=args.feature,
        input_size=_input_size(args.input_size))
    report = run_export(opts)
    print(report.format_text())
    if not report.passed:
        failed = []
        if report.spec_mismatches:
            failed.append("its declared preprocessing differs from the checkpoint's (" +
                          "; ".join(report.spec_mismatches) + ")")
        if not all(p.passed for p in report.parity):
            failed.append("its output parity check")
        if not all(r.passed for r in report.retrieval):
            failed.append("its retrieval (rank-1/mAP drop) gate")
        print(f"error: {args.weights} -> {report.artefact} failed {' and '.join(failed)} (see above and "
              f"{report.artefact}.export.json); the file was kept for inspection but must not be deployed",
              file=sys.stderr)
        return 1
    return 0


def cmd_calibrate(args: argparse.Namespace) -> int:
    from reid.calibrate import calibrate, format_calibration, write_thresholds

    try:
        result = calibrate(args.weights, args.dataset, args.root, backend=args.backend, threads=args.threads,
                           gallery_people=args.gallery_people, returning_share=args.returning_share,
                           window_people=args.window_people, flip_sum=args.flip_sum, centring=args.centre)
    except (FileNotFoundError, ValueError) as exc:
        print(f"error: calibrate {args.weights} on {args.root}: {exc}", file=sys.stderr)
        return 2
    print(format_calibration(result))
    if args.json:
        Path(args.json).write_text(result.to_json())
    if args.write:
        try:
            write_thresholds(args.weights, result.suggested())
        except ValueError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2
        print(f"wrote the suggested thresholds into {args.weights} (spec extra.matcher); the pipeline uses them "
              "for matcher settings its config leaves unset")
    return 0


def cmd_import(args: argparse.Namespace) -> int:
    import logging

    from reid.import_weights import WeightImportError, import_checkpoint

    if not logging.getLogger().handlers:
        logging.basicConfig(level=logging.INFO, format="%(message)s")
    logging.getLogger("reid.import").setLevel(logging.INFO)
    try:
        result = import_checkpoint(args.weights, args.out, args.source, arch=args.arch, dataset=args.dataset,
                                   pooling=args.pooling)
    except WeightImportError as exc:
        print(f"error: import: {exc}", file=sys.stderr)
        return 2
    print(result.summary())
    return 0


FEATURES = ("neck", "pooled", "centred")
FEATURE_HELP = ("which vector the model returns instead of the one its file records: neck (BN output), pooled "
                "(pre-BN, CSSC's), centred (pre-BN minus the neck's running mean: gives a CSSC model cosine margins "
                "for the matcher)")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m reid", description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="command", required=True)
    t = sub.add_parser("train", help="train a model from a YAML recipe")
    t.add_argument("recipe")
    t.add_argument("--root", help="data-set root (overrides data.root)")
    t.add_argument("--output-dir", help="run folder (overrides output_dir)")
    t.add_argument("--epochs", type=int)
    t.add_argument("--seed", type=int)
    t.add_argument("--device", choices=["auto", "cpu", "cuda"])
    t.add_argument("--threads", type=int, help="torch CPU threads")
    t.add_argument("--resume", nargs="?", const="auto",
                   help="continue from a training checkpoint (default: OUTPUT_DIR/last.safetensors if present)")
    t.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override any recipe key")
    t.add_argument("--no-progress", action="store_true", help="no progress bar")
    t.set_defaults(func=cmd_train)
    e = sub.add_parser("eval", help="evaluate a checkpoint on a data set's protocols")
    e.add_argument("--weights", required=True, help="a .safetensors checkpoint written by `reid train`, or an ONNX "
                   "(.onnx) / OpenVINO (.xml) ReID file, run by the pipeline's embedder")
    e.add_argument("--dataset", required=True)
    e.add_argument("--root", required=True)
    e.add_argument("--batch-size", type=int, default=128)
    e.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto")
    e.add_argument("--threads", type=int, default=0)
    e.add_argument("--no-flip", action="store_true", help="no flip-summed features")
    e.add_argument("--no-progress", action="store_true")
    e.add_argument("--json", help="also write the results to this JSON file")
    e.add_argument("--feature", choices=FEATURES, help=FEATURE_HELP)
    e.set_defaults(func=cmd_eval)
    x = sub.add_parser("export", help="export a checkpoint to ONNX / OpenVINO / TensorRT, with a parity check")
    x.add_argument("--weights", required=True, help="a .safetensors checkpoint written by `reid train`, or an ONNX "
                   "ReID file the pipeline reads (e.g. Intel's 0267: --int8 --format openvino quantises it)")
    x.add_argument("--format", choices=["onnx", "openvino", "tensorrt"], default="onnx")
    x.add_argument("--out", help="output file (.onnx; .xml for openvino; default: beside the weights)")
    x.add_argument("--fp16", action="store_true", help="half-precision weights/compute (parity cosine >= 0.995)")
    x.add_argument("--int8", action="store_true", help="INT8 post-training quantisation (needs --calib)")
    x.add_argument("--calib", help="folder of crops for INT8 calibration (a SynthCC root uses its train/)")
    x.add_argument("--calib-size", type=int, default=300, help="calibration images (default 300)")
    x.add_argument("--eval-root", help="SynthCC root for the INT8 rank-1 check (default: --calib if it is one)")
    x.add_argument("--batch", default="1:16:64", help="MIN:OPT:MAX batch (TensorRT optimisation profile)")
    x.add_argument("--parity-video", help="video for parity crops (default: shared PETS09-S2L1 vtest.avi)")
    x.add_argument("--parity-gt", help="MOT ground truth giving the parity boxes (default: its gt/gt_dev.txt)")
    x.add_argument("--threads", type=int, default=0, help="CPU threads (0: library default)")
    x.add_argument("--feature", choices=FEATURES, help=FEATURE_HELP + "; the exported graph returns it")
    x.add_argument("--input-size", metavar="HxW", help="an OpenVINO IR source at another input size, e.g. 224x112 "
                   "(its whole-map pooling kernel resampled; gated on SynthCC rank-1 against the file as published)")
    x.set_defaults(func=cmd_export)
    c = sub.add_parser("calibrate", help="measure a model's cosine distributions and suggest matcher thresholds")
    c.add_argument("--weights", required=True, help="a model file the pipeline runs (.safetensors, .onnx, .xml)")
    c.add_argument("--root", required=True, help="data-set root whose test people (query + gallery) are measured")
    c.add_argument("--dataset", default="synthcc", help="data-set layout (default synthcc)")
    c.add_argument("--backend", default="auto", help="embedder backend, as reid.backend in the pipeline")
    c.add_argument("--threads", type=int, default=0)
    c.add_argument("--gallery-people", type=int, default=20,
                   help="people a decision is compared with when the threshold is chosen (default 20)")
    c.add_argument("--window-people", type=int, default=4,
                   help="people a decision inside a transit window is compared with (window_threshold; default 4)")
    c.add_argument("--returning-share", type=float, default=0.75,
                   help="share of decisions about people seen before (default 0.75)")
    c.add_argument("--flip-sum", action="store_true",
                   help="embed as the pipeline does with reid.flip_sum: each crop summed with its mirror image")
    c.add_argument("--centre", choices=("none", "camera"), default="none",
                   help="measure on features centred per camera, as the pipeline does with reid.centring: camera")
    c.add_argument("--write", action="store_true", help="store the suggestions in the model file's metadata")
    c.add_argument("--json", help="also write the distributions and suggestions to this JSON file")
    c.set_defaults(func=cmd_calibrate)
    m = sub.add_parser("import", help="import a released Simple-CCReID (CAL) or FIRe² checkpoint")
    m.add_argument("--from", dest="source", required=True, metavar="SOURCE",
                   help="whose code saved the file: simple-ccreid (CAL) or fire2")
    m.add_argument("--weights", required=True, help="the authors' checkpoint (.pth.tar / .pth)")
    m.add_argument("--arch", default="resnet50", help="backbone of the released model (resnet50)")
    m.add_argument("--out", required=True, help="the .safetensors inference checkpoint to write")
    m.add_argument("--dataset", default="unknown", help="data set it was trained on, recorded in the metadata")
    m.add_argument("--pooling", default="auto",
                   help="auto (from the tensors), or avg|max when a 2048-d neck leaves it open")
    m.set_defaults(func=cmd_import)
    return p


def main(argv: list[str] | None = None) -> int:
    from reid.config import RecipeError
    from reid.datasets import DatasetLayoutError
    from reid.export import ExportError

    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except (RecipeError, DatasetLayoutError, ExportError, UsageError, FileNotFoundError) as exc:
        # one line, exit 2: the same style as `python -m pipeline` and `python -m synth`
        print("error: " + " ".join(str(exc).split()), file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted; resume with --resume", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
