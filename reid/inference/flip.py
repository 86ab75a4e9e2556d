"""Flip-summed features: each crop and its mirror image embedded in one batch, their features summed.

The stills' evaluation (`reid eval`, `reid train`'s test) scores every model this way, as CAL's test does; a
pipeline that embeds crops unmirrored runs the model on half of what it was scored on. A person walking
left and one walking right give mirror-image crops, so the sum is a feature that no longer depends on
the walking direction. It doubles the embedding work (one batch of 2N crops), so it is a setting
(`reid.flip_sum`), measured in the README.
"""

from __future__ import annotations

import numpy as np

from reid.inference.base import Embedder, EmbeddingBatch, l2_normalise


class FlipSumEmbedder:
    """Wraps any `Embedder`: features of crops and of their mirror images, summed and L2-normalised."""

    def __init__(self, inner: Embedder) -> None:
        self.inner = inner
        self.spec = inner.spec

    def embed(self, crops: list[np.ndarray]) -> EmbeddingBatch:
        n = len(crops)
        if n == 0:
            return self.inner.embed(crops)
        # One call for both halves: a batched backend runs them as one batch of 2N.
        out = self.inner.embed(list(crops) + [np.ascontiguousarray(c[:, ::-1]) for c in crops])
        if len(out) != 2 * n:
            raise RuntimeError(f"flip-sum: the embedder gave {len(out)} rows for {2 * n} crops")
        identity = l2_normalise(out.identity[:n] + out.identity[n:])
        appearance = None if out.appearance is None else l2_normalise(out.appearance[:n] + out.appearance[n:])
        return EmbeddingBatch(identity, appearance)

    def __getattr__(self, name: str):
        # Backend details (stats, close, max_batch...) stay the wrapped embedder's.
        return getattr(self.inner, name)
