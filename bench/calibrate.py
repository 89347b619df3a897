"""Calibrate the hash rule (daemon.index.hashindex.HashRule), or the copy descriptor's scores, on the benchmark.

    python -m bench.calibrate --data bench/data/acc              # the calibration half (default)
    python -m bench.calibrate --data bench/data/acc --copy      # SSCD: copy, verify and veto scores

With --copy, every file's hashes and copy-descriptor vectors (whole frame, and the picture inside a frame)
are computed once with the workers' pipeline, then the stream is replayed through daemon.index.verdict.decide,
the owner's own decision, for a grid of (copy, verify, veto) scores, without geometric verification (a
borderline score is then `new`) or with it (--verify: workers.align on each pair a decision asks
for). It prints the best settings at precision >= --precision with at most 1 % of distractors flagged,
and the shipped defaults' figures.

Computes every file's features once with the workers' own pipeline (hash-only), then replays the stream:
each file against every EARLIER file with the daemon's own HashIndex, for each rule in a grid. Prints the
rules with the highest recall at precision >= --precision and no false verdict on distractors, and the
figures of the shipped defaults. The defaults in daemon/defaults.py were chosen from this table.
"""

from __future__ import annotations

import argparse
import itertools
import pickle
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from bench import dataset
from daemon.config import MatchSettings
from daemon.index.hashindex import HashIndex, HashRule
from daemon.index.verdict import inner_rows
from workers.hashing import WINDOWS
from workers.pipeline import Pipeline
from workers.settings import DecodeSettings

GRID = {"phash": (6, 8, 10), "window": (4, 6, 8), "dhash": (-1, 4, 6, 8), "confirm_phash": (-1, 12, 14, 16, 18),
        "confirm_dhash": (8, 10, 12)}


@dataclass(frozen=True)
class Outcome:
    rule: HashRule
    recall: float
    precision: float
    false: int
    distractor_false: int


def features(data: Path, entries: list[dataset.Entry], copier=None):
    pipeline = Pipeline(DecodeSettings(), None, copier)
    try:
        items = [(i, str(data / e.file)) for i, e in enumerate(entries)]
        return [f for start in range(0, len(items), 32) for f in pipeline.run(items[start:start + 32])]
    finally:
        pipeline.close()


def replay(entries: list[dataset.Entry], feats, rules: list[HashRule]) -> list[Outcome]:
    """Each rule's outcome over the stream; one HashIndex, filled as the stream goes."""
    group = [e.source if e.role != "distractor" else f"distractor:{e.file}" for e in entries]
    edits = sum(e.role == "edit" for e in entries)
    index = HashIndex(len(WINDOWS))
    tallies = {r: [0, 0, 0] for r in rules}  # correct, false, false on distractors
    for i, (entry, f) in enumerate(zip(entries, feats, strict=True)):
        if f.error is None and f.windows is not None:  # no windows: too little detail to hash-search
            for rule in rules:
                hit = index.best(f.windows, f.dihedral, f.dhash, i, rule)
                if hit is None:
                    continue
                ok = entry.role == "edit" and group[hit.id] == group[i]
                tallies[rule][0 if ok else 1] += 1
                tallies[rule][2] += entry.role == "distractor"
            index.add(i, f.windows, f.dhash)
    return [Outcome(r, c / edits, c / max(1, c + x), x, d) for r, (c, x, d) in tallies.items()]


COPY_GRID = {"copy": (50, 60, 70, 80, 85, 90, 93, 96), "verify": (30, 40, 45, 50, 55, 60, 65, 70),
             "veto": (-1, 15, 25, 40, 50, 60)}


