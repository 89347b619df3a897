"""Calibrate the hash rule (daemon.hashindex.HashRule) on the edited-copy benchmark.

    python -m bench.calibrate --data bench/data/acc              # the calibration half (default)

Computes every file's features once with the workers' own pipeline (hash-only), then replays the stream:
each file against every EARLIER file with the daemon's own HashIndex, for each rule in a grid. Prints the
rules with the highest recall at precision >= --precision and no false verdict on distractors, and the
figures of the shipped defaults. The defaults in daemon/defaults.py were chosen from this table.
"""

from __future__ import annotations

import argparse
import itertools
from dataclasses import dataclass
from pathlib import Path

from bench import dataset
from daemon.config import MatchSettings
from daemon.hashindex import HashIndex, HashRule
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


def features(data: Path, entries: list[dataset.Entry]):
    pipeline = Pipeline(DecodeSettings(), None)
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
        if f.error is None:
            for rule in rules:
                hit = index.best(f.windows, f.dihedral, f.dhash, i, rule)
                if hit is None:
                    continue
                ok = entry.role == "edit" and group[hit.id] == group[i]
                tallies[rule][0 if ok else 1] += 1
                tallies[rule][2] += entry.role == "distractor"
            index.add(i, f.windows, f.dhash)
    return [Outcome(r, c / edits, c / max(1, c + x), x, d) for r, (c, x, d) in tallies.items()]


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=Path("bench/data/acc"))
    ap.add_argument("--split", choices=(*dataset.SPLITS, "all"), default="calibration",
                    help="which stream to calibrate on; bench.accuracy measures the test half")
    ap.add_argument("--precision", type=float, default=0.99)
    ap.add_argument("--top", type=int, default=10)
    args = ap.parse_args(argv)
    if not (args.data / "manifest.jsonl").exists():
        raise SystemExit(f"no benchmark at {args.data}: build it with python -m bench.dataset --out {args.data}")
    entries = dataset.load_manifest(args.data, None if args.split == "all" else args.split)
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
