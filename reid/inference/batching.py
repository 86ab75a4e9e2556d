"""A batching embedder: crops submitted by many callers (one per camera, say) run as one batch.

A worker thread takes the first waiting request, then keeps gathering requests until the batch holds
`max_batch` crops or `max_wait_ms` has passed since that first request, runs the wrapped embedder once
on the whole batch (one preprocessing pass, one inference call) and hands each caller its own rows.
Backends that run on a GPU (torch CUDA, TensorRT) upload the batch from pinned memory asynchronously.
"""

from __future__ import annotations

import queue
import threading
import time
from concurrent.futures import Future
from dataclasses import dataclass, field

import numpy as np

from reid.inference.base import Embedder, EmbeddingBatch


@dataclass
class _Request:
    crops: list[np.ndarray]
    future: Future = field(default_factory=Future)


@dataclass
class BatchingStats:
    batches: int = 0
    crops: int = 0
    requests: int = 0
    busy_s: float = 0.0

    @property
    def mean_batch(self) -> float:
        return self.crops / self.batches if self.batches else 0.0


class BatchingEmbedder:
    """Wraps any `Embedder`; `submit` is thread-safe, `embed` is `submit(...).result()`."""

    def __init__(self, inner: Embedder, max_batch: int = 64, max_wait_ms: float = 5.0) -> None:
        if max_batch < 1:
            raise ValueError(f"max_batch must be >= 1, got {max_batch}")
        if max_wait_ms < 0:
            raise ValueError(f"max_wait_ms must be >= 0, got {max_wait_ms}")
        self.inner = inner
        self.spec = inner.spec
        self.max_batch = max_batch
        self.max_wait_s = max_wait_ms / 1000.0
        self.stats = BatchingStats()
        self._queue: queue.Queue[_Request | None] = queue.Queue()
        self._closed = False
        self._lock = threading.Lock()
        self._worker = threading.Thread(target=self._run, name="reid-batching-embedder", daemon=True)
        self._worker.start()

    def submit(self, crops: list[np.ndarray]) -> Future:
        """Queue crops for embedding; the future resolves to this caller's `EmbeddingBatch`."""
        request = _Request(list(crops))
        with self._lock:
            if self._closed:
                raise RuntimeError("BatchingEmbedder is closed")
            if not request.crops:
                request.future.set_result(self._empty())
                return request.future
            self._queue.put(request)
        return request.future

    def embed(self, crops: list[np.ndarray]) -> EmbeddingBatch:
        return self.submit(crops).result()

    def close(self) -> None:
        """Finish the requests already queued, then stop the worker."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            self._queue.put(None)
        self._worker.join()

    def __enter__(self) -> "BatchingEmbedder":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _empty(self) -> EmbeddingBatch:
        dim, adim = self.spec.identity_dim, self.spec.appearance_dim
        return EmbeddingBatch(np.zeros((0, dim), np.float32), np.zeros((0, adim), np.float32) if adim else None)

    def _gather(self, first: _Request) -> tuple[list[_Request], bool]:
        """Requests for one batch, and whether the stop marker was seen while gathering."""
        batch, total = [first], len(first.crops)
        deadline = time.monotonic() + self.max_wait_s
        while total < self.max_batch:
            remaining = deadline - time.monotonic()
            try:
                item = self._queue.get(timeout=remaining) if remaining > 0 else self._queue.get_nowait()
            except queue.Empty:
                break
            if item is None:
                return batch, True
            batch.append(item)
            total += len(item.crops)
        return batch, False

    def _run(self) -> None:
        stop = False
        while not stop:
            first = self._queue.get()
            if first is None:
                break
            batch, stop = self._gather(first)
            crops = [c for r in batch for c in r.crops]
            t = time.perf_counter()
            try:
                out = self.inner.embed(crops)
            except Exception as exc:  # handed to every waiting caller, who re-raises it from .result()
                for r in batch:
                    r.future.set_exception(exc)
                continue
            self.stats.busy_s += time.perf_counter() - t
            self.stats.batches += 1
            self.stats.crops += len(crops)
            self.stats.requests += len(batch)
            start = 0
            for r in batch:
                end = start + len(r.crops)
                r.future.set_result(EmbeddingBatch(
                    out.identity[start:end], None if out.appearance is None else out.appearance[start:end]))
                start = end
        # Anything still queued after the stop marker (submitted before close took the lock) is served.
        leftovers = []
        while True:
            try:
                item = self._queue.get_nowait()
            except queue.Empty:
                break
            if item is not None:
                leftovers.append(item)
        for r in leftovers:
            try:
                r.future.set_result(self.inner.embed(r.crops))
            except Exception as exc:  # handed to the caller
                r.future.set_exception(exc)
