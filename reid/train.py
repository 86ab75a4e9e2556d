"""The shared training loop and evaluation; the training methods are plug-ins (`reid.methods`).

One step: the model's training forward; the method's named loss terms (it may step optimisers of its own
inside, as CAL's clothes head); the weighted sum backpropagated and the main optimiser (and the method's
per-step optimisers) stepped; every term logged per epoch as `<name>_loss`. Before each epoch the method's
`epoch_start` hook runs (FIRe²'s clustering).
"""

from __future__ import annotations

import json
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from reid.checkpoint import restore_training, save_checkpoint, zero_denormals
from reid.config import Recipe, RecipeError
from reid.datasets import EvalSplit, ReIDDataset, load_dataset
from reid.datasets.base import with_extra_training
from reid.evaluation import cosine_distance, evaluate
from reid.inference.base import Embedder, PreprocessSpec, l2_normalise, preprocess_crops
from reid.methods import LossTerm, Method, build_method
from reid.models import ReIDModel, build_model
from reid.samplers import OutfitPKBatchSampler, PKBatchSampler
from reid.transforms import build_train_transform, read_record


def pick_device(name: str) -> torch.device:
    if name == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("recipe asks for device: cuda but no CUDA GPU is visible; use device: auto or cpu")
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    return torch.device(name)


def set_determinism(seed: int, device: torch.device) -> None:
    if device.type == "cuda":
        # cuBLAS needs a fixed workspace for deterministic matmuls.
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.backends.cudnn.benchmark = False
    torch.use_deterministic_algorithms(True)
    torch.manual_seed(seed)


# ----------------------------------------------------------------------------------------------- evaluation

@torch.no_grad()
def extract_features(model: ReIDModel | Embedder, records, spec: PreprocessSpec, device: torch.device,
                     batch_size: int = 128, flip: bool = True, progress: bool = False) -> np.ndarray:
    """Identity features, L2-normalised; with `flip`, the sum of image and mirror features (as CAL).

    `model` may also be a runtime embedder (`reid.inference.create_embedder`: an ONNX or OpenVINO file, ours or
    a third party's), which preprocesses the crops itself as the pipeline does.
    """
    if not isinstance(model, torch.nn.Module):
        return _embedder_features(model, records, batch_size, flip, progress)
    model.eval()
    out = []
    starts = range(0, len(records), batch_size)
    for s in tqdm(starts, desc="features", disable=not progress, leave=False, file=sys.stderr):
        crops = [read_record(r) for r in records[s:s + batch_size]]
        x = torch.from_numpy(preprocess_crops(crops, spec)).to(device)
        f = model(x)
        if flip:
            f = f + model(torch.flip(x, dims=[3]))
        out.append(torch.nn.functional.normalize(f, dim=1).cpu().numpy())
    if not out:
        return np.zeros((0, model.feature_dim), np.float32)
    return np.concatenate(out).astype(np.float32)


def _embedder_features(embedder: Embedder, records, batch_size: int, flip: bool, progress: bool) -> np.ndarray:
    if flip:  # the pipeline's reid.flip_sum: one statement of the rule for both
        from reid.inference.flip import FlipSumEmbedder

        embedder = FlipSumEmbedder(embedder)
    out = []
    for s in tqdm(range(0, len(records), batch_size), desc="features", disable=not progress, leave=False,
                  file=sys.stderr):
        crops = [read_record(r) for r in records[s:s + batch_size]]
        out.append(l2_normalise(embedder.embed(crops).identity))
    return np.concatenate(out).astype(np.float32) if out else np.zeros((0, 0), np.float32)


def _ids(records, attr: str) -> np.ndarray:
    return np.asarray([getattr(r, attr) for r in records], dtype=np.int64)


