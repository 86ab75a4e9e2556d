"""Recorder for the training-method refactor's parity test (tests/test_reid_methods.py).

Trains a tiny recipe for a few epochs on `reid_fixtures.make_synthcc` (CPU, 1 thread, deterministic
algorithms, fixed seed) and records, per optimisation step, the value of every tensor `backward()` is
called on (CAL: the clothes loss, then the total; others: the total), the per-epoch logged means, and a
checksum of the backbone's weights. It only touches `Trainer(...)`, `train_epoch` and `model.backbone`, so
the same recipe runs on the code before and after the refactor.

    PYTHONPATH=. python tests/method_parity.py OUT.json   # prints/writes the records of all methods
"""

from __future__ import annotations

import json
import sys
import tempfile
from pathlib import Path

import torch
import yaml

METHODS = ("baseline", "cal", "fire2")
EPOCHS = 3


def recipe(root: Path, out: Path, method: str) -> Path:
    raw = {
        "name": f"parity-{method}", "seed": 7, "device": "cpu", "threads": 1, "output_dir": str(out),
        "data": {"dataset": "synthcc", "root": str(root), "height": 32, "width": 16, "batch_size": 8,
                 "num_instances": 2, "num_workers": 0, "cache_images": True},
        "model": {"backbone": "resnet_lite", "lite_widths": [8, 8, 16, 16]},
        "loss": {"method": method, "triplet_weight": 1.0, "start_epoch_cal": 1,
                 "fire2": {"start_epoch": 1, "eps": 0.5, "reset_optimizer": True, "k1": 6, "k2": 3}},
        "optim": {"epochs": EPOCHS, "lr": 1e-3, "milestones": [2], "warmup_epochs": 1},
        "eval": {"every": EPOCHS, "batch_size": 32},
    }
    path = out.with_suffix(".yaml")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(raw))
    return path


def record(root: Path, out: Path, method: str) -> dict:
    from reid.config import load_recipe
    from reid.train import Trainer

    steps: list[float] = []
    real_backward = torch.Tensor.backward

    def spy(self, *args, **kwargs):
        steps.append(float(self.detach()))
        return real_backward(self, *args, **kwargs)

    torch.Tensor.backward = spy
    try:
        trainer = Trainer(load_recipe(recipe(root, out, method)), log=lambda *_: None, progress=False)
        epochs = [trainer.train_epoch(e) for e in range(EPOCHS)]
    finally:
        torch.Tensor.backward = real_backward
    checksum = sum(float(p.detach().double().sum()) for p in trainer.model.backbone.parameters())
    keys = ("loss", "id_loss", "tri_loss", "adv_loss", "clothes_loss", "ffm_loss", "far_loss", "id_acc")
    return {"backward": steps, "epochs": [{k: e[k] for k in keys if k in e} for e in epochs],
            "backbone_sum": checksum}


def record_all() -> dict:
    from tests.reid_fixtures import make_synthcc

    with tempfile.TemporaryDirectory() as tmp:
        root = make_synthcc(Path(tmp) / "data", n_train=6, n_test=4, size=(32, 16))
        return {m: record(root, Path(tmp) / m, m) for m in METHODS}


if __name__ == "__main__":
    threads, det = torch.get_num_threads(), torch.are_deterministic_algorithms_enabled()
    result = record_all()
    text = json.dumps(result, indent=1)
    if len(sys.argv) > 1:
        Path(sys.argv[1]).write_text(text)
    print(text)
