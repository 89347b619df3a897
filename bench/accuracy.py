"""Edited-copy accuracy of `dupwatch scan`, one column per mode, against imagehash pHash and
Immaculate's `pdq` and `sscd`, in one run on the same files.

    python -m bench.accuracy --data bench/data/acc               # builds the data set if missing
    python -m bench.accuracy --data bench/data/acc --mode hash-only=--hash-only --mode 'sscd=' \
        --mode 'sscd-verify=--verify' --json bench/out/acc.json
    python -m bench.accuracy --data bench/data/small --split all --anchors phash   # smoke size

Every method sees the same files in the same stream order (one split's stream, `--split`, the test half
by default: defaults are chosen on the calibration half) and may only match a file against EARLIER
files, as the service does. Metric definitions: bench/metrics.py.

- dupwatch, once per `--mode NAME=FLAGS`: `dupwatch scan --files-from LIST --state-dir TMP FLAGS` in a
  fresh state dir, FLAGS passed through as they are (so a new mode needs no code). Verdicts
  exact-copy / edited-copy are copy predictions with their 0-100 score; `similar` is not a copy claim,
  so on an edit it counts as a miss (the table shows how many there were). Default modes: `hash-only`
  (`--hash-only`) and `default` (no flags: whatever a fresh install runs).
- imagehash pHash as users run it (`imagehash.phash(Image.open(path))` in a loop, in its own process),
  best match = the earlier file at minimum Hamming distance, score = 64 - distance, default
  distance <= 10 (the threshold commonly used with imagehash).
- Immaculate `pdq` and `sscd` (bench/anchors.py, own Python 3.12 venv): its groups become one match per
  file (the earliest other member of its group in stream order), all at one score: it has no threshold
  to sweep, so its R@P99 is its recall when its own precision reaches 0.99, else 0.

Reported per method: precision and recall at its defaults and per edit family; distractors flagged
(count and %, and per kind of hard negative); wrong matches through a shared template frame
("template collisions", apart from the other false matches); R@P.99; pair precision and recall of the
duplicate groups its matches form (links joined transitively, against every pair of files derived
from one original); images/s and peak RSS of the whole process (start-up and model load included).
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
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import imagehash
import numpy as np
import PIL
from PIL import Image

from bench import anchors, dataset, measure
from bench.machine import cpu_model
from bench.metrics import (
    Prediction,
    average_precision,
    group_pairs,
    is_correct,
    merge_groups,
    pair_precision_recall,
    pr_curve,
    precision_recall_at,
    recall_at_precision,
    recall_by_family,
)

COPY_VERDICTS = {"exact-copy", "edited-copy"}
HASH_BITS = 64
IMAGEHASH_DEFAULT_DISTANCE = 10
DEFAULT_MODES = ("hash-only=--hash-only", "default=")
ANCHORS = ("phash", "pdq", "sscd")


@dataclass
class MethodRun:
    """What one method said about the stream: predictions, its own verdicts if it has any, cost."""

    name: str
    predictions: list[Prediction]
    seconds: float
    default_threshold: float | None  # None: the method's own verdicts are its default
    verdicts: dict[str, str] = field(default_factory=dict)
    similar_matches: dict[str, str] = field(default_factory=dict)
    model: Any = None  # dupwatch's own account of the model it ran with
    peak_rss_mib: float | None = None
    error: str | None = None


def _failed(name: str, error: str) -> MethodRun:
    """A method that could not run stays in the table as a failure, never silently dropped."""
    return MethodRun(name, [], 0.0, None, error=error)


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


def hash_files(paths: list[Path]) -> list[int]:
    """pHash of each file as users compute it (the anchor's own process runs this)."""
    out = []
    for path in paths:
        with Image.open(path) as image:
            out.append(int(_hash_bits(imagehash.phash(image))))
    return out


def run_phash(data: Path, files: list[str]) -> MethodRun:
    """imagehash pHash in its own process (so its speed and memory are a whole command's, like the
    other methods'), matched against earlier files here."""
    with tempfile.TemporaryDirectory(prefix="dupwatch-acc-") as tmp:
        listing = Path(tmp) / "files.txt"
        listing.write_text("".join(f"{(data / name).resolve()}\n" for name in files))
        code = ("import sys; from pathlib import Path; from bench.accuracy import hash_files; "
                "print(*hash_files([Path(p) for p in Path(sys.argv[1]).read_text().split()]), sep='\\n')")
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(anchors.REPO),
                                                                          os.environ.get("PYTHONPATH")]))}
        done = measure.run([sys.executable, "-c", code, str(listing)], env=env)
    if done.rc != 0:
        return _failed("imagehash pHash", f"exit {done.rc}: {done.stderr_tail}")
    hashes = np.array([int(v) for v in done.stdout.split()], dtype=np.uint64)
    return MethodRun("imagehash pHash", best_earlier(hashes, files), done.wall_s,
                     float(HASH_BITS - IMAGEHASH_DEFAULT_DISTANCE), peak_rss_mib=done.max_rss_mib)


