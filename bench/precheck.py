"""How well the gradient look (workers.image.precheck) tells a hash-matched copy from a chance match, and what it costs.

    python -m bench.precheck --data bench/data/acc --split calibration

On one split of the accuracy data set:
- copies: every edit whose hash matches its own original under the shipped rule (the pairs the hash-only
  path sends to verification), with the geometry the clause names;
- near misses: every edit and distractor against the ORIGINALS IT IS NOT A COPY OF, under a rule loosened
  to pHash 16 / window 14 / dHash 12 (about 3e5 times the shipped rule's chance rate per comparison):
  unrelated pictures whose low frequencies agree, which is what a chance match at 10 M rows looks like.
Printed: the gradient distance's distribution on both, the share of each the threshold passes, and the
time of one look (two decodes at 64 px and the comparison) beside one SIFT verification of the same pairs.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import numpy as np

from bench.machine import cpu_model
from daemon.config import Settings
from daemon.index.hashindex import ExhaustiveHashIndex, HashHit, HashRule
from daemon.index.verdict import Thresholds
from workers.image.align import align_files
from workers.image.hashing import WINDOWS
from workers.image.precheck import GRADIENT_MAX_FRACTION, geometry, gradient_distance
from workers.pipeline import Pipeline
from workers.settings import DecodeSettings

LOOSE = HashRule(16, 14, 12, -1, 12)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, default=Path("bench/data/acc"))
    ap.add_argument("--split", default="calibration")
    ap.add_argument("--timed", type=int, default=40, help="pairs timed with SIFT beside the look")
    args = ap.parse_args(argv)
    entries = [json.loads(line) for line in (args.data / "manifest.jsonl").open()]
    entries = [e for e in entries if args.split == "all" or e["split"] == args.split]
    paths = [str(args.data / e["file"]) for e in entries]
    pipeline = Pipeline(DecodeSettings(), None)
    feats = pipeline.run(list(enumerate(paths)))
    pipeline.close()
    # (windows, dihedral, dhash) of each file the hash search takes (low-detail files have none)
    hashed = {f.id: (f.windows, f.dihedral, f.dhash) for f in feats
              if f.windows is not None and f.dihedral is not None and f.dhash is not None}
    by_file = {e["file"]: i for i, e in enumerate(entries)}
    index = ExhaustiveHashIndex(len(WINDOWS))
    for i, (windows, _, dhash) in hashed.items():
        if entries[i]["role"] == "original":
            index.add(i, windows, dhash)
    rule = Thresholds.resolve(Settings(hash_only=True).match, None).hashes
    copies: list[tuple[int, int, HashHit]] = []
    near: list[tuple[int, int, HashHit]] = []
    for i, (windows, dihedral, dhash) in hashed.items():
        e = entries[i]
        if e["role"] == "original":
            continue
        source = by_file.get(e.get("source") or "", -1)
        if e["role"] == "edit" and source in hashed:
            alone = ExhaustiveHashIndex(len(WINDOWS))
            alone.add(source, hashed[source][0], hashed[source][2])
            hit = alone.best(windows, dihedral, dhash, 1 << 62, rule)
            if hit is not None:
                copies.append((i, source, hit))
        hit = index.best(windows, dihedral, dhash, 1 << 62, LOOSE, excluded={source})
        if hit is not None:
            near.append((i, hit.id, hit))

    def look(pairs: list[tuple[int, int, HashHit]]) -> np.ndarray:
        out = []
        for q, o, hit in pairs:
            geo = geometry(hit.signal, hashed[q][0], hashed[q][1], hashed[o][0])
            out.append(gradient_distance(paths[q], paths[o], geo))
        return np.array([d for d in out if d is not None])

    t0 = time.perf_counter()
    dc = look(copies)
    look_ms = (time.perf_counter() - t0) / max(len(copies), 1) * 1e3
    dn = look(near)
    timed = copies[: args.timed]
    t0 = time.perf_counter()
    for q, o, _ in timed:
        align_files(paths[q], paths[o])
    sift_ms = (time.perf_counter() - t0) / max(len(timed), 1) * 1e3
    lines = [(f"# bench/precheck.py, {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, {cpu_model()}, "
             f"{os.cpu_count()} cores, load avg {os.getloadavg()[0]:.1f}"),
             f"# split {args.split}; threshold GRADIENT_MAX_FRACTION = {GRADIENT_MAX_FRACTION}",
             "| pairs | n | min | p1 | p5 | median | p95 | max | passed |", "|---|---|---|---|---|---|---|---|---|"]
    for name, d in (("copies (shipped rule, own original)", dc), ("near misses (loose rule, unrelated)", dn)):
        quantiles = np.percentile(d, [0, 1, 5, 50, 95, 100]) if len(d) else np.full(6, np.nan)
        lines.append(f"| {name} | {len(d)} | " + " | ".join(f"{x:.3f}" for x in quantiles)
                     + f" | {np.mean(d <= GRADIENT_MAX_FRACTION) if len(d) else 0:.1%} |")
    lines.append(f"# one look {look_ms:.1f} ms a pair; one SIFT verification {sift_ms:.1f} ms a pair ({len(timed)} pairs)")
    lines.append(f"# load avg at end {os.getloadavg()[0]:.1f}")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
