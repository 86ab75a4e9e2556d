"""Matcher cost: gallery query latency as the gallery grows, and Redis round trips per tracklet.

    .venv/bin/python benchmarks/matcher_latency.py [--sizes 1000,10000,100000,1000000] [--threads 1]

Part 1 (no Redis): a gallery of N random 256-d float32 prototypes (one per identity), queried with noisy
copies of stored prototypes; a query is what one decision costs in memory: the cosine against every
prototype (one numpy matrix product), the top-k prototypes (argpartition) and their identities. It is
timed for one tracklet and for a step of 8 tracklets decided together (one matrix product for all 8).
With `--index usearch` an HNSW index proposes the candidates instead, re-scored exactly: its build time
(with the gallery's own recall check) is reported, how often the best candidate is the true identity, the
search breadth the recall check settled on, and whether the index is in use at all (the gallery keeps the
exact search when the index cannot reach 99 % recall of it; the latency is then the exact search's).

Part 2 (a private redis-server): tracklets go through the real match stage (tentative decision,
re-checks, track end, events) on two cameras; every request/response exchange with Redis is counted on
the client (a pipeline or a script call is one exchange) and every command on the server (INFO
commandstats).
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import tempfile
import time
from datetime import date
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def _set_threads(n: int) -> None:
    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[var] = str(n)


def gallery_latency(sizes: list[int], dim: int, queries: int, top_k: int, index: str) -> list[dict]:
    import numpy as np

    from pipeline.gallery import PrototypeGallery

    rng = np.random.default_rng(0)
    rows = []
    for n in sizes:
        g = PrototypeGallery(capacity=n, index=index, ann_min_rows=1)
        chunk = 100_000
        for start in range(0, n, chunk):  # bulk-load in chunks to bound temporary memory
            m = min(chunk, n - start)
            ids = np.arange(start + 1, start + m + 1)
            g.extend(ids, np.ones(m, np.int64), rng.standard_normal((m, dim), dtype=np.float32))
        # Queries near stored prototypes (a returning person), so "the best identity" is well defined.
        picks = rng.integers(0, n, queries + 8)
        q = g.vectors[picks] + 0.05 * rng.standard_normal((queries + 8, dim), dtype=np.float32)
        q /= np.linalg.norm(q, axis=1, keepdims=True)
        t = time.perf_counter()
        g.candidates(q[:1], top_k)  # warm-up; builds the ANN index when there is one
        build_s = time.perf_counter() - t
        reps = max(20, min(queries, int(2e8 // (n * dim)) or 20)) if index == "exact" else queries
        single, batch, hits = [], [], 0
        for i in range(reps):
            t = time.perf_counter()
            cand = g.candidates(q[i:i + 1], top_k)[0]
            single.append(time.perf_counter() - t)
            hits += bool(cand) and max(cand, key=cand.get) == picks[i] + 1
        for i in range(max(10, reps // 4)):
            t = time.perf_counter()
            g.candidates(q[i % queries:i % queries + 8], top_k)
            batch.append(time.perf_counter() - t)
        s, b = np.array(single) * 1e3, np.array(batch) * 1e3
        check = g.ann_check
        rows.append({"n": n, "mb": g.vectors.nbytes / 2**20, "reps": reps, "p50": np.percentile(s, 50),
                     "p99": np.percentile(s, 99), "b_p50": np.percentile(b, 50), "b_p99": np.percentile(b, 99),
                     "recall": hits / reps, "build_s": build_s,
                     "in_use": "exact" if check is None else ("HNSW" if check.passed else "exact (HNSW failed check)"),
                     "expansion": "-" if check is None else str(check.expansion_search),
                     "check": "-" if check is None else f"{100 * check.recall:.1f} %"})
        del g
    return rows


class _Counter:
    """Counts request/response exchanges: every packed send on a redis-py connection is one."""

    def __init__(self) -> None:
        import redis.connection

        self.n = 0
        self._orig = redis.connection.AbstractConnection.send_packed_command
        counter = self

        def counted(conn, command, check_health=True):
            counter.n += 1
            return counter._orig(conn, command, check_health)

        redis.connection.AbstractConnection.send_packed_command = counted


def round_trips(n_people: int, crops_per_track: int, min_crops: int) -> dict:
    import numpy as np

    from reid.inference.outfit import DESCRIPTOR_DIM
    from pipeline.identity_stage import MatchStage
    from pipeline.matcher import CrossCameraMatcher
    from pipeline.redis_server import RedisServer, free_port
    from pipeline.store import IdentityStore
    from pipeline.tracklets import CameraTracklets, CropGate, Tracklet

    rng = np.random.default_rng(1)
    people = rng.standard_normal((n_people, 256)).astype(np.float32)
    looks = np.abs(rng.standard_normal((n_people, DESCRIPTOR_DIM))).astype(np.float32)
    counter = _Counter()
    with tempfile.TemporaryDirectory() as tmp, RedisServer(Path(tmp), port=free_port(), persist=False) as srv:
        client = srv.client()
        store = IdentityStore(client)
        cams = [CameraTracklets(c, "run", CropGate(), 30) for c in ("cam1", "cam2")]
        stage = MatchStage(CrossCameraMatcher(store), min_crops, cams)
        client.config_resetstat()
        before = counter.n
        # Each person walks through cam1, then cam2: one tracklet per camera, `crops_per_track` crops.
        tracklets, step = 0, 0
        for cam in cams:
            for p in range(n_people):
                t = Tracklet(f"{cam.camera_id}:run:{p}", cam.camera_id, p, 0, 0, np.array([0, 0, 50, 150.0]), 0.9)
                cam.live[p] = t
                tracklets += 1
                for _ in range(crops_per_track):
                    step += 1
                    cam.step = t.last_step = step
                    v = people[p] + 0.3 * rng.standard_normal(256).astype(np.float32)
                    t.add_embedding(v / np.linalg.norm(v), 1.0, looks[p])
                    store.publish(stage.step(now=0.1 * step))  # 10 frames per second
                store.publish(stage.end(cam.live.pop(p)))
        exchanges = counter.n - before
        stats = client.info("commandstats")
        commands = {k.removeprefix("cmdstat_"): v["calls"] for k, v in stats.items()}
        identities = len(store.identities())
    commands.pop("info", None)
    commands.pop("config|resetstat", None)
    return {"tracklets": tracklets, "exchanges": exchanges, "commands": commands, "identities": identities,
            "people": n_people, "stats": stage.matcher.stats}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", default="1000,10000,100000,1000000")
    ap.add_argument("--dim", type=int, default=256)
    ap.add_argument("--queries", type=int, default=200)
    ap.add_argument("--top-k", type=int, default=16)
    ap.add_argument("--index", default="exact,usearch", help="gallery indexes to time (exact, usearch)")
    ap.add_argument("--ann-max", type=int, default=1_000_000, help="largest gallery timed with the ANN index")
    ap.add_argument("--threads", type=int, default=1, help="BLAS threads (the test machine has 2 shared cores)")
    ap.add_argument("--people", type=int, default=50)
    ap.add_argument("--crops", type=int, default=10, help="crops per tracklet in the round-trip part")
    ap.add_argument("--no-round-trips", action="store_true", help="skip part 2 (Redis round trips)")
    args = ap.parse_args()
    _set_threads(args.threads)

    print(f"machine: {platform.machine()}, {os.cpu_count()} CPU cores, BLAS threads {args.threads}; "
          f"date {date.today().isoformat()}")
    for index in args.index.split(","):
        sizes = [int(s) for s in args.sizes.split(",")]
        if index != "exact":
            sizes = [n for n in sizes if n <= args.ann_max]  # HNSW builds are slow on a 2-core machine
        rows = gallery_latency(sizes, args.dim, args.queries, args.top_k, index)
        what = ("numpy matmul over all prototypes" if index == "exact" else
                "usearch HNSW (f16, inner product) proposes, exact cosine re-scores")
        print(f"\nGallery query, index {index}: {what}; {args.dim}-d float32, top-{args.top_k}; ms")
        print("| prototypes | matrix MB | 1 tracklet p50 | 1 tracklet p99 | 8 tracklets p50 | 8 tracklets p99 "
              "| best = true identity | index build + check s | search in use | expansion | recall check |")
        print("|---|---|---|---|---|---|---|---|---|---|---|")
        for r in rows:
            print(f"| {r['n']:,} | {r['mb']:.0f} | {r['p50']:.2f} | {r['p99']:.2f} | {r['b_p50']:.2f} | "
                  f"{r['b_p99']:.2f} | {100 * r['recall']:.1f} % | {r['build_s']:.1f} | {r['in_use']} | "
                  f"{r['expansion']} | {r['check']} |", flush=True)

    if args.no_round_trips:
        return 0
    rt = round_trips(args.people, args.crops, min_crops=3)
    per = rt["exchanges"] / rt["tracklets"]
    print(f"\nRedis round trips: {rt['people']} people x 2 cameras = {rt['tracklets']} tracklets of {args.crops} "
          f"crops, one crop per step at 10 steps/s (decision at 3 crops, re-check at 6, end); {rt['identities']} identities")
    print(f"client round trips: {rt['exchanges']} = {per:.2f} per tracklet "
          f"(commits {rt['stats'].commits}, gallery reads {rt['stats'].syncs})")
    print("server commands: " + ", ".join(f"{k} {v}" for k, v in sorted(rt["commands"].items())))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