def group_predictions(groups: list[list[str]], files: list[str]) -> list[Prediction]:
    """One match per grouped file: the earliest other member of its group in stream order, at score
    1 (a grouping method has no scores). The earliest member itself gets none, like a `new` verdict."""
    position = {name: i for i, name in enumerate(files)}
    predictions = []
    for group in groups:
        members = sorted((m for m in group if m in position), key=position.__getitem__)
        predictions += [Prediction(m, members[0], 1.0) for m in members[1:]]
    return sorted(predictions, key=lambda p: position[p.query])


def run_immaculate(method: str, data: Path, files: list[str]) -> MethodRun:
    """Immaculate over a folder holding exactly the stream's files (bench/anchors.py)."""
    name = f"Immaculate {method}"
    try:
        anchors.ensure_venv()
    except (RuntimeError, OSError, subprocess.CalledProcessError) as error:
        return _failed(name, f"no Immaculate venv: {error}")
    with tempfile.TemporaryDirectory(prefix="dupwatch-acc-imm-") as tmp:
        folder = Path(tmp) / "files"
        anchors.stage(data, files, folder)
        done = measure.run(anchors.argv(folder, method))
        if done.rc != 0:
            return _failed(name, f"exit {done.rc}: {done.stderr_tail}")
        groups, skipped = anchors.parse_groups(done.stdout, folder)
    run = MethodRun(name, group_predictions(groups, files), done.wall_s, 1.0, peak_rss_mib=done.max_rss_mib)
    if skipped:
        run.error = f"skipped {len(skipped)} files"
    return run


# ---- dupwatch ---------------------------------------------------------------------------------

def parse_mode(text: str) -> tuple[str, list[str]]:
    """`NAME=FLAGS` -> (NAME, shell-split FLAGS); FLAGS may be empty (the defaults)."""
    name, sep, flags = text.partition("=")
    if not sep or not name.strip():
        raise argparse.ArgumentTypeError(f"--mode wants NAME=FLAGS, got {text!r}")
    return name.strip(), shlex.split(flags)