def copy_replay(entries: list[dataset.Entry], feats, th_list: list, align=None) -> dict:
    """Each Thresholds' (correct, false, distractors flagged) over the stream, decided by daemon.index.verdict.
    `align(i, j)`: the verification of file i against file j (each pair computed once), or None: none."""
    from daemon.index.verdict import Evidence, decide, to_verify

    group = [e.group if e.role != "distractor" else f"distractor:{e.file}" for e in entries]
    ok = [f.error is None and f.copy_embedding is not None for f in feats]
    zero = np.zeros(512, np.float32)
    full = np.stack([f.copy_embedding if k else zero for f, k in zip(feats, ok, strict=True)])
    framed = np.asarray([k and f.copy_inner is not None for f, k in zip(feats, ok, strict=True)])
    pictures = [inner_rows(f.copy_inner, 512) if k else None for f, k in zip(feats, ok, strict=True)]
    inner = np.concatenate([p for p in pictures if p is not None] or [np.zeros((0, 512), np.float32)])
    owner = np.concatenate([np.full(len(p), i) for i, p in enumerate(pictures) if p is not None] or
                           [np.zeros(0, np.int64)])
    index = HashIndex(len(WINDOWS))
    tallies = {th: [0, 0, 0] for th in th_list}
    rule = th_list[0].hashes
    for i, (entry, f) in enumerate(zip(entries, feats, strict=True)):
        if not ok[i]:
            continue
        earlier = np.flatnonzero(ok[:i]) if i else np.zeros(0, np.int64)
        scores = _pair_scores(f, full, inner, owner, framed)[earlier]
        order = np.argsort(-scores, kind="stable")[:10]
        copies = [(int(earlier[j]), float(scores[j])) for j in order]
        searchable = f.windows is not None  # else too little detail to hash-search (the owner's rule)
        hit = index.best(f.windows, f.dihedral, f.dhash, i, rule) if searchable else None
        hit_score = float(scores[np.searchsorted(earlier, hit.id)]) if hit is not None else None
        ev = Evidence(hashed=hit, hashed_copy_score=hit_score, copies=copies)
        for th in th_list:
            d = decide(ev, th, {j: align(i, j) for j in to_verify(ev, th)} if align else None)
            if d.kind != "edited-copy":
                continue
            right = entry.role == "edit" and d.match_id is not None and group[d.match_id] == group[i]
            tallies[th][0 if right else 1] += 1
            tallies[th][2] += entry.role == "distractor"
        if searchable:
            index.add(i, f.windows, f.dhash)
    return tallies


def _pair_scores(f, full: np.ndarray, inner: np.ndarray, owner: np.ndarray, framed: np.ndarray) -> np.ndarray:
    """daemon.index.verdict.pair_score of one file against every file, vectorised (the same rule: framed pairs
    are compared by their pictures, never frame to frame). `inner`: every file's pictures' vectors, one row
    each, `owner`: the file each row belongs to."""
    low = np.full(len(full), -100.0)

    def per_file(values: np.ndarray) -> np.ndarray:
        best = low.copy()
        np.maximum.at(best, owner, values)
        return best

    mine = inner_rows(f.copy_inner, len(f.copy_embedding))
    whole = full @ f.copy_embedding * 100.0
    scores = np.where(framed, low, whole) if mine is not None else whole
    scores = np.maximum(scores, per_file(inner @ f.copy_embedding * 100.0))
    if mine is not None:
        scores = np.maximum(scores, (full @ mine.T).max(axis=1) * 100.0)
        scores = np.maximum(scores, per_file((inner @ mine.T).max(axis=1) * 100.0))
    return scores