def evaluate_split(model: ReIDModel | Embedder, split: EvalSplit, spec: PreprocessSpec, device: torch.device,
                   batch_size: int = 128, flip: bool = True, progress: bool = False) -> dict[str, dict[str, float]]:
    qf = extract_features(model, split.query, spec, device, batch_size, flip, progress)
    gf = extract_features(model, split.gallery, spec, device, batch_size, flip, progress)
    dist = cosine_distance(qf, gf)
    q, g = split.query, split.gallery
    return {label: evaluate(dist, _ids(q, "pid"), _ids(g, "pid"), _ids(q, "camid"), _ids(g, "camid"),
                            _ids(q, "clothes"), _ids(g, "clothes"), mode=mode)
            for label, mode in split.protocols.items()}


def evaluate_dataset(model: ReIDModel | Embedder, dataset: ReIDDataset, spec: PreprocessSpec, device: torch.device,
                     batch_size: int = 128, flip: bool = True, progress: bool = False) -> dict[str, dict[str, float]]:
    """-> {"<split>/<label>": {"rank1", "rank5", "rank10", "mAP", "n_valid", "n_skipped"}}."""
    results = {}
    for split in dataset.eval_splits:
        for label, metrics in evaluate_split(model, split, spec, device, batch_size, flip, progress).items():
            results[f"{split.name}/{label}"] = metrics
    return results


def format_results(results: dict[str, dict[str, float]]) -> str:
    lines = [f"{'protocol':<34} {'R-1':>6} {'R-5':>6} {'R-10':>6} {'mAP':>6}  queries (skipped)"]
    for key, m in results.items():
        lines.append(f"{key:<34} {m['rank1']:6.1f} {m['rank5']:6.1f} {m['rank10']:6.1f} {m['mAP']:6.1f}"
                     f"  {int(m['n_valid'])} ({int(m['n_skipped'])})")
    return "\n".join(lines)


# ------------------------------------------------------------------------------------------------- training

@dataclass
class EpochStats:
    """Per-epoch means of the total loss, each method term (`<name>_loss`) and each logged value."""

    names: tuple[str, ...]
    sums: dict[str, float] = field(default_factory=dict)
    batches: int = 0

    def __post_init__(self) -> None:
        self.sums = {n: 0.0 for n in self.names}

    def add(self, **values) -> None:
        for k, v in values.items():
            if k not in self.sums:
                raise RuntimeError(f"training method logged {k!r}, which it does not declare in its terms/logs")
            self.sums[k] += float(v)

    def mean(self) -> dict[str, float]:
        n = max(self.batches, 1)
        return {k: round(v / n, 5) for k, v in self.sums.items()}