def _scan_command(command: str, files_from: Path, state_dir: Path, flags: list[str]) -> list[str]:
    return shlex.split(command) + ["scan", "--files-from", str(files_from), "--state-dir", str(state_dir), *flags]


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
    back to hash-only, and a result must say which mode it measured."""
    argv = shlex.split(command) + ["status", "--json"]
    env = {**os.environ, "DUPWATCH_STATE_DIR": str(state_dir)}
    done = measure.run(argv, env=env)
    try:
        return json.loads(done.stdout).get("model") if done.rc == 0 else f"unknown (exit {done.rc})"
    except (json.JSONDecodeError, AttributeError) as error:
        return f"unknown ({type(error).__name__})"


def run_dupwatch(command: str, data: Path, files: list[str], name: str, flags: list[str]) -> MethodRun:
    """One `dupwatch scan` over the stream in a fresh state dir, timed as a whole process."""
    label = f"dupwatch {name}"
    with tempfile.TemporaryDirectory(prefix="dupwatch-acc-") as tmp:
        files_from = Path(tmp) / "files.txt"
        files_from.write_text("".join(f"{(data / name_).resolve()}\n" for name_ in files))
        done = measure.run(_scan_command(command, files_from, Path(tmp) / "state", flags))
        if done.rc != 0:
            return _failed(label, f"exit {done.rc}: {done.stderr_tail}")
        model = _model_status(command, Path(tmp) / "state")
    records = parse_scan_output(done.stdout.splitlines(), data, files)
    predictions = [
        Prediction(r["path"], r["match"], float(r["score"])) for r in records
        if r["verdict"] in COPY_VERDICTS and r.get("match") is not None and r.get("score") is not None
    ]
    return MethodRun(label, predictions, done.wall_s, None, model=model, peak_rss_mib=done.max_rss_mib,
                     verdicts={r["path"]: r["verdict"] for r in records},
                     similar_matches={r["path"]: r["match"] for r in records
                                      if r["verdict"] == "similar" and r.get("match") is not None})


# ---- evaluation -------------------------------------------------------------------------------

def _flagged(run: MethodRun, entries: list[dataset.Entry]) -> set[str]:
    """Files the method flagged at its default: dupwatch any verdict but new/error, the others a
    prediction at or above their default threshold."""
    if run.default_threshold is None:
        return {f for f, v in run.verdicts.items() if v not in ("new", "error")}
    return {p.query for p in run.predictions if p.score >= run.default_threshold}


def _distractors_flagged(run: MethodRun, entries: list[dataset.Entry]) -> dict[str, Any]:
    """Distractors flagged at the default, in all and per kind of hard negative."""
    flagged = _flagged(run, entries)
    distractors = [e for e in entries if e.role == "distractor"]
    kinds: dict[str, list[int]] = {}
    for e in distractors:
        tally = kinds.setdefault(str(e.kind), [0, 0])
        tally[0] += e.file in flagged
        tally[1] += 1
    count = sum(e.file in flagged for e in distractors)
    return {"count": count, "of": len(distractors),
            "percent": round(100 * count / len(distractors), 2) if distractors else 0.0,
            "by_kind": {k: {"flagged": v[0], "of": v[1]} for k, v in sorted(kinds.items())}}


def _accepted(run: MethodRun) -> list[Prediction]:
    default = run.default_threshold if run.default_threshold is not None else float("-inf")
    return [p for p in run.predictions if p.score >= default]


def _false_matches(run: MethodRun, entries: list[dataset.Entry]) -> dict[str, int]:
    """Wrong matches at the default, split into template collisions (query and match in the same
    frame, different photos: what the benchmark counts apart) and all others."""
    by_file = {e.file: e for e in entries}
    groups = {e.file: e.group for e in entries}
    wrong = [p for p in _accepted(run) if not is_correct(p, groups)]
    collisions = sum(1 for p in wrong if p.match in by_file and by_file[p.query].template is not None
                     and by_file[p.query].template == by_file[p.match].template)
    return {"template_collisions": collisions, "other": len(wrong) - collisions}


def _pairs(run: MethodRun, entries: list[dataset.Entry]) -> tuple[float, float]:
    """Pair precision/recall of the groups the accepted matches form, against every pair of files
    derived from one original (the original and its copies)."""
    members: dict[str, list[str]] = {}
    for e in entries:
        if e.role != "distractor":
            members.setdefault(e.group, []).append(e.file)
    truth = group_pairs(members.values())
    predicted = group_pairs(merge_groups([p.query, p.match] for p in _accepted(run)))
    return pair_precision_recall(predicted, truth)


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


def _wrong_matches(run: MethodRun, entries: list[dataset.Entry]) -> list[dict[str, Any]]:
    """Every wrong prediction accepted at the default, highest score first: what calibration needs
    to look at (saved in --json, not printed)."""
    by_file = {e.file: e for e in entries}
    groups = {e.file: e.group for e in entries}
    wrong = [p for p in _accepted(run) if not is_correct(p, groups)]
    return [{"query": p.query, "match": p.match, "score": p.score, "role": by_file[p.query].role,
             "kind": by_file[p.query].kind, "match_kind": by_file[p.match].kind if p.match in by_file else None,
             "template": by_file[p.query].template, "family": by_file[p.query].family,
             "ops": [op["op"] for op in by_file[p.query].ops]}
            for p in sorted(wrong, key=lambda p: (-p.score, p.query))]


def _verdicts_by_op(run: MethodRun, entries: list[dataset.Entry]) -> dict[str, dict[str, int]]:
    """dupwatch's verdict counts per role (originals, distractors) and per edit op: shows, e.g.,
    whether lossless re-saves come out as exact-copy as docs/detection.md says they should."""
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
    if run.error and not run.predictions and not run.verdicts:
        return {"method": run.name, "error": run.error}
    groups = {e.file: e.group for e in entries}
    families = {e.file: str(e.family) for e in entries if e.role == "edit"}
    ops = {e.file: _op_label(e) for e in entries if e.role == "edit"}
    positives = len(families)
    points = pr_curve(run.predictions, groups, positives)
    r90, t90 = recall_at_precision(points, 0.90)
    r99, t99 = recall_at_precision(points, 0.99)
    default = run.default_threshold if run.default_threshold is not None else float("-inf")
    precision_d, recall_d = precision_recall_at(run.predictions, groups, positives, default)
    pair_p, pair_r = _pairs(run, entries)
    result = {
        "method": run.name,
        "seconds": round(run.seconds, 3),
        "images_per_s": round(files_count / run.seconds, 1) if run.seconds else None,
        "peak_rss_mib": round(run.peak_rss_mib, 1) if run.peak_rss_mib is not None else None,
        "micro_ap": round(average_precision(points), 4),
        "recall_at_p90": round(r90, 4), "threshold_at_p90": t90,
        "recall_at_p99": round(r99, 4), "threshold_at_p99": t99,
        "family_recall_at_p99": recall_by_family(run.predictions, groups, families, t99),
        "default_threshold": run.default_threshold,
        "default_precision": round(precision_d, 4), "default_recall": round(recall_d, 4),
        "family_recall_at_default": recall_by_family(run.predictions, groups, families, default),
        "op_recall_at_p99": recall_by_family(run.predictions, groups, ops, t99),
        "op_recall_at_default": recall_by_family(run.predictions, groups, ops, default),
        "distractors_flagged": _distractors_flagged(run, entries),
        "false_matches": _false_matches(run, entries),
        "pair_precision": round(pair_p, 4), "pair_recall": round(pair_r, 4),
        "wrong_at_default": _wrong_matches(run, entries),
    }
    if run.error:
        result["note"] = run.error
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


def report(results: list[dict[str, Any]], env: dict[str, Any], info: dict[str, Any], split: str) -> str:
    """Plain-text tables: overall metrics, distractors per kind, recall per edit family and op."""
    ok = [r for r in results if "error" not in r]
    overall = _table(
        ["method", "P@default", "R@default", "distr. flagged", "tmpl coll.", "other FP", "R@P.99", "thr",
         "µAP", "pair P", "pair R", "similar(edits)", "img/s", "peak RSS MiB"],
        [[r["method"], r["default_precision"], r["default_recall"],
          f"{r['distractors_flagged']['count']} ({r['distractors_flagged']['percent']:.1f}%)",
          r["false_matches"]["template_collisions"], r["false_matches"]["other"], r["recall_at_p99"],
          r["threshold_at_p99"], r["micro_ap"], r["pair_precision"], r["pair_recall"],
          r.get("similar", {}).get("edits"), r["images_per_s"], r["peak_rss_mib"]] for r in ok],
    )
    failed = "".join(f"\n{r['method']}: FAILED: {r['error']}" for r in results if "error" in r)
    notes = "".join(f"\n{r['method']}: {r['note']}" for r in ok if "note" in r)
    kinds = sorted(ok[0]["distractors_flagged"]["by_kind"]) if ok else []
    by_kind = _table(
        ["distractor kind"] + [r["method"] for r in ok],
        [[k] + [f"{r['distractors_flagged']['by_kind'][k]['flagged']}/{r['distractors_flagged']['by_kind'][k]['of']}"
                for r in ok] for k in kinds],
    )
    counts = info["counts"]
    head = (f"edited-copy accuracy  {env['date']}  {env['cpu']}  {env['cpus_usable']} usable cores"
            f" of {env['cpus_total']}\n"
            f"data: split {split!r} of {counts['original']} originals, {counts['edit']} edits,"
            f" {counts['distractor']} distractors ({counts.get('source_photos', '?')} source photos), seed"
            f" {info['seed']}; scores: dupwatch 0-100, pHash 64 - Hamming distance, Immaculate groups;"
            f" default = dupwatch verdicts / pHash distance <= {IMAGEHASH_DEFAULT_DISTANCE} / Immaculate groups")
    models = "".join(f"\n{r['method']} model: {json.dumps(r['model'])}" for r in ok if "model" in r)
    return (f"{head}{models}{failed}{notes}\n\n{overall}\n\ndistractors flagged at the default, per kind\n"
            f"{by_kind}\n\nrecall per edit family\n{_recall_table('family', ok)}\n\n"
            f"recall per edit op\n{_recall_table('op', ok)}\n")


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
    parser.add_argument("--split", choices=(*dataset.SPLITS, "all"), default="test",
                        help="which stream to measure (default: the test half)")
    parser.add_argument("--dupwatch", default="dupwatch", help="command that runs dupwatch")
    parser.add_argument("--mode", action="append", type=parse_mode, metavar="NAME=FLAGS",
                        help="a dupwatch scan mode, FLAGS passed to `dupwatch scan` (repeatable; default: "
                             + ", ".join(repr(m) for m in DEFAULT_MODES) + "); --mode none=skip runs no dupwatch")
    parser.add_argument("--anchors", default=",".join(ANCHORS),
                        help=f"comma-separated anchors among {', '.join(ANCHORS)} ('' for none)")
    parser.add_argument("--json", type=Path, help="also save the results here")
    parser.add_argument("--limit", type=int, help="only the first N files of the stream (its originals come "
                                                  "first): a shorter run, same order, same verdicts for those")
    args = parser.parse_args(argv)

    if not (args.data / "stream.txt").exists():
        dataset.main(["--out", str(args.data)])
    entries = dataset.load_manifest(args.data, None if args.split == "all" else args.split)[: args.limit]
    files = [e.file for e in entries]
    # The header counts what this stream holds, not the whole data set.
    info = {**json.loads((args.data / "dataset.json").read_text()), "counts": dataset.counts(entries)}
    modes = args.mode or [parse_mode(m) for m in DEFAULT_MODES]
    chosen = [a for a in args.anchors.split(",") if a]
    unknown = set(chosen) - set(ANCHORS)
    if unknown:
        parser.error(f"unknown anchors {sorted(unknown)}")

    runs = []
    for name, flags in modes:
        if name == "none":
            continue
        if _dupwatch_available(args.dupwatch):
            runs.append(run_dupwatch(args.dupwatch, args.data, files, name, flags))
        else:
            runs.append(_failed(f"dupwatch {name}", f"command not found ({args.dupwatch!r})"))
        print(f"ran dupwatch {name}", file=sys.stderr)
    if "phash" in chosen:
        runs.append(run_phash(args.data, files))
    for method in ("pdq", "sscd"):
        if method in chosen:
            runs.append(run_immaculate(method, args.data, files))
            print(f"ran Immaculate {method}", file=sys.stderr)

    results = [evaluate(run, entries, len(files)) for run in runs]
    env = machine()
    print(report(results, env, info, args.split))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        payload = {"machine": env, "dataset": {k: v for k, v in info.items() if k != "photos"},
                   "data": str(args.data), "split": args.split, "results": results}
        args.json.write_text(json.dumps(payload, indent=2) + "\n")


if __name__ == "__main__":
    main()
