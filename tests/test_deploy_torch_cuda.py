"""PyTorch embedder on a CUDA GPU: parity with the CPU, order kept through the double-buffered upload, half precision.

The GPU tests skip without a CUDA GPU (CI has none); they ran on a lent H200 (README: "GPU figures").
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from reid.checkpoint import save_checkpoint
from reid.export import COSINE_FP16, COSINE_FP32, load_model, pets_crops, torch_features
from reid.inference.base import PreprocessSpec
from reid.models import ArchConfig, build_model

needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA GPU visible to PyTorch")


@pytest.fixture(scope="module")
def checkpoint_and_crops(tmp_path_factory, shared_video):
    torch.manual_seed(0)
    ckpt = tmp_path_factory.mktemp("cuda") / "m.safetensors"
    save_checkpoint(ckpt, build_model(ArchConfig(backbone="resnet18")), PreprocessSpec(), inference_only=True)
    crops = pets_crops(shared_video["pets"], shared_video["pets_gt"], max_crops=100)
    model, spec = load_model(ckpt)
    ref = torch_features(model, crops, spec)[0]
    return ckpt, crops, ref / np.linalg.norm(ref, axis=1, keepdims=True)


@needs_cuda
@pytest.mark.gpu
@pytest.mark.parametrize("half", [False, True])
def test_cuda_embedder_matches_the_cpu_and_keeps_the_order(half, checkpoint_and_crops):
    from reid.inference.torch_backend import TorchEmbedder

    ckpt, crops, ref = checkpoint_and_crops
    # max_batch 8: 100 crops go up in 13 chunks through the two pinned buffers, the last one short.
    emb = TorchEmbedder(ckpt, device="cuda", max_batch=8, half=half)
    assert emb.device.type == "cuda" and emb.half == half
    got = emb.embed(crops).identity
    assert got.shape == ref.shape
    # Row by row: a chunk written into a pinned buffer still being copied, or chunks concatenated out of
    # order, puts another crop's feature in some row (crops are spread over 400 frames and 6+ people).
    cos = (got * ref).sum(1)
    assert cos.min() >= (COSINE_FP16 if half else COSINE_FP32), cos.min()
    one_by_one = np.concatenate([emb.embed([c]).identity for c in crops[:10]])
    assert (one_by_one * got[:10]).sum(1).min() >= (COSINE_FP16 if half else COSINE_FP32)
    assert emb.embed([]).identity.shape == (0, ref.shape[1])


@needs_cuda
@pytest.mark.gpu
def test_auto_backend_runs_a_checkpoint_on_the_gpu(checkpoint_and_crops):
    from reid.inference.factory import create_embedder

    ckpt, crops, ref = checkpoint_and_crops
    emb = create_embedder(ckpt, "auto")
    assert type(emb).__name__ == "TorchEmbedder" and emb.device.type == "cuda"
    assert (emb.embed(crops[:16]).identity * ref[:16]).sum(1).min() >= COSINE_FP32


def test_embedder_knows_its_width_before_the_first_batch(checkpoint_and_crops):
    """Found on the GPU: a checkpoint that does not record its widths gave empty batches a width of 0."""
    from reid.inference.torch_backend import TorchEmbedder

    ckpt, crops, ref = checkpoint_and_crops
    emb = TorchEmbedder(ckpt, device="cpu")
    assert emb.spec.identity_dim == ref.shape[1]
    assert emb.embed([]).identity.shape == (0, ref.shape[1])
