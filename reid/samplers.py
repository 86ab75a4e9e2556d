"""P x K identity batch sampler: each batch holds P distinct identities with K images each."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterator, Sequence

import torch


class PKBatchSampler(torch.utils.data.Sampler[list[int]]):
    """Yields index batches of P identities x K images.

    Per epoch, each identity's images are shuffled and cut into chunks of K (an identity with fewer
    than K images, or a short last chunk, is topped up by re-drawing its own images), so every image is
    seen about once. Batches then take P chunks of P *different* identities (the bag-of-tricks sampler;
    Simple-CCReID's distributed sampler may put two chunks of one identity into one batch). The order
    depends only on (seed, epoch), so runs and resumed runs are identical.
    """

    def __init__(self, pids: Sequence[int], num_identities: int, num_instances: int, seed: int = 0):
        if num_instances < 1 or num_identities < 1:
            raise ValueError("P and K must be >= 1")
        self.by_pid: dict[int, list[int]] = defaultdict(list)
        for idx, pid in enumerate(pids):
            self.by_pid[int(pid)].append(idx)
        if len(self.by_pid) < num_identities:
            raise ValueError(f"P x K sampler: P = {num_identities} identities per batch but the training set has "
                             f"only {len(self.by_pid)}; lower data.batch_size or raise data.num_instances")
        self.p, self.k, self.seed, self.epoch = num_identities, num_instances, seed, 0
        self._cached: tuple[int, list[list[int]]] | None = None

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def _chunks(self, g: torch.Generator) -> dict[int, list[list[int]]]:
        chunks = {}
        for pid in sorted(self.by_pid):
            idxs = self.by_pid[pid]
            order = [idxs[i] for i in torch.randperm(len(idxs), generator=g).tolist()]
            short = (-len(order)) % self.k
            if short:
                order += [idxs[i] for i in torch.randint(len(idxs), (short,), generator=g).tolist()]
            chunks[pid] = [order[i:i + self.k] for i in range(0, len(order), self.k)]
        return chunks

    def _batches(self) -> list[list[int]]:
        if self._cached is not None and self._cached[0] == self.epoch:
            return self._cached[1]
        g = torch.Generator().manual_seed(self.seed * 100_003 + self.epoch)
        chunks = self._chunks(g)
        batches = []
        while True:
            available = [pid for pid in sorted(chunks) if chunks[pid]]
            if len(available) < self.p:
                break
            chosen = [available[i] for i in torch.randperm(len(available), generator=g)[: self.p].tolist()]
            batches.append([i for pid in chosen for i in chunks[pid].pop()])
        self._cached = (self.epoch, batches)
        return batches

    def __iter__(self) -> Iterator[list[int]]:
        return iter([list(b) for b in self._batches()])

    def __len__(self) -> int:
        return len(self._batches())
