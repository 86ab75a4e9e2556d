"""BatchingEmbedder: crops from many callers merged into one batch, by size or deadline."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest
import torch

from reid.checkpoint import save_checkpoint
from reid.export import export_onnx, load_model, pets_crops
from reid.inference.base import EmbeddingBatch, PreprocessSpec
from reid.inference.batching import BatchingEmbedder
from reid.inference.factory import create_embedder
from reid.inference.onnx_backend import OnnxRuntimeEmbedder
from reid.models import ArchConfig, build_model


class Recording:
    """Wraps a real embedder and records the size of every batch it is given."""

    def __init__(self, inner, delay_s: float = 0.0):
        self.inner, self.spec, self.sizes, self.delay_s = inner, inner.spec, [], delay_s

    def embed(self, crops):
        self.sizes.append(len(crops))
        time.sleep(self.delay_s)
        return self.inner.embed(crops)


class Failing:
    spec = PreprocessSpec(identity_dim=4)

    def embed(self, crops):
        raise RuntimeError("backend exploded")


@pytest.fixture(scope="module")
def onnx_model(tmp_path_factory):
    torch.manual_seed(1)
    folder = tmp_path_factory.mktemp("batching")
    ckpt = folder / "m.safetensors"
    save_checkpoint(ckpt, build_model(ArchConfig(backbone="resnet_lite", lite_widths=(8, 16, 32, 64))),
                    PreprocessSpec(height=64, width=32), inference_only=True)
    model, spec = load_model(ckpt)
    export_onnx(model, spec, folder / "m.onnx", "test")
    return folder / "m.onnx"


@pytest.fixture(scope="module")
def crops(shared_video):
    return pets_crops(shared_video["pets"], shared_video["pets_gt"], max_crops=40)


def test_concurrent_callers_share_batches_and_get_their_own_rows(onnx_model, crops):
    inner = OnnxRuntimeEmbedder(onnx_model, threads=1)
    direct = inner.embed(crops).identity
    rec = Recording(inner, delay_s=0.05)  # a busy backend lets the next requests pile up
    per_camera = [list(range(i, len(crops), 4)) for i in range(4)]  # 4 "cameras", 10 crops each
    results: dict[int, EmbeddingBatch] = {}
    with BatchingEmbedder(rec, max_batch=64, max_wait_ms=30) as batcher:
        def camera(i):
            for _ in range(3):
                results[i] = batcher.embed([crops[j] for j in per_camera[i]])

        threads = [threading.Thread(target=camera, args=(i,)) for i in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        stats = batcher.stats
    assert stats.requests == 12 and stats.crops == 120
    assert stats.batches < 12 and max(rec.sizes) > 10  # requests from several cameras were merged
    for i, idx in enumerate(per_camera):
        np.testing.assert_allclose(results[i].identity, direct[idx], atol=1e-5)


def test_full_batch_does_not_wait_for_the_deadline(onnx_model, crops):
    rec = Recording(OnnxRuntimeEmbedder(onnx_model, threads=1))
    with BatchingEmbedder(rec, max_batch=8, max_wait_ms=5000) as batcher:
        t = time.perf_counter()
        out = batcher.embed(crops[:8])
        assert time.perf_counter() - t < 2.0
    assert len(out) == 8 and rec.sizes == [8]


def test_deadline_flushes_a_partial_batch(onnx_model, crops):
    rec = Recording(OnnxRuntimeEmbedder(onnx_model, threads=1))
    with BatchingEmbedder(rec, max_batch=64, max_wait_ms=150) as batcher:
        t = time.perf_counter()
        out = batcher.embed(crops[:3])
        waited = time.perf_counter() - t
    assert len(out) == 3 and rec.sizes == [3]
    assert waited >= 0.14  # it held the batch open for more crops until the deadline


def test_errors_reach_every_caller_and_empty_requests_are_answered():
    with BatchingEmbedder(Failing(), max_batch=4, max_wait_ms=1) as batcher:
        assert batcher.embed([]).identity.shape == (0, 4)
        fut = batcher.submit([np.zeros((20, 10, 3), np.uint8)])
        with pytest.raises(RuntimeError, match="exploded"):
            fut.result(timeout=5)
    with pytest.raises(RuntimeError, match="closed"):
        batcher.submit([np.zeros((20, 10, 3), np.uint8)])
    with pytest.raises(ValueError, match="max_batch"):
        BatchingEmbedder(Failing(), max_batch=0)


def test_factory_wraps_with_batching(onnx_model, crops):
    emb = create_embedder(onnx_model, "onnxruntime", threads=1, batch_wait_ms=1)
    try:
        assert isinstance(emb, BatchingEmbedder) and emb.spec.height == 64
        assert emb.embed(crops[:5]).identity.shape == (5, 128)
    finally:
        emb.close()


def test_flip_sum_adds_each_crop_and_its_mirror_in_one_batch(onnx_model, crops):
    plain = create_embedder(onnx_model, "onnxruntime", threads=1)
    flipped = create_embedder(onnx_model, "onnxruntime", threads=1, flip_sum=True)
    recording = Recording(plain)
    flipped.inner = recording  # count the batches the wrapper asks for
    few = crops[:6]
    mirrors = [np.ascontiguousarray(c[:, ::-1]) for c in few]
    got = flipped.embed(few)
    assert recording.sizes == [12]  # crops and mirrors in one batch, not two calls
    a, b = plain.embed(few), plain.embed(mirrors)
    want = a.identity + b.identity
    want /= np.linalg.norm(want, axis=1, keepdims=True)
    np.testing.assert_allclose(got.identity, want, atol=1e-5)
    # A mirrored crop is another input to the plain model but the same one to the flip-summed embedder.
    assert float(np.min(np.sum(a.identity * b.identity, axis=1))) < 0.9999
    np.testing.assert_allclose(flipped.embed(mirrors).identity, got.identity, atol=1e-5)
    assert flipped.embed([]).identity.shape[0] == 0 and flipped.spec == plain.spec


def test_reid_flip_sum_applies_to_the_identity_model_only(onnx_model, tmp_path):
    from pipeline.config import PipelineConfig
    from pipeline.runner import PipelineRunner
    from reid.inference.flip import FlipSumEmbedder

    reid = {"model": str(onnx_model), "outfit_model": str(onnx_model), "backend": "onnxruntime", "threads": 1}
    runner = PipelineRunner(PipelineConfig.model_validate(
        {"cameras": [{"id": "a", "source": "a.mp4"}], "reid": {**reid, "flip_sum": True}}), tmp_path)
    assert isinstance(runner._embedder("model"), FlipSumEmbedder)
    assert not isinstance(runner._embedder("outfit_model"), FlipSumEmbedder)
    runner = PipelineRunner(PipelineConfig.model_validate({"cameras": [{"id": "a", "source": "a.mp4"}], "reid": reid}),
                            tmp_path)
    assert not isinstance(runner._embedder("model"), FlipSumEmbedder)  # off unless asked: twice the work