class Trainer:
    def __init__(self, recipe: Recipe, log=print, progress: bool = True):
        self.r = recipe
        self.log = log
        self.progress = progress
        self.device = pick_device(recipe.device)
        # Tiny gradients leave weights and Adam's moments as denormal floats, which x86 CPUs compute with at a
        # fraction of their speed: a 48-epoch run on three SynthCC sets slowed from 41 to 235 s an epoch, its
        # backward pass 7.7x slower than with them flushed (2026-12-05). Flush to zero is set before the thread
        # pool starts (threads inherit it; one started earlier keeps its own), and what still appears is zeroed
        # after every epoch (`_zero_denormals`). Values below 1.2e-38 change nothing a model learns.
        self.cpu_flush = self.device.type == "cpu"
        if self.cpu_flush:
            torch.set_flush_denormal(True)
        if recipe.threads:
            torch.set_num_threads(recipe.threads)
        set_determinism(recipe.seed, self.device)
        self.dataset = load_dataset(recipe.data.dataset, recipe.data.root)
        if recipe.data.extra_train:
            from reid.datasets.masks import without_masks

            extras = [load_dataset(e.dataset, e.root) for e in recipe.data.extra_train]
            extras = [without_masks(d) if e.unmasked else d for d, e in zip(extras, recipe.data.extra_train)]
            self.dataset = with_extra_training(self.dataset, extras)
            self.dataset.notes += [f"extra training set at {e.root} declared unmasked: CRE and BSGA skip its images"
                                   for e in recipe.data.extra_train if e.unmasked]
        if recipe.data.masks:
            from reid.datasets.masks import attach_masks

            attach_masks(self.dataset, recipe.data.masks)
        levelling = {}
        if recipe.data.colour_levelling:
            from reid.datasets.levelling import level_dataset
            from reid.inference.levelling import SPEC_KEY

            region = "centre" if recipe.data.colour_levelling is True else recipe.data.colour_levelling
            self.dataset, reference = level_dataset(self.dataset, region=region)
            levelling = {SPEC_KEY: {"reference": reference, "region": region}}
            self.log(f"colour levelling ({region}): every camera to BGR {[round(v, 1) for v in reference]}")
        self.method: Method = build_method(recipe, self.dataset)
        arch = recipe.model.model_copy(update=self.method.arch_updates())
        try:
            self.model = build_model(arch).to(self.device)
        except ValueError as exc:
            raise RecipeError(f"recipe {recipe.name}: model: {exc}") from None
        self.method.attach(self.model, self.device)
        norm = {k: tuple(v) for k in ("mean", "std") if (v := getattr(recipe.data, k)) is not None}
        self.spec = PreprocessSpec(height=recipe.data.height, width=recipe.data.width, **norm,
                                   identity_dim=self.model.feature_dim, method=recipe.loss.method,
                                   train_dataset=self.dataset.name,
                                   extra={"distance": "cosine", "flip_sum": recipe.eval.flip,
                                          "backbone": arch.backbone, "recipe": recipe.name, **levelling})
        self.opt = self._main_optimizer()
        self.optimizers: dict[str, torch.optim.Optimizer] = {"main": self.opt, **self.method.optimizers()}
        transform = build_train_transform(self.spec, **recipe.augment.model_dump())
        self.train_records = self.method.train_records()
        self.train_set = self.method.train_set(self.train_records, self.spec, transform, recipe.data.cache_images)
        self.method_stats: dict[str, Any] | None = None
        self.sampler = self._sampler()
        self.out = Path(recipe.output_dir)
        self.selection = recipe.eval.selection or self.dataset.selection
        self.start_epoch = 0
        self.history: list[dict[str, Any]] = []

    # -- helpers
    def _sampler(self) -> PKBatchSampler:
        d, train = self.r.data, self.dataset.train
        p = d.batch_size // d.num_instances
        if d.sampler == "pk":
            return PKBatchSampler([r.pid for r in train], p, d.num_instances, seed=self.r.seed)
        if not self.method.uses_clothes_labels:
            raise RecipeError(f"recipe {self.r.name}: data.sampler outfits reads clothes labels, which "
                              f"loss.method {self.r.loss.method} must train without; use data.sampler: pk")
        if any(r.clothes < 0 for r in train):
            raise RecipeError(f"recipe {self.r.name}: data.sampler outfits needs clothes labels, which data set "
                              f"{self.dataset.name} does not have; use data.sampler: pk")
        return OutfitPKBatchSampler([r.pid for r in train], [r.clothes for r in train], p, d.num_instances,
                                    seed=self.r.seed, outfits=d.outfits_per_identity)

    def _main_optimizer(self) -> torch.optim.Optimizer:
        params = [p for p in self.model.parameters() if p.requires_grad] + self.method.main_parameters()
        return torch.optim.Adam(params, lr=self.r.optim.lr, weight_decay=self.r.optim.weight_decay)

    def lr_at(self, epoch: int) -> float:
        """Warm-up and step schedule from the epoch alone (so resuming needs no scheduler state)."""
        o = self.r.optim
        lr = o.lr * o.gamma ** sum(epoch >= m for m in o.milestones)
        if epoch < o.warmup_epochs:
            lr *= o.warmup_factor + (1 - o.warmup_factor) * epoch / o.warmup_epochs
        return lr

    def resume(self, path: str | Path) -> None:
        state = restore_training(path, self.model, self.optimizers, heads=self.method.heads)
        if state.get("recipe") != self.r.model_dump(mode="json"):
            self.log(f"warning: {path} was written by a different recipe; continuing with the current one")
        self.start_epoch = int(state["epoch"])
        self.history = list(state.get("history", []))
        self.log(f"resumed from {path} after epoch {self.start_epoch}")

    def _loader(self, epoch: int) -> torch.utils.data.DataLoader:
        self.sampler.set_epoch(epoch)
        g = torch.Generator().manual_seed(self.r.seed * 1000 + epoch)
        return torch.utils.data.DataLoader(self.train_set, batch_sampler=self.sampler,
                                           num_workers=self.r.data.num_workers, generator=g,
                                           pin_memory=self.device.type == "cuda",
                                           persistent_workers=False)

    def _zero_denormals(self) -> int:
        """Zero denormal weights and optimiser moments (see `__init__`); returns how many were found."""
        tensors = [*self.model.parameters(), *self.method.heads.parameters()]
        for opt in self.optimizers.values():
            tensors += [v for state in opt.state.values() for v in state.values() if torch.is_tensor(v)]
        return zero_denormals(tensors)

    def train_epoch(self, epoch: int) -> dict[str, float]:
        r = self.r
        method = self.method
        # Re-seed per epoch: augmentations in the main process depend only on (seed, epoch).
        torch.manual_seed(r.seed * 1000 + epoch)
        start = method.epoch_start(self, epoch)
        self.method_stats = start.stats
        if start.reset_main_optimizer:
            self.opt = self._main_optimizer()
            self.optimizers["main"] = self.opt
        torch.manual_seed(r.seed * 1000 + epoch)  # the same random stream whatever the hook did
        for group in self.opt.param_groups:  # after the hook, which may have re-created the main Adam
            group["lr"] = self.lr_at(epoch)
        self.model.train()
        method.heads.train()
        stats = EpochStats(("loss", *(f"{t}_loss" for t in method.terms), *method.logs))
        loader = self._loader(epoch)
        bar = tqdm(loader, desc=f"epoch {epoch + 1}/{r.optim.epochs}", disable=not self.progress,
                   file=sys.stderr, mininterval=2.0, leave=False)
        for images, pids, aux, _cams, *extra in bar:
            images, pids, aux = images.to(self.device), pids.to(self.device), aux.to(self.device)
            images = method.before_forward(self, images, [e.to(self.device) for e in extra], epoch)
            out = self.model.forward_train(images)
            step = method.step(self, out, pids, aux, epoch)
            loss = _weighted_sum(step.terms)
            extra = method.step_optimizers()
            self.opt.zero_grad(set_to_none=True)
            for opt in extra:
                opt.zero_grad(set_to_none=True)
            loss.backward()
            self.opt.step()
            for opt in extra:
                opt.step()
            stats.batches += 1
            stats.add(loss=loss.detach(), **{f"{k}_loss": t.value.detach() for k, t in step.terms.items()},
                      **step.logs)
            if self.progress:
                acc = stats.sums.get("id_acc", 0.0) / stats.batches
                bar.set_postfix(loss=f"{loss.item():.3f}", id_acc=f"{acc:.2f}")
        bar.close()
        if self.cpu_flush:
            # once an epoch: they build up over epochs, and a pass over every weight and moment costs ~30 ms
            self._zero_denormals()
        if stats.batches == 0:
            raise RuntimeError("the P x K sampler produced no batch; lower data.batch_size")
        return stats.mean()

    def run(self) -> dict[str, Any]:
        r = self.r
        self.out.mkdir(parents=True, exist_ok=True)
        (self.out / "recipe.json").write_text(r.model_dump_json(indent=2))
        self.log(self.dataset.summary())
        self.log(f"model {r.model.backbone} ({sum(p.numel() for p in self.model.parameters()) / 1e6:.2f} M params), "
                 f"feature {self.model.feature_dim}-d, method {r.loss.method}, device {self.device}, "
                 f"threads {torch.get_num_threads()}, seed {r.seed}")
        for epoch in range(self.start_epoch, r.optim.epochs):
            t0 = time.perf_counter()
            train_stats = self.train_epoch(epoch)
            record: dict[str, Any] = {"epoch": epoch + 1, "lr": self.lr_at(epoch), "train": train_stats,
                                      "seconds": round(time.perf_counter() - t0, 1)}
            if self.method_stats is not None:
                record[self.method.name] = self.method_stats
            last = epoch + 1 == r.optim.epochs
            if (epoch + 1) % r.eval.every == 0 or last:
                record["eval"] = evaluate_dataset(self.model, self.dataset, self.spec, self.device,
                                                  r.eval.batch_size, r.eval.flip)
                if self.selection not in record["eval"]:
                    raise ValueError(f"eval.selection {self.selection!r} is not one of {sorted(record['eval'])}")
                best = self.best_record()
                if best is None or record["eval"][self.selection]["rank1"] > best["eval"][self.selection]["rank1"]:
                    save_checkpoint(self.out / "model_best.safetensors", self.model, self.spec, inference_only=True,
                                    train_state={"epoch": epoch + 1, "metrics": record["eval"]})
            self.history.append(record)
            self.log(self._epoch_line(record))
            if "eval" in record:
                self.log(format_results(record["eval"]))
            with (self.out / "history.jsonl").open("a") as f:
                f.write(json.dumps(record) + "\n")
            save_checkpoint(self.out / "last.safetensors", self.model, self.spec, inference_only=False,
                            optimizers=self.optimizers, heads=self.method.heads,
                            train_state={"epoch": epoch + 1, "seed": r.seed, "history": self.history,
                                         "recipe": r.model_dump(mode="json")})
        save_checkpoint(self.out / "model_last.safetensors", self.model, self.spec, inference_only=True,
                        train_state={"epoch": r.optim.epochs})
        summary = self.summary()
        (self.out / "summary.json").write_text(json.dumps(summary, indent=2))
        return summary

    def best_record(self) -> dict[str, Any] | None:
        evaluated = [h for h in self.history if "eval" in h]
        if not evaluated:
            return None
        # First epoch with the highest selection rank-1 (ties keep the earlier epoch, as ">" does above).
        return max(evaluated, key=lambda h: (h["eval"][self.selection]["rank1"], -h["epoch"]))

    def summary(self) -> dict[str, Any]:
        last = next(h for h in reversed(self.history) if "eval" in h)
        best = self.best_record()
        return {"recipe": self.r.name, "dataset": self.dataset.name, "method": self.r.loss.method,
                "seed": self.r.seed, "selection": self.selection,
                "last_epoch": last["epoch"], "last": last["eval"],
                "best_epoch": best["epoch"], "best": best["eval"],
                "train_seconds": round(sum(h["seconds"] for h in self.history), 1)}

    @staticmethod
    def _epoch_line(rec: dict[str, Any]) -> str:
        t = rec["train"]
        parts = [f"epoch {rec['epoch']}", f"lr {rec['lr']:.2e}", f"loss {t['loss']:.3f}"]
        # every term and logged value the method reported this epoch (zeros: terms not yet on)
        parts += [f"{k.removesuffix('_loss')} {v:.3f}" for k, v in t.items() if k != "loss" and v]
        if "fire2" in rec:
            f = rec["fire2"]
            parts.append(f"clusters {f['classes']} ({f['clusters_per_id']:.2f}/id, singletons "
                         f"{f['singleton_frac']:.2f}, {f['seconds']:.0f}s)")
        parts.append(f"{rec['seconds']:.0f}s")
        return "  ".join(parts)


def _weighted_sum(terms: dict[str, LossTerm]) -> torch.Tensor:
    """sum(weight * value) in insertion order; a weight of 1 adds the value itself."""
    if not terms:
        raise RuntimeError("the training method returned no loss term")
    total = None
    for term in terms.values():
        part = term.value if term.weight == 1.0 else term.weight * term.value
        total = part if total is None else total + part
    return total
