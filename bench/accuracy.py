"""Edited-copy accuracy of `dupwatch scan` against imagehash pHash and dHash, in one run.

    python -m bench.accuracy --data bench/data/acc               # builds the data set if missing
    python -m bench.accuracy --data bench/data/acc --hash-only --json bench/out/acc.json

Every method sees the same files in the same stream order (stream.txt) and may only match a file
against EARLIER files, as the service does (DESIGN §3.2). Metric definitions: bench/metrics.py.

- dupwatch: `dupwatch scan --files-from LIST --state-dir TMP [--hash-only]` (DESIGN §6), in a fresh
  state dir. Verdicts exact-copy / edited-copy are copy predictions with their 0-100 score; `similar`
  is not a copy claim, so on an edit it counts as a miss (the table shows how many there were).
- anchors: imagehash pHash and dHash as users run them (`imagehash.phash(Image.open(path))` in a plain
  loop), best match = the earlier file at minimum Hamming distance, score = 64 - distance. Their
  "default" is distance <= 10, the threshold commonly used with imagehash.

Images/s is files / wall time of the whole method (decode, hash, search; for dupwatch also process
start and model load, which a one-shot scan pays).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import imagehash
import numpy as np
import PIL
from PIL import Image

from bench import dataset
from bench.machine import cpu_model
from bench.metrics import (
    Prediction,
    average_precision,
    is_correct,
    pr_curve,
    precision_recall_at,
    recall_at_precision,
    recall_by_family,
)

COPY_VERDICTS = {"exact-copy", "edited-copy"}
HASH_BITS = 64
IMAGEHASH_DEFAULT_DISTANCE = 10


@dataclass
class MethodRun:
    """What one method said about the stream: predictions, its own verdicts if it has any, time."""

    name: str
    predictions: list[Prediction]
    seconds: float
    default_threshold: float | None  # None: the method's own verdicts are its default
    verdicts: dict[str, str] = field(default_factory=dict)
    similar_matches: dict[str, str] = field(default_factory=dict)
    model: Any = None  # dupwatch's own account of the model it ran with


# ---- anchors ----------------------------------------------------------------------------------

def _hash_bits(value: imagehash.ImageHash) -> np.uint64:
    """A 64-bit imagehash as one unsigned integer, so distances are XOR + popcount."""
    return np.frombuffer(np.packbits(value.hash.flatten()).tobytes(), dtype=">u8")[0].astype(np.uint64)


def best_earlier(hashes: np.ndarray, files: list[str]) -> list[Prediction]:
    """For each file after the first, the earliest earlier file at minimum Hamming distance."""
    predictions = []
    for i in range(1, len(files)):
        distances = np.bitwise_count(hashes[:i] ^ hashes[i])
        j = int(np.argmin(distances))
        predictions.append(Prediction(files[i], files[j], float(HASH_BITS - int(distances[j]))))
    return predictions


def run_anchor(name: str, hasher: Callable[[Image.Image], imagehash.ImageHash], data: Path,
               files: list[str]) -> MethodRun:
    """Hash every file in stream order and match it against the earlier ones, timed end to end."""
    start = time.perf_counter()
    hashes = np.empty(len(files), dtype=np.uint64)
    for i, name_ in enumerate(files):
        with Image.open(data / name_) as image:
            hashes[i] = _hash_bits(hasher(image))
    predictions = best_earlier(hashes, files)
    seconds = time.perf_counter() - start
    return MethodRun(name, predictions, seconds, float(HASH_BITS - IMAGEHASH_DEFAULT_DISTANCE))


# ---- dupwatch ---------------------------------------------------------------------------------

def _scan_command(command: str, files_from: Path, state_dir: Path, hash_only: bool) -> list[str]:
    argv = shlex.split(command) + ["scan", "--files-from", str(files_from), "--state-dir", str(state_dir)]
    return argv + (["--hash-only"] if hash_only else [])


def parse_scan_output(lines: list[str], data: Path, files: list[str]) -> list[dict[str, Any]]:
    """Check the §6 contract (one object per input file, in input order) and key each record by our
    relative file names; a match outside the data set keeps its path and can only count as wrong."""
    records = [json.loads(line) for line in lines if line.strip()]
    if len(records) != len(files):
        raise RuntimeError(f"dupwatch scan printed {len(records)} records for {len(files)} files")
    by_path = {str((data / name).resolve()): name for name in files}
    for record, name in zip(records, files):
        if by_path.get(str(Path(record["path"]).resolve())) != name:
            raise RuntimeError(f"dupwatch scan out of order: expected {name}, got {record['path']}")
        record["path"] = name
        if record.get("match") is not None:
            record["match"] = by_path.get(str(Path(record["match"]).resolve()), record["match"])
    return records


def _model_status(command: str, state_dir: Path) -> Any:
    """The `model` of `dupwatch status --json` for the scan's state dir: without weights a run falls
    back to hash-only (DESIGN §1), and a result must say which mode it measured."""
    argv = shlex.split(command) + ["status", "--json"]
    env = {**os.environ, "DUPWATCH_STATE_DIR": str(state_dir)}
    try:
        result = subprocess.run(argv, env=env, capture_output=True, text=True, check=True, timeout=120)
        return json.loads(result.stdout).get("model")
    except (subprocess.SubprocessError, json.JSONDecodeError, AttributeError) as error:
        return f"unknown ({type(error).__name__})"


def run_dupwatch(command: str, data: Path, files: list[str], hash_only: bool) -> MethodRun:
    """One `dupwatch scan` over the stream in a fresh state dir; stderr (progress) passes through."""
    with tempfile.TemporaryDirectory(prefix="dupwatch-acc-") as tmp:
        files_from = Path(tmp) / "files.txt"
        files_from.write_text("".join(f"{(data / name).resolve()}\n" for name in files))
        argv = _scan_command(command, files_from, Path(tmp) / "state", hash_only)
        start = time.perf_counter()
        result = subprocess.run(argv, stdout=subprocess.PIPE, text=True, check=True)
        seconds = time.perf_counter() - start
        model = _model_status(command, Path(tmp) / "state")
    records = parse_scan_output(result.stdout.splitlines(), data, files)
    predictions = [
        Prediction(r["path"], r["match"], float(r["score"])) for r in records
        if r["verdict"] in COPY_VERDICTS and r.get("match") is not None and r.get("score") is not None
    ]
    name = "dupwatch" + (" --hash-only" if hash_only else "")
    return MethodRun(name, predictions, seconds, None, model=model,
                     verdicts={r["path"]: r["verdict"] for r in records},
                     similar_matches={r["path"]: r["match"] for r in records
                                      if r["verdict"] == "similar" and r.get("match") is not None})


# ---- evaluation -------------------------------------------------------------------------------

def _distractor_false(run: MethodRun, entries: list[dataset.Entry]) -> int:
    """Distractors flagged at the method's default: dupwatch any verdict but new/error, anchors a
    best distance within the default threshold."""
    distractors = {e.file for e in entries if e.role == "distractor"}
    if run.default_threshold is None:
        return sum(run.verdicts.get(f) not in ("new", "error") for f in distractors)
    return sum(p.query in distractors and p.score >= run.default_threshold for p in run.predictions)


def _similar_summary(run: MethodRun, entries: list[dataset.Entry]) -> dict[str, int]:
    """How many edits dupwatch called `similar` (misses for copy detection), and how many of those
    pointed at the right original anyway; plus distractors called similar."""
    groups = {e.file: e.group for e in entries}
    roles = {e.file: e.role for e in entries}
    edits = [f for f, match in run.similar_matches.items() if roles[f] == "edit"]
    return {
        "edits": len(edits),
        "edits_right_original": sum(groups.get(run.similar_matches[f]) == groups[f] for f in edits),
        "distractors": sum(roles[f] == "distractor" for f in run.similar_matches),
    }


def _wrong_matches(run: MethodRun, entries: list[dataset.Entry], threshold: float) -> list[dict[str, Any]]:
    """Every wrong prediction accepted at the default, highest score first: what calibration needs
    to look at (saved in --json, not printed)."""
    by_file = {e.file: e for e in entries}
    groups = {e.file: e.group for e in entries}
    wrong = [p for p in run.predictions if p.score >= threshold and not is_correct(p, groups)]
    return [{"query": p.query, "match": p.match, "score": p.score, "role": by_file[p.query].role,
             "family": by_file[p.query].family, "ops": [op["op"] for op in by_file[p.query].ops]}
            for p in sorted(wrong, key=lambda p: (-p.score, p.query))]


def _verdicts_by_op(run: MethodRun, entries: list[dataset.Entry]) -> dict[str, dict[str, int]]:
    """dupwatch's verdict counts per role (originals, distractors) and per edit op: shows, e.g.,
    whether lossless re-saves come out as exact-copy as DESIGN §4 says they should."""
    counts: dict[str, dict[str, int]] = {}
    for entry in entries:
        key = _op_label(entry) if entry.role == "edit" else entry.role
        verdict = run.verdicts.get(entry.file, "missing")
        counts.setdefault(key, {})[verdict] = counts.setdefault(key, {}).get(verdict, 0) + 1
    return {key: counts[key] for key in sorted(counts)}


def _op_label(entry: dataset.Entry) -> str:
    """The single op of an edit, or `combo`: finer than the family, to see which edit breaks what."""
    return "combo" if entry.family == "combo" else entry.ops[0]["op"]


def evaluate(run: MethodRun, entries: list[dataset.Entry], files_count: int) -> dict[str, Any]:
    """All metrics of one method on the stream."""
    groups = {e.file: e.group for e in entries}
    families = {e.file: str(e.family) for e in entries if e.role == "edit"}
    ops = {e.file: _op_label(e) for e in entries if e.role == "edit"}
    positives = len(families)
    points = pr_curve(run.predictions, groups, positives)
    r90, t90 = recall_at_precision(points, 0.90)
    r99, t99 = recall_at_precision(points, 0.99)
    default = run.default_threshold if run.default_threshold is not None else float("-inf")
    precision_d, recall_d = precision_recall_at(run.predictions, groups, positives, default)
    result = {
        "method": run.name,
        "seconds": round(run.seconds, 3),
        "images_per_s": round(files_count / run.seconds, 1),
        "micro_ap": round(average_precision(points), 4),
        "recall_at_p90": round(r90, 4), "threshold_at_p90": t90,
        "recall_at_p99": round(r99, 4), "threshold_at_p99": t99,
        "family_recall_at_p99": recall_by_family(run.predictions, groups, families, t99),
        "default_threshold": run.default_threshold,
        "default_precision": round(precision_d, 4), "default_recall": round(recall_d, 4),
        "family_recall_at_default": recall_by_family(run.predictions, groups, families, default),
        "op_recall_at_p99": recall_by_family(run.predictions, groups, ops, t99),
        "op_recall_at_default": recall_by_family(run.predictions, groups, ops, default),
        "distractor_false_at_default": _distractor_false(run, entries),
        "wrong_at_default": _wrong_matches(run, entries, default),
    }
    if run.verdicts:
        result["model"] = run.model
        result["similar"] = _similar_summary(run, entries)
        result["verdicts_by_op"] = _verdicts_by_op(run, entries)
        result["errors"] = sum(v == "error" for v in run.verdicts.values())
    return result


# ---- report -----------------------------------------------------------------------------------

def machine() -> dict[str, Any]:
    """Date and machine, printed with every table: timings mean nothing without them."""
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "cpu": cpu_model(), "cpus_usable": usable, "cpus_total": os.cpu_count(),
        "python": platform.python_version(), "platform": platform.platform(),
        "imagehash": imagehash.__version__, "pillow": PIL.__version__, "numpy": np.__version__,
    }


def _fmt(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.3f}" if abs(value) < 10 else f"{value:.1f}"
    return str(value)


def _table(header: list[str], rows: list[list[Any]]) -> str:
    cells = [header] + [[_fmt(v) for v in row] for row in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(header))]
    lines = ["  ".join(c.rjust(w) if i else c.ljust(w) for i, (c, w) in enumerate(zip(row, widths)))
             for row in cells]
    return "\n".join([lines[0], "  ".join("-" * w for w in widths), *lines[1:]])


def report(results: list[dict[str, Any]], env: dict[str, Any], info: dict[str, Any]) -> str:
    """Plain-text tables: overall metrics, then recall per edit family."""
    n_distractors = info["counts"]["distractor"]
    overall = _table(
        ["method", "µAP", "R@P.90", "thr", "R@P.99", "thr", "P@default", "R@default",
         f"FP distr./{n_distractors}", "similar(edits)", "img/s"],
        [[r["method"], r["micro_ap"], r["recall_at_p90"], r["threshold_at_p90"], r["recall_at_p99"],
          r["threshold_at_p99"], r["default_precision"], r["default_recall"],
          r["distractor_false_at_default"], r.get("similar", {}).get("edits"), r["images_per_s"]]
         for r in results],
    )
    families = _recall_table("family", results)
    ops = _recall_table("op", results)
    counts = info["counts"]
    head = (f"edited-copy accuracy  {env['date']}  {env['cpu']}  {env['cpus_usable']} usable cores"
            f" of {env['cpus_total']}\n"
            f"data: {counts['original']} originals, {counts['edit']} edits, {n_distractors} distractors,"
            f" seed {info['seed']}; scores: dupwatch 0-100, hashes 64 - Hamming distance;"
            f" default = dupwatch verdicts / hash distance <= {IMAGEHASH_DEFAULT_DISTANCE}")
    models = "".join(f"\n{r['method']} model: {json.dumps(r['model'])}" for r in results if "model" in r)
    return (f"{head}{models}\n\n{overall}\n\nrecall per edit family\n{families}\n\n"
            f"recall per edit op\n{ops}\n")


def _recall_table(kind: str, results: list[dict[str, Any]]) -> str:
    """Recall per family (or op): one column per method at its P.99 threshold and at its default."""
    keys = (f"{kind}_recall_at_p99", f"{kind}_recall_at_default")
    names = sorted(results[0][keys[0]]) if results else []
    return _table(
        [kind] + [f"{r['method']} {k}" for r in results for k in ("@P.99", "@default")],
        [[name] + [r[key][name] for r in results for key in keys] for name in names],
    )


# ---- main -------------------------------------------------------------------------------------

def _dupwatch_available(command: str) -> bool:
    return shutil.which(shlex.split(command)[0]) is not None


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=Path("bench/data/acc"),
                        help="benchmark folder; built with bench.dataset defaults if missing")
    parser.add_argument("--dupwatch", default="dupwatch", help="command that runs dupwatch")
    parser.add_argument("--no-dupwatch", action="store_true", help="anchors only")
    parser.add_argument("--hash-only", action="store_true", help="pass --hash-only to dupwatch scan")
    parser.add_argument("--json", type=Path, help="also save the results here")
    args = parser.parse_args(argv)

    if not (args.data / "stream.txt").exists():
        dataset.main(["--out", str(args.data)])
    entries = dataset.load_manifest(args.data)
    files = [e.file for e in entries]
    info = json.loads((args.data / "dataset.json").read_text())

    runs = []
    if not args.no_dupwatch:
        if _dupwatch_available(args.dupwatch):
            runs.append(run_dupwatch(args.dupwatch, args.data, files, args.hash_only))
        else:
            print(f"dupwatch command not found ({args.dupwatch!r}): anchors only", file=sys.stderr)
    runs.append(run_anchor("imagehash pHash", imagehash.phash, args.data, files))
    runs.append(run_anchor("imagehash dHash", imagehash.dhash, args.data, files))

    results = [evaluate(run, entries, len(files)) for run in runs]
    env = machine()
    print(report(results, env, info))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        payload = {"machine": env, "dataset": {k: v for k, v in info.items() if k != "photos"},
                   "data": str(args.data), "results": results}
        args.json.write_text(json.dumps(payload, indent=2) + "\n")


if __name__ == "__main__":
    main()