def copy_main(args, entries: list[dataset.Entry]) -> None:
    from daemon.config import Settings
    from daemon.index.verdict import Thresholds
    from workers.models.loading import load_copy_model
    from workers.settings import CopyModelSettings

    settings = Settings(hash_only=False, require_model=True, copy_model=CopyModelSettings(name=args.copy_model))
    copier, status = load_copy_model(settings)
    if copier is None:
        raise SystemExit(f"no copy descriptor: {status}")
    cache = args.data / f"features-{copier.identity.replace(':', '_')}-{len(entries)}.pickle"
    if cache.exists():  # the replay is cheap; the features are not
        feats = pickle.loads(cache.read_bytes())
    else:
        feats = features(args.data, entries, copier)
        cache.write_bytes(pickle.dumps(feats))
    shipped = Thresholds.resolve(MatchSettings(), None, settings.copy_model)
    grid = {shipped} | {Thresholds(shipped.hashes, copy_score=c, similar_score=None, verify_score=v, veto_score=t)
                        for c, v, t in itertools.product(*COPY_GRID.values()) if t < v < c}
    th_list = [shipped] if args.only_shipped else sorted(grid, key=lambda t: (t.copy_score, t.verify_score,
                                                                               t.veto_score))
    align = None
    if args.verify:
        from functools import cache

        from workers.align import align_files

        @cache
        def align(i: int, j: int):
            return align_files(str(args.data / entries[i].file), str(args.data / entries[j].file))

    tallies = copy_replay(entries, feats, th_list, align)
    edits = sum(e.role == "edit" for e in entries)
    distractors = sum(e.role == "distractor" for e in entries)
    rows = [(th, c / edits, c / max(1, c + x), x, d) for th, (c, x, d) in tallies.items()]
    good = sorted((r for r in rows if r[2] >= args.precision and r[4] <= 0.01 * distractors),
                  key=lambda r: (-r[1], -r[2]))
    print(f"{len(entries)} files, {edits} edits, {distractors} distractors; copy descriptor {copier.identity}; "
          f"settings with precision >= {args.precision} and <= 1 % of distractors flagged, best first "
          f"({'with' if args.verify else 'no'} geometric verification)")
    print(f"{'copy':>5} {'verify':>6} {'veto':>5}  {'recall':>6} {'prec':>6} {'false':>5} {'distr':>5}")
    shown = good[: args.top] + [r for r in rows if r[0] == shipped and r not in good[: args.top]]
    for th, recall, precision, false, flagged in shown:
        mark = "  <- shipped defaults" if th == shipped else ""
        print(f"{th.copy_score:>5.0f} {th.verify_score:>6.0f} {th.veto_score:>5.0f}  {recall:6.3f} {precision:6.3f} "
              f"{false:>5} {flagged:>5}{mark}")


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=Path("bench/data/acc"))
    ap.add_argument("--split", choices=(*dataset.SPLITS, "all"), default="calibration",
                    help="which stream to calibrate on; bench.accuracy measures the test half")
    ap.add_argument("--precision", type=float, default=0.99)
    ap.add_argument("--top", type=int, default=10)
    ap.add_argument("--copy", action="store_true", help="calibrate the copy descriptor's scores (SSCD)")
    ap.add_argument("--copy-model", default="sscd", help="--copy: which copy descriptor (sscd, sscd_distilled)")
    ap.add_argument("--verify", action="store_true", help="--copy with geometric verification (workers.align)")
    ap.add_argument("--limit", type=int, help="only the first N files of the stream (verification is slow)")
    ap.add_argument("--only-shipped", action="store_true", help="--copy: replay the shipped thresholds alone")
    args = ap.parse_args(argv)
    if not (args.data / "manifest.jsonl").exists():
        raise SystemExit(f"no benchmark at {args.data}: build it with python -m bench.dataset --out {args.data}")
    entries = dataset.load_manifest(args.data, None if args.split == "all" else args.split)[: args.limit]
    if args.copy:
        copy_main(args, entries)
        return
    feats = features(args.data, entries)
    m = MatchSettings()
    shipped = HashRule(m.phash_max_distance, m.window_max_distance, m.dhash_max_distance, m.confirm_phash_distance,
                       m.confirm_dhash_distance)
    rules = sorted({HashRule(*values) for values in itertools.product(*GRID.values())} | {shipped},
                   key=lambda r: tuple(vars(r).values()))
    outcomes = replay(entries, feats, rules)
    good = sorted((o for o in outcomes if o.precision >= args.precision and o.distractor_false == 0),
                  key=lambda o: (-o.recall, -o.precision))
    print(f"{len(entries)} files, {sum(e.role == 'edit' for e in entries)} edits; rules with precision >= "
          f"{args.precision} and no distractor flagged, best first")
    print(f"{'phash':>5} {'window':>6} {'dhash':>5} {'conf-p':>6} {'conf-d':>6}  {'recall':>6} {'prec':>6} {'false':>5}")
    shown = good[: args.top]
    shown += [o for o in outcomes if o.rule == shipped and o not in shown]
    for o in shown:
        mark = "  <- shipped defaults" if o.rule == shipped else ""
        r = o.rule
        print(f"{r.phash:>5} {r.window:>6} {r.dhash:>5} {r.confirm_phash:>6} {r.confirm_dhash:>6}  "
              f"{o.recall:6.3f} {o.precision:6.3f} {o.false:>5}{mark}")


if __name__ == "__main__":
    main()
