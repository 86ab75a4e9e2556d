"""Training and evaluation loops of the ID + triplet baseline, CAL and FIRe².

One CAL iteration (methods.md §1.6): forward once; from `start_epoch_cal` on, (1) step the clothes
head's own Adam on CE over detached features, (2) re-score the live features with the updated clothes
head (its weights detached), (3) step the main optimiser on L_ID + L_CA (+ w * triplet).

FIRe² (methods.md §3, `reid.fire2`): from `loss.fire2.start_epoch` on, every epoch starts by clustering
each identity's training features into pseudo "attribute" classes; the step adds the attribute-aware
loss L_FFM on those classes and the recomposition loss L_FAR. FIRe² never sees clothes labels: its
training records carry clothes = -1 and the loader's third field is the image index instead.
"""

from __future__ import annotations

import json
import os
import sys
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from reid.checkpoint import restore_training, save_checkpoint
from reid.config import Recipe
from reid.datasets import EvalSplit, ReIDDataset, load_dataset
from reid.evaluation import cosine_distance, evaluate
from reid.fire2 import AttributeAwareLoss, AttributeLabels, draw_donors, mine_attributes, recompose
from reid.inference.base import PreprocessSpec, preprocess_crops
from reid.losses import (ClothesBasedAdversarialLoss, ClothesClassificationLoss, CrossEntropyLabelSmooth,
                         TripletLoss)
from reid.models import ReIDModel, build_model
from reid.samplers import PKBatchSampler
from reid.transforms import TrainImages, build_train_transform, read_bgr


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
def extract_features(model: ReIDModel, records, spec: PreprocessSpec, device: torch.device, batch_size: int = 128,
                     flip: bool = True, progress: bool = False) -> np.ndarray:
    """Identity features, L2-normalised; with `flip`, the sum of image and mirror features (as CAL)."""
    model.eval()
    out = []
    starts = range(0, len(records), batch_size)
    for s in tqdm(starts, desc="features", disable=not progress, leave=False, file=sys.stderr):
        crops = [read_bgr(r.path) for r in records[s:s + batch_size]]
        x = torch.from_numpy(preprocess_crops(crops, spec)).to(device)
        f = model(x)
        if flip:
            f = f + model(torch.flip(x, dims=[3]))
        out.append(torch.nn.functional.normalize(f, dim=1).cpu().numpy())
    if not out:
        return np.zeros((0, model.feature_dim), np.float32)
    return np.concatenate(out).astype(np.float32)


def _ids(records, attr: str) -> np.ndarray:
    return np.asarray([getattr(r, attr) for r in records], dtype=np.int64)


def evaluate_split(model: ReIDModel, split: EvalSplit, spec: PreprocessSpec, device: torch.device,
                   batch_size: int = 128, flip: bool = True, progress: bool = False) -> dict[str, dict[str, float]]:
    qf = extract_features(model, split.query, spec, device, batch_size, flip, progress)
    gf = extract_features(model, split.gallery, spec, device, batch_size, flip, progress)
    dist = cosine_distance(qf, gf)
    q, g = split.query, split.gallery
    return {label: evaluate(dist, _ids(q, "pid"), _ids(g, "pid"), _ids(q, "camid"), _ids(g, "camid"),
                            _ids(q, "clothes"), _ids(g, "clothes"), mode=mode)
            for label, mode in split.protocols.items()}


