"""TensorRT: profile/key helpers everywhere; engine build, cache and parity only with tensorrt and a CUDA GPU."""

from __future__ import annotations

import pytest
import torch

from reid.checkpoint import save_checkpoint
from reid.export import COSINE_FP16, COSINE_FP32, export_onnx, load_model, pets_crops, torch_features
from reid.inference.base import PreprocessSpec
from reid.inference.tensorrt_backend import BatchProfile, engine_file_name, tensorrt_available
from reid.models import ArchConfig, build_model

TRT_OK, TRT_WHY = tensorrt_available()
needs_trt = pytest.mark.skipif(not TRT_OK, reason=f"TensorRT path not runnable here: {TRT_WHY}")


def test_batch_profile_parsing():
    assert BatchProfile.parse("1:16:64") == BatchProfile(1, 16, 64)
    assert str(BatchProfile(2, 8, 32)) == "2:8:32"
    for bad in ("16:1:64", "0:1:2", "1:16", "a:b:c"):
        with pytest.raises(ValueError):
            BatchProfile.parse(bad)


def test_engine_name_depends_on_every_key_field():
    key = {"gpu": "NVIDIA H100 80GB HBM3", "sm": "90", "tensorrt": "10.9.0", "model_sha256": "ab" * 32,
           "precision": "fp16", "profile": "1:16:64"}
    name = engine_file_name(key)
    assert name.endswith(".engine") and "/" not in name and " " not in name
    for field, other in (("gpu", "NVIDIA L4"), ("sm", "89"), ("tensorrt", "10.10.0"), ("model_sha256", "cd" * 32),
                         ("precision", "fp32"), ("profile", "1:32:128")):
        assert engine_file_name({**key, field: other}) != name, field


@needs_trt
@pytest.mark.gpu
@pytest.mark.parametrize("fp16", [False, True])
def test_tensorrt_engine_parity_and_cache(fp16, tmp_path, shared_video):
    from reid.inference.tensorrt_backend import TensorRTEmbedder

    torch.manual_seed(0)
    ckpt = tmp_path / "m.safetensors"
    save_checkpoint(ckpt, build_model(ArchConfig(backbone="resnet18")), PreprocessSpec(), inference_only=True)
    model, spec = load_model(ckpt)
    export_onnx(model, spec, tmp_path / "m.onnx", "test")
    crops = pets_crops(shared_video["pets"], shared_video["pets_gt"], max_crops=48)
    ref = torch_features(model, crops, spec)[0]
    emb = TensorRTEmbedder(tmp_path / "m.onnx", fp16=fp16, profile=BatchProfile(1, 8, 32), cache_dir=tmp_path / "c")
    got = emb.embed(crops).identity  # 48 crops: split over the profile's MAX of 32
    ref = ref / (ref ** 2).sum(1, keepdims=True) ** 0.5
    assert (ref * got).sum(1).min() >= (COSINE_FP16 if fp16 else COSINE_FP32)
    assert emb.key["precision"] == ("fp16" if fp16 else "fp32") and emb.key["gpu"] == torch.cuda.get_device_name()
    built = emb.engine_path.stat().st_mtime_ns
    again = TensorRTEmbedder(tmp_path / "m.onnx", fp16=fp16, profile=BatchProfile(1, 8, 32), cache_dir=tmp_path / "c")
    assert again.engine_path == emb.engine_path and again.engine_path.stat().st_mtime_ns == built  # cache hit
    assert again.embed(crops[:1]).identity.shape == (1, spec.identity_dim)
