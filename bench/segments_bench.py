"""The segmented vector index (daemon.index.vectors) at daemon sizes: copy recall against the exhaustive search,
build rates per segment (seal, merge), search latency, bytes per image, per dtype.

    python bench/segments_bench.py --size 200000 --dtypes f16,i8 --out bench/results/segments-DATE.txt

CLIP-shaped vectors and planted edited copies from bench/index_bench.py's generator. Vectors are added in id
order as verdicts add them (batches of 1,000 into the tail; seals and merges run in the caller's thread here,
timed apart: in the daemon merges run on a background thread). Then the copy queries (edited copies of indexed
vectors): a copy pair is found when the exhaustive search's nearest vector (the reference, exact over every
vector) is among the index's top k. The per-segment build rate is what a lost file costs to rebuild (a
`MAX_SEGMENT` segment at that rate) and what 10 M would take.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from bench.machine import finish, header

TOP_K = 5
"""The owner's `match.top_k` default: the copies it looks at per query."""


def run(size: int, dtype: str, queries: int, folder: Path) -> dict:
    # daemon.index.vectors first: bench.index_bench loads usearch, which must come after onnxruntime
    from daemon.index import vectors  # noqa: I001
    from bench.index_bench import EmbeddingGenerator, exact_topk

    gen = EmbeddingGenerator()
    index = vectors.VectorIndex(folder, 512, dtype)
    index._finish_load()
    timings: dict[str, float] = {"seal": 0.0, "merge": 0.0, "add": 0.0}
    work, seal = index._work, index._seal

    def timed_work(fetch=None) -> None:
        t0 = time.perf_counter()
        work(fetch)
        timings["merge"] += time.perf_counter() - t0

    def timed_seal() -> None:
        t0 = time.perf_counter()
        seal()
        timings["seal"] += time.perf_counter() - t0

    index._work, index._seal = timed_work, timed_seal  # type: ignore[method-assign]
    started = time.perf_counter()
    for start, x in gen.chunks(size, 50_000):
        for lo in range(0, len(x), 1000):
            index.add_many(np.arange(start + lo + 1, start + lo + 1 + len(x[lo:lo + 1000]), dtype=np.int64),
                           x[lo:lo + 1000])
    wall = time.perf_counter() - started
    timings["add"] = wall - timings["merge"] - timings["seal"]
    merged = sum(len(p) for p in index.parts[:-1] if p.tier > 0)  # built again by a merge
    t0 = time.perf_counter()
    index.save()
    save_s = time.perf_counter() - t0
    q, src = gen.queries(size, 50_000, queries)
    copies = q[src >= 0]
    truth = exact_topk(gen, copies, size, 50_000)[:, 0] + 1  # keys start at 1
    found, took = 0, []
    for vector, want in zip(copies, truth, strict=True):
        t0 = time.perf_counter()
        got = index.search(vector, TOP_K)
        took.append(time.perf_counter() - t0)
        found += int(want) in {i for i, _ in got}
    disk = sum(p.stat().st_size for p in folder.glob("*.usearch"))
    return {"size": size, "dtype": dtype, "segments": len(index.parts) - 1,
            "sizes": [len(p) for p in index.parts], "add_per_s": size / timings["add"] if timings["add"] else 0,
            "tail_adds_per_s": size / (timings["add"] + timings["seal"]),
            "merge_adds_per_s": merged / timings["merge"] if merged else None, "wall_s": wall,
            "save_s": save_s, "copy_recall": found / len(copies), "copies": len(copies),
            "search_p50_ms": float(np.percentile(took, 50)) * 1e3, "search_p99_ms": float(np.percentile(took, 99)) * 1e3,
            "bytes_per_image": disk / size}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size", type=int, default=200_000)
    ap.add_argument("--dtypes", default="f16,i8")
    ap.add_argument("--queries", type=int, default=2000, help="half are planted copies")
    ap.add_argument("--out", type=Path)
    args = ap.parse_args()
    lines = [header("bench/segments_bench.py"),
             ("| vectors | dtype | segments (sizes) | adds/s into the tail (with seals) | adds/s in merges | "
             f"copy recall@{TOP_K} vs exhaustive | search p50/p99 ms | save s | disk B/image |"), "|---" * 9 + "|"]
    print("\n".join(lines), flush=True)
    for dtype in args.dtypes.split(","):
        with tempfile.TemporaryDirectory(dir=os.environ.get("SCALE_TMP")) as tmp:
            r = run(args.size, dtype, args.queries, Path(tmp))
        merge = f"{r['merge_adds_per_s']:,.0f}" if r["merge_adds_per_s"] else "-"
        lines.append(f"| {r['size']:,} | {dtype} | {r['segments']} ({', '.join(map(str, r['sizes']))}) | "
                     f"{r['tail_adds_per_s']:,.0f} | {merge} | {r['copy_recall']:.4f} of {r['copies']} | "
                     f"{r['search_p50_ms']:.2f} / {r['search_p99_ms']:.2f} | {r['save_s']:.1f} | "
                     f"{r['bytes_per_image']:,.0f} |")
        print(lines[-1], flush=True)
    finish(lines, args.out)


if __name__ == "__main__":
    main()