def evaluate_dataset(model: ReIDModel, dataset: ReIDDataset, spec: PreprocessSpec, device: torch.device,
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
    loss: float = 0.0
    id_loss: float = 0.0
    tri_loss: float = 0.0
    adv_loss: float = 0.0
    clothes_loss: float = 0.0
    id_acc: float = 0.0
    clothes_acc: float = 0.0
    clothes_acc_within_id: float = 0.0  # argmax among the person's own outfits: falls as CAL works
    ffm_loss: float = 0.0
    far_loss: float = 0.0
    batches: int = 0

    def add(self, **values: float) -> None:
        for k, v in values.items():
            setattr(self, k, getattr(self, k) + float(v))

    def mean(self) -> dict[str, float]:
        n = max(self.batches, 1)
        return {k: round(getattr(self, k) / n, 5) for k in
                ("loss", "id_loss", "tri_loss", "adv_loss", "clothes_loss", "id_acc", "clothes_acc",
                 "clothes_acc_within_id", "ffm_loss", "far_loss")}


class IndexedTrainImages(TrainImages):
    """(image, pid, image index, camid): FIRe² looks pseudo-labels up by index and never gets clothes."""

    def __getitem__(self, idx: int):
        x, pid, _clothes, cam = super().__getitem__(idx)
        return x, pid, idx, cam


class Trainer:
    def __init__(self, recipe: Recipe, log=print, progress: bool = True):
        self.r = recipe
        self.log = log
        self.progress = progress
        if recipe.threads:
            torch.set_num_threads(recipe.threads)
        self.device = pick_device(recipe.device)
        set_determinism(recipe.seed, self.device)
        self.dataset = load_dataset(recipe.data.dataset, recipe.data.root)
        self.cal = recipe.loss.method == "cal"
        self.fire2 = recipe.loss.method == "fire2"
        f2 = recipe.loss.fire2
        arch = recipe.model.model_copy(update={
            "num_classes": self.dataset.num_train_pids,
            "num_clothes": self.dataset.num_train_clothes if self.cal else 0,
            "far_head": self.fire2 and f2.far_weight > 0})
        self.model = build_model(arch).to(self.device)
        self.spec = PreprocessSpec(height=recipe.data.height, width=recipe.data.width,
                                   identity_dim=self.model.feature_dim, method=recipe.loss.method,
                                   train_dataset=self.dataset.name,
                                   extra={"distance": "cosine", "flip_sum": recipe.eval.flip,
                                          "backbone": arch.backbone, "recipe": recipe.name})
        self.opt = self._main_optimizer()
        self.optimizers: dict[str, torch.optim.Optimizer] = {"main": self.opt}
        if self.cal:
            # CAL's clothes head has its own Adam, never decayed (only the main optimiser has a schedule).
            self.opt_clothes = torch.optim.Adam(self.model.clothes_head.parameters(), lr=recipe.optim.clothes_lr,
                                                weight_decay=recipe.optim.clothes_weight_decay)
            self.optimizers["clothes"] = self.opt_clothes
        self.id_loss = CrossEntropyLabelSmooth(recipe.loss.label_smoothing)
        self.tri_loss = TripletLoss(recipe.loss.triplet_margin, recipe.loss.triplet_distance)
        self.clothes_loss = ClothesClassificationLoss(recipe.loss.clothes_scale)
        self.adv_loss = ClothesBasedAdversarialLoss(recipe.loss.clothes_scale, recipe.loss.adv_epsilon)
        transform = build_train_transform(self.spec, **recipe.augment.model_dump())
        if self.fire2:
            # FIRe² trains without clothes labels: they are removed before anything can read them.
            self.train_records = [replace(r, clothes=-1) for r in self.dataset.train]
            self.pid2clothes = None
            self.train_set = IndexedTrainImages(self.train_records, self.spec, transform,
                                                cache=recipe.data.cache_images)
        else:
            self.train_records = list(self.dataset.train)
            self.pid2clothes = torch.from_numpy(self.dataset.pid2clothes).to(self.device)
            self.train_set = TrainImages(self.train_records, self.spec, transform, cache=recipe.data.cache_images)
        self.ffm_loss = AttributeAwareLoss(f2.scale, f2.epsilon)
        self.attributes: AttributeLabels | None = None
        self.ffm_head: torch.nn.Parameter | None = None
        self.fire2_stats: dict[str, float] | None = None
        self.sampler = PKBatchSampler([r.pid for r in self.dataset.train],
                                      recipe.data.batch_size // recipe.data.num_instances,
                                      recipe.data.num_instances, seed=recipe.seed)
        self.out = Path(recipe.output_dir)
        self.selection = recipe.eval.selection or self.dataset.selection
        self.start_epoch = 0
        self.history: list[dict[str, Any]] = []

    # -- helpers
    def _main_optimizer(self) -> torch.optim.Optimizer:
        params = [p for n, p in self.model.named_parameters() if not n.startswith("clothes_head.") and p.requires_grad]
        return torch.optim.Adam(params, lr=self.r.optim.lr, weight_decay=self.r.optim.weight_decay)

    def lr_at(self, epoch: int) -> float:
        """Warm-up and step schedule from the epoch alone (so resuming needs no scheduler state)."""
        o = self.r.optim
        lr = o.lr * o.gamma ** sum(epoch >= m for m in o.milestones)
        if epoch < o.warmup_epochs:
            lr *= o.warmup_factor + (1 - o.warmup_factor) * epoch / o.warmup_epochs
        return lr

    def mine_attributes(self, epoch: int) -> dict[str, float]:
        """FFM's clustering step: pseudo-labels and a fresh fine-grained head from the current model.

        Uses identities and features only (no clothes). Deterministic: eval-mode features, no flip.
        """
        f2 = self.r.loss.fire2
        t0 = time.perf_counter()
        feats = extract_features(self.model, self.train_records, self.spec, self.device, f2.feature_batch_size,
                                 flip=False)
        pids = _ids(self.train_records, "pid")
        self.attributes = mine_attributes(feats, pids, eps=f2.eps, min_samples=f2.min_samples, k1=f2.k1, k2=f2.k2,
                                          k1_fraction=f2.k1_fraction)
        self.attr_labels = torch.from_numpy(self.attributes.labels).to(self.device)
        self.pid2attr = torch.from_numpy(self.attributes.pid2attr(self.dataset.num_train_pids)).to(self.device)
        # The fine-grained head starts from the cluster centroids and is replaced every epoch, with an Adam
        # of its own; with reset_optimizer, the main Adam restarts too (as the authors' code).
        self.ffm_head = torch.nn.Parameter(torch.from_numpy(self.attributes.centroids).to(self.device))
        self.opt_ffm = torch.optim.Adam([self.ffm_head], lr=self.lr_at(epoch), weight_decay=self.r.optim.weight_decay)
        if f2.reset_optimizer:
            self.opt = self._main_optimizer()
            self.optimizers["main"] = self.opt
        if self.out.is_dir():
            (self.out / "fire2").mkdir(exist_ok=True)
            np.save(self.out / "fire2" / f"labels_epoch{epoch + 1:03d}.npy", self.attributes.labels)
        stats = self.attributes.stats()
        stats["seconds"] = round(time.perf_counter() - t0, 1)
        return stats

    def resume(self, path: str | Path) -> None:
        state = restore_training(path, self.model, self.optimizers)
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

    def train_epoch(self, epoch: int) -> dict[str, float]:
        r = self.r
        # Re-seed per epoch: augmentations in the main process depend only on (seed, epoch).
        torch.manual_seed(r.seed * 1000 + epoch)
        cal_on = self.cal and epoch >= r.loss.start_epoch_cal
        fire2_on = self.fire2 and epoch >= r.loss.fire2.start_epoch
        tri_on = r.loss.triplet_weight > 0 and epoch >= r.loss.triplet_start_epoch
        f2 = r.loss.fire2
        self.fire2_stats = None
        if fire2_on:
            self.fire2_stats = self.mine_attributes(epoch)
            torch.manual_seed(r.seed * 1000 + epoch)  # the same random stream with or without clustering
        for group in self.opt.param_groups:  # after clustering, which may have re-created the main Adam
            group["lr"] = self.lr_at(epoch)
        self.model.train()
        stats = EpochStats()
        loader = self._loader(epoch)
        bar = tqdm(loader, desc=f"epoch {epoch + 1}/{r.optim.epochs}", disable=not self.progress,
                   file=sys.stderr, mininterval=2.0, leave=False)
        for images, pids, clothes, _cams in bar:
            images, pids, clothes = images.to(self.device), pids.to(self.device), clothes.to(self.device)
            fmap = self.model.backbone(images)
            feats = self.model.embed(fmap)
            logits = self.model.id_head(feats)
            id_loss = self.id_loss(logits, pids)
            loss = id_loss
            tri = torch.zeros((), device=self.device)
            if tri_on:
                tri = self.tri_loss(feats, pids)
                loss = loss + r.loss.triplet_weight * tri
            ffm = far = torch.zeros((), device=self.device)
            if fire2_on:
                attr = self.attr_labels[clothes]  # the third field is the image index (IndexedTrainImages)
                if f2.ffm_weight > 0:
                    cos = torch.nn.functional.linear(torch.nn.functional.normalize(feats, dim=1),
                                                     torch.nn.functional.normalize(self.ffm_head, dim=1))
                    ffm = self.ffm_loss(cos, attr, self.pid2attr[pids])
                    loss = loss + f2.ffm_weight * ffm
                if f2.far_weight > 0:
                    donors = draw_donors(attr, f2.far_parts)
                    far_logits = self.model.far_head(self.model.pool(recompose(fmap, donors)))
                    far = self.id_loss(far_logits, pids)
                    loss = loss + f2.far_weight * far
            adv = c_loss = torch.zeros((), device=self.device)
            if cal_on:
                c_logits = self.model.clothes_head(feats.detach())
                c_loss = self.clothes_loss(c_logits, clothes)
                self.opt_clothes.zero_grad(set_to_none=True)
                c_loss.backward()
                self.opt_clothes.step()
                live = self.model.clothes_head(feats, detach_weight=True)
                pos = self.pid2clothes[pids]
                adv = self.adv_loss(live, clothes, pos)
                loss = loss + r.loss.adv_weight * adv
                with torch.no_grad():
                    stats.add(clothes_acc=(c_logits.argmax(1) == clothes).float().mean(),
                              clothes_acc_within_id=(c_logits.masked_fill(~pos, -2).argmax(1) == clothes)
                              .float().mean())
            self.opt.zero_grad(set_to_none=True)
            if fire2_on:
                self.opt_ffm.zero_grad(set_to_none=True)
            loss.backward()
            self.opt.step()
            if fire2_on and f2.ffm_weight > 0:
                self.opt_ffm.step()
            stats.batches += 1
            stats.add(loss=loss.detach(), id_loss=id_loss.detach(), tri_loss=tri.detach(), adv_loss=adv.detach(),
                      clothes_loss=c_loss.detach(), id_acc=(logits.argmax(1) == pids).float().mean(),
                      ffm_loss=ffm.detach(), far_loss=far.detach())
            if self.progress:
                bar.set_postfix(loss=f"{loss.item():.3f}", id_acc=f"{stats.id_acc / stats.batches:.2f}")
        bar.close()
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
            if self.fire2_stats is not None:
                record["fire2"] = self.fire2_stats
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
                            optimizers=self.optimizers,
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
        parts = [f"epoch {rec['epoch']}", f"lr {rec['lr']:.2e}", f"loss {t['loss']:.3f}", f"id {t['id_loss']:.3f}",
                 f"id_acc {t['id_acc']:.3f}"]
        if t["tri_loss"]:
            parts.append(f"tri {t['tri_loss']:.3f}")
        if t["adv_loss"]:
            parts += [f"adv {t['adv_loss']:.3f}", f"clothes_acc {t['clothes_acc']:.3f}",
                      f"clothes_acc_within_id {t['clothes_acc_within_id']:.3f}"]
        if t.get("ffm_loss"):
            parts.append(f"ffm {t['ffm_loss']:.3f}")
        if t.get("far_loss"):
            parts.append(f"far {t['far_loss']:.3f}")
        if "fire2" in rec:
            f = rec["fire2"]
            parts.append(f"clusters {f['classes']} ({f['clusters_per_id']:.2f}/id, singletons "
                         f"{f['singleton_frac']:.2f}, {f['seconds']:.0f}s)")
        parts.append(f"{rec['seconds']:.0f}s")
        return "  ".join(parts)
