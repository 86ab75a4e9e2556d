"""The in-memory gallery of identity prototypes a worker matches against, and its candidate search.

Exact search is one numpy matrix product over all prototypes. `index="usearch"` adds an HNSW index
(usearch) for large galleries: it proposes `ANN_CANDIDATES` prototypes per query, whose cosines are then
computed exactly from the matrix. The index is only used once it has shown, on a sample of the gallery,
that it finds the exact search's best identity for at least `MIN_ANN_RECALL` of the queries; it widens
its search until it does, and stays off (exact search, with a warning) if it cannot. The figures behind
the defaults are in benchmarks/matcher_latency.py and the README ("Matcher cost").
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np

log = logging.getLogger("pipeline.matcher")

MIN_ANN_RECALL = 0.99  # the index is never used below this recall of the exact search's best identity
# HNSW graph: links per node and search breadth while building; the search breadth starts at
# ANN_EXPANSION_SEARCH and is doubled (up to ANN_MAX_EXPANSION) until the recall check passes.
ANN_CONNECTIVITY = 32
ANN_EXPANSION_ADD = 128
ANN_EXPANSION_SEARCH = 128
ANN_MAX_EXPANSION = 1024
ANN_CANDIDATES = 32  # prototypes the index proposes per query; re-scored exactly, the best `k` kept
RECALL_SAMPLE = 200  # queries of the recall check
# Query noise of the recall check: stored prototypes moved to a cosine of about 0.8 from where they were
# (a returning person seen again), so "the best identity" is the one a real query would be matched to.
RECALL_QUERY_COSINE = 0.8


@dataclass(frozen=True)
class AnnCheck:
    """The recall check an HNSW index passed or failed before it was (not) used."""

    rows: int
    recall: float
    expansion_search: int
    passed: bool


def _unit(v: np.ndarray) -> np.ndarray:
    v = np.asarray(v, np.float32)
    return v / max(float(np.linalg.norm(v)), 1e-12)


class PrototypeGallery:
    """Row-wise L2-normalised prototypes (identity feature + optional outfit descriptor) with their
    (identity, outfit) labels; grows by doubling, removes by swapping the last row in.

    Candidate search is exact (one matrix product over all rows) unless `index="usearch"`: then, from
    `ann_min_rows` rows on, an HNSW index (usearch, inner product, float16 copy) proposes candidates and
    their cosines are computed exactly from the matrix; the index follows every upsert and removal, and is
    checked against the exact search when it is built and each time the gallery has doubled since."""

    def __init__(self, dim: int = 0, capacity: int = 1024, index: str = "exact", ann_min_rows: int = 50_000) -> None:
        if index not in ("exact", "usearch"):
            raise ValueError(f"gallery index must be 'exact' or 'usearch', got {index!r}")
        if index == "usearch":
            try:
                import usearch.index  # noqa: F401
            except ImportError as exc:
                raise RuntimeError("matcher.index 'usearch' needs the usearch package: pip install usearch") from exc
        self.index_kind = index
        self.ann_min_rows = ann_min_rows
        self._ann = None  # the usearch Index once built
        self.ann_check: AnnCheck | None = None  # the last recall check; the index is used only if it passed
        self._key = np.zeros(capacity, np.uint64)  # stable key per row (rows move on removal, keys do not)
        self._row_of_key = np.full(capacity, -1, np.int64)  # key -> its row now, -1 once removed
        self._next_key = 0
        self.dim = dim
        self.look_dim = 0
        self._cap = capacity
        self._vectors = np.zeros((capacity, dim), np.float32)
        self._looks = np.zeros((capacity, 0), np.float32)
        self._has_look = np.zeros(capacity, bool)
        self._identity = np.zeros(capacity, np.int64)
        self._outfit = np.zeros(capacity, np.int64)
        self._row: dict[tuple[int, int], int] = {}
        self._rows_of: dict[int, set[int]] = {}
        self.size = 0

    def __len__(self) -> int:
        return self.size

    @property
    def vectors(self) -> np.ndarray:
        return self._vectors[: self.size]

    @property
    def identity_ids(self) -> np.ndarray:
        return self._identity[: self.size]

    def identities(self) -> set[int]:
        return set(self._rows_of)

    def _grow(self) -> None:
        self._cap *= 2
        for name in ("_vectors", "_looks"):
            old = getattr(self, name)
            new = np.zeros((self._cap, old.shape[1]), np.float32)
            new[: self.size] = old[: self.size]
            setattr(self, name, new)
        for name in ("_identity", "_outfit", "_has_look", "_key"):
            old = getattr(self, name)
            new = np.zeros(self._cap, old.dtype)
            new[: self.size] = old[: self.size]
            setattr(self, name, new)

    def upsert(self, identity_id: int, outfit_id: int, vector: np.ndarray, look: np.ndarray | None = None) -> None:
        vector = np.asarray(vector, np.float32)
        if self.dim == 0:
            self.dim = vector.shape[0]
            self._vectors = np.zeros((self._cap, self.dim), np.float32)
        if vector.shape != (self.dim,):
            raise ValueError(f"prototype has dimension {vector.shape}, the gallery holds {self.dim}")
        if look is not None:
            look = np.asarray(look, np.float32)
            if self.look_dim == 0:
                self.look_dim = look.shape[0]
                self._looks = np.zeros((self._cap, self.look_dim), np.float32)
            if look.shape != (self.look_dim,):
                raise ValueError(f"outfit descriptor has dimension {look.shape}, the gallery holds {self.look_dim}")
        key = (identity_id, outfit_id)
        row = self._row.get(key)
        if row is None:
            if self.size == self._cap:
                self._grow()
            row = self.size
            self.size += 1
            self._row[key] = row
            self._rows_of.setdefault(identity_id, set()).add(row)
            self._identity[row], self._outfit[row] = identity_id, outfit_id
            self._has_look[row] = False
            self._key[row] = self._next_key
            self._set_row_of_key(self._next_key, row)
            self._next_key += 1
        elif self._ann is not None:
            self._ann.remove(int(self._key[row]))
        self._vectors[row] = _unit(vector)
        if self._ann is not None:
            self._ann.add(int(self._key[row]), self._vectors[row])
        if look is not None:
            self._looks[row] = _unit(look)
            self._has_look[row] = True

    def extend(self, identity_ids: np.ndarray, outfit_ids: np.ndarray, vectors: np.ndarray,
               looks: np.ndarray | None = None, has_look: np.ndarray | None = None) -> None:
        """Bulk-append new (identity, outfit) rows (a full load, a benchmark); normalises in one pass."""
        vectors = np.asarray(vectors, np.float32)
        n = vectors.shape[0]
        if n == 0:
            return
        if self.dim == 0:
            self.dim = vectors.shape[1]
            self._vectors = np.zeros((self._cap, self.dim), np.float32)
        if vectors.shape[1] != self.dim:
            raise ValueError(f"prototypes have dimension {vectors.shape[1]}, the gallery holds {self.dim}")
        if looks is not None and self.look_dim == 0:
            self.look_dim = looks.shape[1]
            self._looks = np.zeros((self._cap, self.look_dim), np.float32)
        keys = list(zip(np.asarray(identity_ids).tolist(), np.asarray(outfit_ids).tolist()))
        if any(k in self._row for k in keys) or len(set(keys)) != n:
            raise ValueError("extend() takes new, distinct (identity, outfit) rows; use upsert() to update")
        while self.size + n > self._cap:
            self._grow()
        sl = slice(self.size, self.size + n)
        self._vectors[sl] = vectors / np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12)
        if looks is not None:
            looks = np.asarray(looks, np.float32)
            self._looks[sl] = looks / np.maximum(np.linalg.norm(looks, axis=1, keepdims=True), 1e-12)
            self._has_look[sl] = True if has_look is None else has_look
        else:
            self._has_look[sl] = False
        self._identity[sl], self._outfit[sl] = identity_ids, outfit_ids
        self._key[sl] = np.arange(self._next_key, self._next_key + n, dtype=np.uint64)
        for row, key in enumerate(keys, start=self.size):
            self._row[key] = row
            self._rows_of.setdefault(key[0], set()).add(row)
        self._set_row_of_key(self._next_key + n - 1, self.size + n - 1)  # grows the map once
        self._row_of_key[self._next_key:self._next_key + n] = np.arange(self.size, self.size + n)
        self._next_key += n
        if self._ann is not None:
            self._ann.add(self._key[sl], self._vectors[sl], threads=1)
        self.size += n

    def remove_identity(self, identity_id: int) -> None:
        for row in sorted(self._rows_of.pop(identity_id, set()), reverse=True):
            last = self.size - 1
            del self._row[(int(self._identity[row]), int(self._outfit[row]))]
            self._row_of_key[int(self._key[row])] = -1
            if self._ann is not None:
                self._ann.remove(int(self._key[row]))
            if row != last:  # move the last row into the hole
                key = (int(self._identity[last]), int(self._outfit[last]))
                for arr in (self._vectors, self._looks, self._has_look, self._identity, self._outfit, self._key):
                    arr[row] = arr[last]
                self._row[key] = row
                self._set_row_of_key(int(self._key[row]), row)
                rows = self._rows_of[key[0]]
                rows.discard(last)
                rows.add(row)
            self.size -= 1

    def _set_row_of_key(self, key: int, row: int) -> None:
        if key >= self._row_of_key.shape[0]:
            grown = np.full(max(2 * self._row_of_key.shape[0], key + 1), -1, np.int64)
            grown[: self._row_of_key.shape[0]] = self._row_of_key
            self._row_of_key = grown
        self._row_of_key[key] = row

    def prototype(self, identity_id: int, outfit_id: int) -> np.ndarray | None:
        row = self._row.get((identity_id, outfit_id))
        return None if row is None else self._vectors[row].copy()

    def look(self, identity_id: int, outfit_id: int) -> np.ndarray | None:
        row = self._row.get((identity_id, outfit_id))
        return None if row is None or not self._has_look[row] else self._looks[row].copy()

    def outfits(self, identity_id: int) -> list[int]:
        return sorted(int(self._outfit[r]) for r in self._rows_of.get(identity_id, ()))

    def best_outfit(self, identity_id: int, look: np.ndarray | None) -> tuple[int | None, float]:
        """The identity's outfit whose descriptor is closest to `look`, and that cosine."""
        rows = [r for r in self._rows_of.get(identity_id, ()) if self._has_look[r]]
        if look is None or not rows or self.look_dim != look.shape[0]:
            return None, -1.0
        sims = self._looks[rows] @ _unit(look)
        k = int(np.argmax(sims))
        return int(self._outfit[rows[k]]), float(sims[k])

    def look_candidates(self, looks: list[np.ndarray | None], min_cosine: float) -> list[dict[int, float]]:
        """Per query descriptor: {identity: best outfit-descriptor cosine} over the prototypes whose descriptor
        reaches `min_cosine` (empty for a query without one). One matrix product over all descriptors: the
        matcher asks this of the few tracklets it decides at a time, never per frame."""
        out: list[dict[int, float]] = [{} for _ in looks]
        rows = [i for i, lk in enumerate(looks) if lk is not None and lk.shape[0] == self.look_dim]
        if not rows or self.size == 0 or self.look_dim == 0:
            return out
        q = np.stack([_unit(looks[i]) for i in rows])
        sims = (self._looks[: self.size] @ q.T).T
        sims[:, ~self._has_look[: self.size]] = -np.inf
        for r, row_sims in zip(rows, sims):
            hit = np.flatnonzero(row_sims >= min_cosine)
            best: dict[int, float] = {}
            for ident, v in zip(self._identity[hit].tolist(), row_sims[hit].tolist()):
                if v > best.get(ident, -np.inf):
                    best[ident] = v
            out[r] = best
        return out

    def identity_similarity(self, identity_id: int, query: np.ndarray) -> float:
        """Best cosine of `query` against the identity's prototypes (−1 when it has none)."""
        rows = list(self._rows_of.get(identity_id, ()))
        return float(np.max(self._vectors[rows] @ _unit(query))) if rows else -1.0

    def similarities(self, queries: np.ndarray) -> np.ndarray:
        """(Q, P) cosine of L2-normalised queries against every prototype."""
        queries = np.asarray(queries, np.float32)
        if self.size == 0:
            return np.zeros((queries.shape[0], 0), np.float32)
        if queries.shape[1] != self.dim:
            raise ValueError(f"query dimension {queries.shape[1]} does not match the gallery's {self.dim} "
                             "(was the store filled by another ReID model? use another key_prefix)")
        # (P, D) @ (D, Q) keeps the big matrix C-contiguous; queries @ V.T would copy it for Q > 1
        return (self._vectors[: self.size] @ queries.T).T

    def top_identities(self, sims: np.ndarray, k: int) -> list[dict[int, float]]:
        """Per query row of `sims`: {identity: best prototype cosine} over its `k` best prototypes."""
        out: list[dict[int, float]] = []
        if self.size == 0:
            return [{} for _ in range(sims.shape[0])]
        k = min(k, self.size)
        top = np.argpartition(-sims, k - 1, axis=1)[:, :k] if k < self.size else np.broadcast_to(
            np.arange(self.size), (sims.shape[0], self.size))
        ids = self._identity[top]
        vals = np.take_along_axis(sims, top, axis=1)
        for i in range(sims.shape[0]):
            best: dict[int, float] = {}
            for ident, v in zip(ids[i].tolist(), vals[i].tolist()):
                if v > best.get(ident, -np.inf):
                    best[ident] = v
            out.append(best)
        return out

    def candidates(self, queries: np.ndarray, k: int) -> list[dict[int, float]]:
        """Per query: {identity: best prototype cosine} over its `k` most similar prototypes (exact
        cosines; the prototypes themselves come from the ANN index when one is in use)."""
        queries = np.asarray(queries, np.float32)
        if self._use_ann():
            return self._ann_candidates(queries, k)
        return self.top_identities(self.similarities(queries), k)

    def _use_ann(self) -> bool:
        if self.index_kind != "usearch" or self.size < self.ann_min_rows:
            return False
        if self._ann is None:
            self._build_ann()
        if self.ann_check is None or self.size >= 2 * self.ann_check.rows:
            self._check_ann()
        return self.ann_check.passed

    def _ann_candidates(self, queries: np.ndarray, k: int) -> list[dict[int, float]]:
        # One thread: the pipeline's cores are busy detecting and embedding; a pool's hand-offs cost more
        # than they save on a batch of a few tracklets.
        matches = self._ann.search(queries, min(max(k, ANN_CANDIDATES), self.size), threads=1)
        keys = np.asarray(matches.keys, np.int64).reshape(queries.shape[0], -1)
        counts = np.asarray(getattr(matches, "counts", [keys.shape[1]])).reshape(-1)
        out = []
        for i in range(queries.shape[0]):
            found = keys[i, : counts[i]]
            rows = self._row_of_key[found[found < self._row_of_key.shape[0]]]
            rows = rows[rows >= 0]
            if rows.size == 0:
                out.append({})
                continue
            sims = self._vectors[rows] @ queries[i]
            top = np.argsort(-sims)[:k]  # the exact top k of the proposed candidates
            best: dict[int, float] = {}
            for ident, v in zip(self._identity[rows[top]].tolist(), sims[top].tolist()):
                if v > best.get(ident, -np.inf):
                    best[ident] = v
            out.append(best)
        return out

    def _build_ann(self) -> None:
        from usearch.index import Index

        self._ann = Index(ndim=self.dim, metric="ip", dtype="f16", connectivity=ANN_CONNECTIVITY,
                          expansion_add=ANN_EXPANSION_ADD, expansion_search=ANN_EXPANSION_SEARCH)
        # One thread, as for the search: the cores are the detector's and the embedder's; and one thread builds the
        # same graph every time, so a gallery's index and the recall check that admits it do not vary between runs
        self._ann.add(self._key[: self.size], self._vectors[: self.size], threads=1)

    def _check_ann(self) -> None:
        """Measure how often the index finds the exact search's best identity; widen its search until that
        is at least MIN_ANN_RECALL, or leave it unused."""
        rng = np.random.default_rng(self.size)
        n = min(RECALL_SAMPLE, self.size)
        rows = rng.choice(self.size, n, replace=False)
        noise = rng.standard_normal((n, self.dim)).astype(np.float32)
        noise /= np.linalg.norm(noise, axis=1, keepdims=True)
        c = RECALL_QUERY_COSINE
        queries = c * self._vectors[rows] + np.sqrt(1 - c * c) * noise
        queries /= np.linalg.norm(queries, axis=1, keepdims=True)
        exact = [max(c_, key=c_.get) for c_ in self.top_identities(self.similarities(queries), 1)]
        expansion = self._ann.expansion_search
        while True:
            self._ann.expansion_search = expansion
            got = self._ann_candidates(queries, 1)
            recall = float(np.mean([bool(g) and max(g, key=g.get) == e for g, e in zip(got, exact)]))
            if recall >= MIN_ANN_RECALL or expansion >= ANN_MAX_EXPANSION:
                break
            expansion *= 2
        self.ann_check = AnnCheck(self.size, recall, expansion, recall >= MIN_ANN_RECALL)
        if self.ann_check.passed:
            log.info("gallery: HNSW index in use for %d prototypes (recall %.1f %% of the exact search's best "
                     "identity, expansion %d)", self.size, 100 * recall, expansion)
        else:
            log.warning("gallery: the HNSW index finds the exact best identity for only %.1f %% of sampled queries "
                        "at %d prototypes (needs %.0f %%): exact search stays in use", 100 * recall, self.size,
                        100 * MIN_ANN_RECALL)

    def best(self, query: np.ndarray, exclude: set[int] | frozenset[int] = frozenset()) -> tuple[int, int, float] | None:
        """(identity, outfit, cosine) of the most similar prototype, skipping excluded identities."""
        if self.size == 0:
            return None
        sims = self._vectors[: self.size] @ np.asarray(query, np.float32)
        if exclude:
            sims = np.where(np.isin(self._identity[: self.size], list(exclude)), -np.inf, sims)
        row = int(np.argmax(sims))
        if not np.isfinite(sims[row]):
            return None
        return int(self._identity[row]), int(self._outfit[row]), float(sims[row])
