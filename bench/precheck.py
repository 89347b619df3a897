"""How well the gradient look (workers.precheck) tells a hash-matched copy from a chance match, and what it costs.

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
from daemon.hashindex import ExhaustiveHashIndex, HashRule
from daemon.verdict import Thresholds
from workers.align import align_files
from workers.pipeline import Pipeline
from workers.precheck import GRADIENT_MAX_FRACTION, geometry, gradient_distance
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
    ok = [f for f in feats if f.windows is not None and f.dihedral is not None and f.dhash is not None]
    by_file = {e["file"]: i for i, e in enumerate(entries)}
    originals = [f for f in ok if entries[f.id]["role"] == "original"]
    index = ExhaustiveHashIndex(len(originals[0].windows))
    for f in originals:
        index.add(f.id, f.windows, f.dhash)
    rule = Thresholds.resolve(Settings(hash_only=True).match, None).hashes
    copies: list[tuple[int, int, object]] = []
    near: list[tuple[int, int, object]] = []
    for f in ok:
        e = entries[f.id]
        if e["role"] == "original":
            continue
        source = by_file.get(e.get("source") or "", -1)
        if e["role"] == "edit":
            alone = ExhaustiveHashIndex(len(f.windows))
            if 0 <= source and feats[source].windows is not None:
                alone.add(source, feats[source].windows, feats[source].dhash)
                hit = alone.best(f.windows, f.dihedral, f.dhash, 1 << 62, rule)
                if hit is not None:
                    copies.append((f.id, source, hit))
        hit = index.best(f.windows, f.dihedral, f.dhash, 1 << 62, LOOSE, excluded={source})
        if hit is not None:
            near.append((f.id, hit.id, hit))

    def look(pairs):
        out = []
        for q, o, hit in pairs:
            geo = geometry(hit.signal, feats[q].windows, feats[q].dihedral, feats[o].windows)
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
        q = np.percentile(d, [0, 1, 5, 50, 95, 100]) if len(d) else [np.nan] * 6
        lines.append(f"| {name} | {len(d)} | " + " | ".join(f"{x:.3f}" for x in q)
                     + f" | {np.mean(d <= GRADIENT_MAX_FRACTION) if len(d) else 0:.1%} |")
    lines.append(f"# one look {look_ms:.1f} ms a pair; one SIFT verification {sift_ms:.1f} ms a pair ({len(timed)} pairs)")
    lines.append(f"# load avg at end {os.getloadavg()[0]:.1f}")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
