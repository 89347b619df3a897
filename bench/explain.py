"""How well workers.align explains edits whose parameters are known (the targets in docs/detection.md).

    python -m bench.explain --data bench/data/acc            # builds the data set if missing
    python -m bench.explain --data bench/data/acc --limit 200 --json bench/out/explain.json
    python -m bench.explain --data bench/data/acc --ops hflip,jpeg30,resize0.5,blur,brightness

Each edited copy in the manifest is aligned with its original exactly as the service does it
(`align_files`: both files re-read from disk, 512 px). Single-op edits are scored against the
parameters bench/edits.py recorded; a copy that gets no alignment counts as a failure of every
criterion it is in, except "no false flip" (it reported none). Combos count only for "no false flip".

| criterion | edits | pass when |
|---|---|---|
| crop IoU | crop | IoU(reported crop box or the whole image, true box) >= 0.85 |
| flip reported | hflip | flip == "horizontal" |
| no false flip | every other edit | flip is null |
| rotation | rotate | abs(reported - true degrees) <= 2 |
| overlay found | text, emoji, meme | the altered boxes cover >= 50 % of each overlay box (per box) |
| mild untouched | jpeg30, resize0.5, blur, brightness | altered_fraction <= 0.02 |
| blur named | blur | "blurred" in the summary, "no visible change" not |
| no false blur | jpeg30, resize0.5, brightness | "blurred" not in the summary |
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageDraw

from bench import dataset, edits
from bench.machine import cpu_model
from bench.metrics import coverage, iou, normalised_box
from workers.align import Alignment, align_files

TARGETS = {"crop IoU >= 0.85": 0.90, "flip reported": 0.98, "no false flip": 0.99, "rotation within 2°": 0.90,
           "overlay covered >= 50 %": 0.80, "mild: altered <= 0.02": 0.95,
           "blur named": 0.90, "no false blur": 0.95}
MILD = ("jpeg30", "resize0.5", "blur", "brightness")


def _overlay_boxes(op: dict[str, Any], copy_size: tuple[int, int]) -> list[list[float]]:
    """The overlay boxes bench/edits.py recorded, in the copy's pixels. A manifest built before
    edits.py recorded text boxes and meme bands gets them rebuilt from what it did record; its text's
    outline width is unknown, so the box is measured with the widest outline text() draws (a box at
    most one outline larger each side than the truth: the criterion can only read lower)."""
    if op["op"] == "text":
        if "box" in op:
            return [op["box"]]
        font = edits._font(op["size"])
        box = ImageDraw.Draw(Image.new("RGB", copy_size)).textbbox(
            tuple(op["xy"]), op["text"], font=font, stroke_width=max(1, op["size"] // 15))
        return [[max(0, box[0]), max(0, box[1]), min(copy_size[0], box[2]), min(copy_size[1], box[3])]]
    if op["op"] == "emoji":
        return [s["box"] for s in op["stickers"]]
    if op["op"] == "meme":
        if "bands" in op:
            return op["bands"]
        width, height, band = copy_size[0], copy_size[1], op["band"]
        top = [[0, 0, width, band]] if op["where"] in ("top", "both") else []
        return top + ([[0, height - band, width, height]] if op["where"] in ("bottom", "both") else [])
    return []


def score(entry: dataset.Entry, result: Alignment | None, original_size: tuple[int, int],
          copy_size: tuple[int, int]) -> dict[str, list[bool]]:
    """criterion -> pass/fail outcomes this copy contributes."""
    ops = entry.ops
    edit = result.edit if result is not None else None
    names = [op["op"] for op in ops]
    out: dict[str, list[bool]] = {}
    if "hflip" not in names:
        out["no false flip"] = [edit is None or edit["flip"] is None]  # no alignment reports no flip
    if entry.family == "combo" or len(ops) != 1:
        return out
    op = ops[0]
    if op["op"] == "crop":
        truth = normalised_box(op["box"], original_size)
        found = (edit["crop"] or [0.0, 0.0, 1.0, 1.0]) if edit else None
        out["crop IoU >= 0.85"] = [found is not None and iou(found, truth) >= 0.85]
    elif op["op"] == "hflip":
        out["flip reported"] = [edit is not None and edit["flip"] == "horizontal"]
    elif op["op"] == "rotate":
        out["rotation within 2°"] = [edit is not None and abs(edit["rotation"] - op["degrees"]) <= 2]
    elif op["op"] in ("text", "emoji", "meme"):
        out["overlay covered >= 50 %"] = [
            edit is not None and coverage(normalised_box(box, copy_size), edit["altered"]) >= 0.5
            for box in _overlay_boxes(op, copy_size)]
    elif op["op"] in MILD:
        out["mild: altered <= 0.02"] = [edit is not None and edit["altered_fraction"] <= 0.02]
    if op["op"] == "blur":
        out["blur named"] = [edit is not None and "blurred" in edit["summary"]
                             and "no visible change" not in edit["summary"]]
    elif op["op"] in MILD:
        out["no false blur"] = [edit is None or "blurred" not in edit["summary"]]
    return out


def run(data: Path, limit: int | None = None, ops: set[str] | None = None, start: int = 0) -> dict[str, Any]:
    entries = [e for e in dataset.load_manifest(data) if e.role == "edit"]
    if ops is not None:  # a criterion's own copies across the whole set, without aligning every other copy
        entries = [e for e in entries if e.family != "combo" and len(e.ops) == 1 and e.ops[0]["op"] in ops]
    entries = entries[start:] if limit is None else entries[start:start + limit]
    outcomes: dict[str, list[bool]] = {name: [] for name in TARGETS}
    seconds, aligned, failures = [], 0, []
    for done, entry in enumerate(entries):
        if done and done % 100 == 0:
            print(f"explain: {done}/{len(entries)} pairs", file=sys.stderr, flush=True)
        copy, original = data / entry.file, data / str(entry.source)
        began = time.perf_counter()
        result = align_files(str(copy), str(original))
        seconds.append(time.perf_counter() - began)
        aligned += result is not None
        with Image.open(original) as o, Image.open(copy) as c:
            sizes = o.size, c.size
        for name, passed in score(entry, result, *sizes).items():
            outcomes[name] += passed
            if not all(passed):
                failures.append({"file": entry.file, "criterion": name, "ops": entry.ops,
                                 "edit": result.edit if result else None})
                print(f"explain: FAIL {name}: {entry.file} ({entry.source}) {[op['op'] for op in entry.ops]} -> "
                      f"{result.edit['summary'] if result else 'no alignment'}", file=sys.stderr, flush=True)
    return {"pairs": len(entries), "ops": sorted(ops) if ops else None, "aligned": aligned, "ms_per_pair_median": 1000 * float(np.median(seconds)),
            "ms_per_pair_mean": 1000 * float(np.mean(seconds)),
            "criteria": {name: {"n": len(v), "rate": (sum(v) / len(v)) if v else None, "target": TARGETS[name]}
                         for name, v in outcomes.items()},
            "failures": failures}


def report(result: dict[str, Any], data: Path) -> str:
    lines = [f"edit explanations (workers.align, 512 px)  {time.strftime('%Y-%m-%d')}  {cpu_model()}",
             (f"data: {data}, {result['pairs']} edited copies"
              f"{' (single-op ' + ', '.join(result['ops']) + ')' if result.get('ops') else ''}, {result['aligned']} aligned; "
              f"{result['ms_per_pair_median']:.0f} ms/pair median, {result['ms_per_pair_mean']:.0f} mean "
              "(re-reading both files included)"), "",
             f"{'criterion':<26} {'n':>5} {'rate':>7} {'target':>7}  met",
             f"{'-' * 26} {'-' * 5} {'-' * 7} {'-' * 7}  ---"]
    for name, c in result["criteria"].items():
        rate = "-" if c["rate"] is None else f"{c['rate']:.3f}"
        met = "-" if c["rate"] is None else ("yes" if c["rate"] >= c["target"] else "NO")
        lines.append(f"{name:<26} {c['n']:>5} {rate:>7} {c['target']:>7.2f}  {met}")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=Path("bench/data/acc"))
    parser.add_argument("--limit", type=int, help="only the first N edited copies in stream order")
    parser.add_argument("--start", type=int, default=0, help="skip the first N (a long run in parts)")
    parser.add_argument("--ops", help="only the single-op copies of these ops (comma-separated, e.g. hflip,jpeg30)")
    parser.add_argument("--json", type=Path, help="also save the results (with every failure) here")
    args = parser.parse_args(argv)
    if not (args.data / "stream.txt").exists():
        dataset.main(["--out", str(args.data)])
    result = run(args.data, args.limit, set(args.ops.split(",")) if args.ops else None, args.start)
    print(report(result, args.data))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=2) + "\n")
    sys.stdout.flush()


if __name__ == "__main__":
    main()
