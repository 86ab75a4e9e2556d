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


class OutfitPKBatchSampler(PKBatchSampler):
    """P x K batches in which each identity's K images span at least `outfits` of its outfits (when it has that
    many; an identity with fewer brings all it has), so every identity in a batch has cross-clothes positives.

    Per epoch and identity: each outfit's images are shuffled into a queue; a chunk of K fills its slots from
    the m = min(outfits, outfits the identity has) outfits with the most images left (ties in a random order):
    first one image of each (re-drawn from the outfit's images when its queue is empty: this is the guarantee),
    then up to K // m in all from each (the first K % m one more), passing slots an outfit cannot fill on to
    the outfits with the next most images; slots nobody can fill are re-drawn from the chosen outfits in turn.
    So every image is used about once per epoch, as in `PKBatchSampler`, whose batch assembly this keeps.
    """

    def __init__(self, pids: Sequence[int], clothes: Sequence[int], num_identities: int, num_instances: int,
                 seed: int = 0, outfits: int = 2):
        super().__init__(pids, num_identities, num_instances, seed)
        if outfits < 2 or outfits > num_instances:
            raise ValueError(f"outfits per identity must be in [2, K = {num_instances}], got {outfits}")
        if any(int(c) < 0 for c in clothes):
            raise ValueError("the outfits sampler needs clothes labels (this data set has none: clothes -1)")
        self.outfits = outfits
        self.clothes = [int(c) for c in clothes]

    def _chunks(self, g: torch.Generator) -> dict[int, list[list[int]]]:
        chunks = {}
        for pid in sorted(self.by_pid):
            by_outfit: dict[int, list[int]] = defaultdict(list)
            for i in self.by_pid[pid]:
                by_outfit[self.clothes[i]].append(i)
            queues = {c: [idxs[j] for j in torch.randperm(len(idxs), generator=g).tolist()]
                      for c, idxs in sorted(by_outfit.items())}
            n_chunks = -(-len(self.by_pid[pid]) // self.k)
            m = min(self.outfits, len(queues))
            out = []
            for _ in range(n_chunks):
                tie = dict(zip(sorted(queues), torch.randperm(len(queues), generator=g).tolist()))
                order = sorted(queues, key=lambda c: (-len(queues[c]), tie[c]))
                chosen = order[:m]

                def draw(c: int) -> int:  # the next queued image of outfit c, or a re-drawn one
                    if queues[c]:
                        return queues[c].pop(0)
                    return by_outfit[c][int(torch.randint(len(by_outfit[c]), (1,), generator=g))]

                chunk = [draw(c) for c in chosen]  # one image of each chosen outfit: the guarantee
                rest = [self.k // m + (1 if j < self.k % m else 0) - 1 for j in range(m)] + [0] * (len(order) - m)
                carry = 0
                for c, share in zip(order, rest):
                    want = share + carry
                    take = queues[c][:want]
                    del queues[c][:want]
                    chunk += take
                    carry = want - len(take)
                    if carry == 0 and share == 0:
                        break
                j = 0
                while len(chunk) < self.k:  # every outfit ran out: re-draw from the chosen ones in turn
                    chunk.append(draw(chosen[j % m]))
                    j += 1
                out.append(chunk)
            chunks[pid] = out
        return chunks


def chunks_without_cross_outfit_positive(batches: list[list[int]], pids: Sequence[int], clothes: Sequence[int]
                                         ) -> tuple[int, int]:
    """(identity groups whose images all wear one outfit, identity groups) over the given batches."""
    bad = total = 0
    for b in batches:
        groups: dict[int, set[int]] = defaultdict(set)
        for i in b:
            groups[int(pids[i])].add(int(clothes[i]))
        total += len(groups)
        bad += sum(1 for s in groups.values() if len(s) < 2)
    return bad, total
