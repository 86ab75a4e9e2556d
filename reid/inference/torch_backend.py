"""PyTorch embedder (CPU or CUDA) reading a `.safetensors` checkpoint written by `python -m reid train`.

Imports only the model definition (`reid.models` via the checkpoint reader), never training code.
On CUDA the uint8 batch is resized into pinned host memory, copied asynchronously on a side stream
and normalised on the GPU, so the host does one uint8 copy per batch instead of a float32 one.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from reid.inference.base import (EmbeddingBatch, PreprocessSpec, l2_normalise, normalisation_affine, preprocess_crops,
                                 resize_crops)


def split_outputs(out) -> tuple[torch.Tensor, torch.Tensor | None]:
    """A model's inference output -> (identity, appearance or None).

    Models return a tensor (identity only), an (identity, appearance) tuple, or a dict with those keys.
    """
    if isinstance(out, torch.Tensor):
        return out, None
    if isinstance(out, dict):
        if "identity" not in out:
            raise ValueError(f"model output dict has keys {sorted(out)}; expected 'identity' (and 'appearance')")
        return out["identity"], out.get("appearance")
    if isinstance(out, (tuple, list)) and 1 <= len(out) <= 2:
        return out[0], (out[1] if len(out) == 2 else None)
    raise TypeError(f"unsupported model output {type(out).__name__}; return a tensor, a pair or a dict")


class TorchEmbedder:
    def __init__(self, weights: str | Path, device: str = "auto", threads: int = 0, max_batch: int = 64,
                 half: bool = False) -> None:
        from reid.models import load_checkpoint

        if device == "auto":
            device = "cuda" if torch.cuda.is_available() else "cpu"
        if device.startswith("cuda") and not torch.cuda.is_available():
            raise RuntimeError("TorchEmbedder: device cuda requested but no CUDA GPU is visible; use device='cpu'")
        if threads:
            torch.set_num_threads(threads)
        self.device = torch.device(device)
        model, spec = load_checkpoint(weights, self.device)
        self.half = bool(half and self.device.type == "cuda")
        if self.device.type == "cuda":
            model = model.to(memory_format=torch.channels_last)
            if self.half:
                model = model.half()
        self.model = model.eval()
        # Checkpoints need not record their output widths; one dummy forward fills them, so an empty batch
        # (and BatchingEmbedder's empty result) has the model's width, not 0.
        self.spec = spec if spec.identity_dim else spec_with_dims(self.model, spec)
        self.max_batch = max_batch
        self._pinned: list[torch.Tensor | None] = [None, None]
        self._slot = 0
        if self.device.type == "cuda":
            self._stream = torch.cuda.Stream(self.device)
            self._copied = [torch.cuda.Event(), torch.cuda.Event()]
            gain, offset, self._flip = normalisation_affine(spec)
            self._gain = torch.from_numpy(gain).to(self.device).view(1, 3, 1, 1)
            self._offset = torch.from_numpy(offset).to(self.device).view(1, 3, 1, 1)

    def _cuda_input(self, crops: list[np.ndarray]) -> torch.Tensor:
        """Resize into one of two pinned buffers, upload it on a side stream, normalise on the GPU.

        Two buffers alternate so the host resizes chunk k+1 while chunk k is still being copied; an
        event per buffer keeps the host from overwriting a buffer whose copy has not finished.
        """
        n = len(crops)
        k = self._slot = 1 - self._slot
        if self._pinned[k] is None or self._pinned[k].shape[0] < n:
            self._pinned[k] = torch.empty((max(n, self.max_batch), self.spec.height, self.spec.width, 3),
                                          dtype=torch.uint8).pin_memory()
        self._copied[k].synchronize()
        host = self._pinned[k]
        resize_crops(crops, self.spec, out=host.numpy())
        with torch.cuda.stream(self._stream):
            x = host[:n].to(self.device, non_blocking=True)
            self._copied[k].record(self._stream)
            x = x.permute(0, 3, 1, 2)
            if self._flip:
                x = x.flip(1)
            x = (x.float() * self._gain + self._offset).contiguous(memory_format=torch.channels_last)
            if self.half:
                x = x.half()
        torch.cuda.current_stream(self.device).wait_stream(self._stream)
        x.record_stream(torch.cuda.current_stream(self.device))
        return x

    @torch.inference_mode()
    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        return split_outputs(self.model(x))

    @torch.inference_mode()
    def embed(self, crops: list[np.ndarray]) -> EmbeddingBatch:
        identity_parts, appearance_parts = [], []
        for start in range(0, len(crops), self.max_batch):
            chunk = crops[start:start + self.max_batch]
            if self.device.type == "cuda":
                x = self._cuda_input(chunk)
            else:
                x = torch.from_numpy(preprocess_crops(chunk, self.spec))
            identity, appearance = self.forward(x)
            # Kept on the device until the end so chunk k+1's upload overlaps chunk k's compute.
            identity_parts.append(identity.float())
            if appearance is not None:
                appearance_parts.append(appearance.float())
        if not identity_parts:
            return EmbeddingBatch(np.zeros((0, self.spec.identity_dim), np.float32), None)
        identity = l2_normalise(torch.cat(identity_parts).cpu().numpy())
        appearance = l2_normalise(torch.cat(appearance_parts).cpu().numpy()) if appearance_parts else None
        return EmbeddingBatch(identity, appearance)


def spec_with_dims(model: torch.nn.Module, spec: PreprocessSpec) -> PreprocessSpec:
    """The spec with identity/appearance dimensions filled from one dummy forward."""
    param = next(model.parameters())
    with torch.inference_mode():
        x = torch.zeros((2, 3, spec.height, spec.width), dtype=param.dtype, device=param.device)
        identity, appearance = split_outputs(model.eval()(x))
    return PreprocessSpec(**{**spec.__dict__, "identity_dim": int(identity.shape[1]),
                             "appearance_dim": int(appearance.shape[1]) if appearance is not None else 0})
