"""Inference side of ReID: the `Embedder` interface and its backends.

The runtime (`pipeline/`) imports only this subpackage of `reid` (and `reid.telemetry`, which declines
vendors' usage telemetry); nothing here may import training code (`reid.train`, losses, samplers, datasets).
"""

from reid.inference.base import Embedder, EmbeddingBatch, PreprocessSpec, preprocess_crops

__all__ = ["Embedder", "EmbeddingBatch", "PreprocessSpec", "preprocess_crops"]
