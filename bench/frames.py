"""Frames benchmark: pictures shown inside frames (bench/frametemplates.py), judged by `dupwatch scan`.

    python -m bench.frames --out bench/data/frames                     # build (skimage + Debian photos)
    python -m bench.frames --out bench/data/frames --split test --run  # build if missing, scan, report
    python -m bench.frames --out bench/data/frames --run --json bench/out/frames.json --per-template 10
    python -m bench.frames --out bench/data/frames --split all --cost  # CPU-ms per file of finding pictures

What it holds, per split (calibration, test; pictures split by photo, so no picture is in both):
- sources: pictures catalogued bare first (originals/).
- copies: a source shown in a frame (each frame takes each source in turn; a collage takes four
  sources): an edited copy of that source, to be matched to it with `edit.embedded` set.
- negatives: a fresh picture (never seen before) shown in a frame: different pictures in the same frame,
  which must not be matched to each other (nor to anything).
- bare: at the end of the stream, a bare re-save of the picture of each negative: it must find the
  framed file, whose embedded picture is indexed.
The two held-out frames (HELD_OUT) appear in the test split only: defaults are chosen on the calibration
half, which never sees them.

Truth is by picture: a file is a copy of an earlier file when they show a picture in common. Pictures are
disjoint tiles of real photos (bench/photos.py); tiles of one photo share a scene, not a pixel.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from bench import frametemplates, measure
from bench.accuracy import machine, parse_scan_output
from bench.dataset import DEFAULT_DEBIAN_CACHE, SPLITS, collect_photos
from bench.photos import Photo

HELD_OUT = ("browser", "collage")
"""Frames kept out of the calibration half."""
ASTRONOMY = ("skimage:hubble_deep_field", "skimage:moon")  # near-black skies: not pictures people frame
TILE_MIN_SIDE = 900
"""A photo at least this long on its short side gives 2 x 2 disjoint pictures, one at least half of it two."""
MAX_SIDE = 1024
SOURCES = 40
"""Pictures catalogued bare per split: the sources of the copies, and distractors for every other file."""


@dataclass
class Entry:
    """One file of the frames benchmark."""

    file: str
    role: str  # source | copy | negative | bare
    split: str
    pictures: list[str]  # the picture ids the file shows
    template: str | None = None
    boxes: list[list[float]] = field(default_factory=list)  # each picture's box in the file, normalised


def _pieces(photo: Photo) -> list[tuple[str, Image.Image]]:
    """Disjoint pictures cut from one photo."""
    image = photo.load().convert("RGB")
    w, h = image.size
    grid = (2, 2) if min(w, h) >= TILE_MIN_SIDE else (2, 1) if w >= 2 * 300 and w >= h else \
        (1, 2) if h >= 2 * 300 else (1, 1)
    out = []
    for j in range(grid[1]):
        for i in range(grid[0]):
            box = (i * w // grid[0], j * h // grid[1], (i + 1) * w // grid[0], (j + 1) * h // grid[1])
            piece = image.crop(box)
            piece.thumbnail((MAX_SIDE, MAX_SIDE), Image.Resampling.LANCZOS)
            out.append((f"{photo.id}#{j * grid[0] + i}", piece))
    return out


def build(out: Path, photos: list[Photo], per_template: int, seed: int = 0) -> list[Entry]:
    """Write the benchmark folder; return its entries in stream order (both splits, calibration first)."""
    if out.exists():
        shutil.rmtree(out)
    (out / "files").mkdir(parents=True)
    pool = [p for p in photos if p.id not in ASTRONOMY]
    order = np.random.default_rng(seed).permutation(len(pool))
    entries: list[Entry] = []
    for s, split in enumerate(SPLITS):
        mine = [pool[i] for i in order[s::2]]
        pictures = [piece for photo in mine for piece in _pieces(photo)]
        np.random.default_rng([seed, s]).shuffle(pictures)  # type: ignore[arg-type]
        entries += _split(out, split, pictures, per_template, np.random.default_rng([seed, s, 1]))
    with open(out / "manifest.jsonl", "w") as f:
        f.writelines(json.dumps(asdict(e)) + "\n" for e in entries)
    return entries


def _split(out: Path, split: str, pictures: list[tuple[str, Image.Image]], per_template: int,
           rng: np.random.Generator) -> list[Entry]:
    """One split's stream: sources, then framed copies and negatives shuffled, then the bare re-saves."""
    names = [n for n in frametemplates.BUILDERS if split == "test" or n not in HELD_OUT]
    slots = {n: len(frametemplates.frame(n).slots) for n in names}
    fresh_needed = sum(per_template * k for k in slots.values())
    n_sources = min(SOURCES, len(pictures) - fresh_needed)
    if n_sources < 4:
        raise ValueError(f"{len(pictures)} pictures in {split}: too few for {per_template} per template")
    sources, fresh = pictures[:n_sources], iter(pictures[n_sources:])
    prefix = f"files/{split[:3]}"
    head = []
    for k, (pid, picture) in enumerate(sources):
        path = f"{prefix}-s{k:03d}.jpg"
        picture.save(out / path, "JPEG", quality=92)
        head.append(Entry(path, "source", split, [pid]))
    framed: list[tuple[Entry, Image.Image]] = []
    turn = 0
    for name in names:
        frame = frametemplates.frame(name)
        boxes = [[round(b[0] / frame.image.width, 4), round(b[1] / frame.image.height, 4),
                  round(b[2] / frame.image.width, 4), round(b[3] / frame.image.height, 4)] for b in frame.slots]
        for _ in range(per_template):
            chosen = [sources[(turn + k) % len(sources)] for k in range(slots[name])]
            turn += slots[name]
            framed.append((Entry("", "copy", split, [p for p, _ in chosen], name, boxes),
                           frametemplates.place(name, [im for _, im in chosen])))
            negative = [next(fresh) for _ in range(slots[name])]
            framed.append((Entry("", "negative", split, [p for p, _ in negative], name, boxes),
                           frametemplates.place(name, [im for _, im in negative])))
    body = []
    for k, i in enumerate(rng.permutation(len(framed))):
        entry, image = framed[i]
        entry.file = f"{prefix}-f{k:03d}.png"
        image.save(out / entry.file, "PNG")
        body.append(entry)
    by_id = dict(pictures)
    tail = []
    for k, entry in enumerate(e for e in body if e.role == "negative"):
        pid = entry.pictures[0]
        path = f"{prefix}-b{k:03d}.jpg"
        by_id[pid].save(out / path, "JPEG", quality=85)
        tail.append(Entry(path, "bare", split, [pid], entry.template))
    return head + body + tail


def load(data: Path, split: str | None) -> list[Entry]:
    entries = [Entry(**json.loads(line)) for line in (data / "manifest.jsonl").read_text().splitlines() if line]
    return [e for e in entries if split in (None, e.split)]


# ---- scoring --------------------------------------------------------------------------------------

COPY_VERDICTS = ("exact-copy", "edited-copy")


def score(entries: list[Entry], records: list[dict[str, Any]]) -> dict[str, Any]:
    """Per template and role: how many files, how many got a copy verdict, how many of those were right
    (the match shows a picture the file shows), how many carried `embedded`."""
    pictures = {e.file: set(e.pictures) for e in entries}
    table: dict[tuple[str, str], Counter] = {}
    for entry, record in zip(entries, records, strict=True):
        if entry.role == "source":
            continue
        tally = table.setdefault((entry.template or "-", entry.role), Counter())
        tally["files"] += 1
        if record["verdict"] not in COPY_VERDICTS:
            continue
        tally["flagged"] += 1
        match = record.get("match")
        right = match in pictures and bool(pictures[match] & pictures[entry.file])
        tally["right"] += right
        edit = record.get("edit") or {}
        tally["embedded"] += right and edit.get("embedded") is not None
        tally["summary_inside"] += right and "inside" in str(edit.get("summary", ""))
    return {f"{t}/{r}": dict(c) for (t, r), c in sorted(table.items())}


def report(scored: dict[str, Any], head: str) -> str:
    """The table: negatives flagged (must be ~0), copies matched right with `embedded`, bare re-saves that
    found their framed file."""
    lines = [head, "",
             f"{'template':<10} {'role':<9} {'files':>5} {'flagged':>7} {'right':>5} {'embedded':>8}  what is wanted",
             "-" * 80]
    want = {"negative": "flagged -> 0", "copy": "right and embedded -> all", "bare": "right -> all"}
    for key, c in scored.items():
        template, role = key.split("/")
        held = " (held out)" if template in HELD_OUT else ""
        lines.append(f"{template:<10} {role:<9} {c.get('files', 0):>5} {c.get('flagged', 0):>7} "
                     f"{c.get('right', 0):>5} {c.get('embedded', 0):>8}  {want[role]}{held}")
    totals: Counter = Counter()
    for key, c in scored.items():
        totals.update({f"{key.split('/')[1]}_{k}": v for k, v in c.items()})
    neg, cop = totals["negative_files"], totals["copy_files"]
    lines += ["", (f"negatives flagged: {totals['negative_flagged']}/{neg}"
                  f" ({100 * totals['negative_flagged'] / max(1, neg):.1f} %);"
                  f" copies matched to a picture they show: {totals['copy_right']}/{cop}"
                  f" ({100 * totals['copy_right'] / max(1, cop):.1f} %),"
                  f" with embedded: {totals['copy_embedded']}/{cop} ({100 * totals['copy_embedded'] / max(1, cop):.1f} %);"
                  f" bare re-saves that found their framed file: {totals['bare_right']}/{totals['bare_files']}")]
    return "\n".join(lines)


def cost(data: Path, entries: list[Entry]) -> str:
    """CPU-ms per file of finding the pictures (workers.frames.find) on the plane the workers decode, and how
    many pictures each kind of file gets (each costs one more copy-descriptor inference)."""
    from workers import defaults, frames
    from workers.decode import decode_file

    planes = [(e.role, decode_file(str(data / e.file), size=defaults.DECODE_SIZE, max_pixels=defaults.MAX_PIXELS,
                                   max_bytes=defaults.MAX_FILE_BYTES).image) for e in entries]
    found: dict[str, list[int]] = {}
    started = time.process_time()
    for role, plane in planes:
        found.setdefault("framed" if role in ("copy", "negative") else "bare", []).append(len(frames.find(plane)))
    spent = (time.process_time() - started) * 1000 / max(1, len(planes))
    lines = [f"workers.frames.find: {spent:.2f} CPU-ms per file over {len(planes)} files (decode excluded)"]
    for kind, counts in sorted(found.items()):
        lines.append(f"  {kind:<7} {len(counts):>4} files, {sum(c > 0 for c in counts):>4} with pictures,"
                     f" {sum(counts) / max(1, len(counts)):.2f} pictures (copy-descriptor inferences) per file")
    return "\n".join(lines)


def run(data: Path, entries: list[Entry], command: str, flags: list[str]) -> list[dict[str, Any]]:
    """`dupwatch scan` over the entries in order, in a fresh state dir."""
    files = [e.file for e in entries]
    with tempfile.TemporaryDirectory(prefix="dupwatch-frames-") as tmp:
        listing = Path(tmp) / "files.txt"
        listing.write_text("".join(f"{(data / f).resolve()}\n" for f in files))
        done = measure.run([*command.split(), "scan", "--files-from", str(listing), "--state-dir",
                            str(Path(tmp) / "state"), *flags])
    if done.rc != 0:
        raise RuntimeError(f"dupwatch scan exit {done.rc}: {done.stderr_tail}")
    print(f"scan: {len(files)} files in {done.wall_s:.1f} s", file=sys.stderr)
    return parse_scan_output(done.stdout.splitlines(), data, files)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, required=True, help="the benchmark folder")
    parser.add_argument("--per-template", type=int, default=10, help="copies (and as many negatives) per frame")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--no-debian", action="store_true", help="scikit-image photos only")
    parser.add_argument("--run", action="store_true", help="scan the split and print the table")
    parser.add_argument("--split", choices=(*SPLITS, "all"), default="test")
    parser.add_argument("--dupwatch", default="dupwatch")
    parser.add_argument("--flags", default="", help="extra `dupwatch scan` flags")
    parser.add_argument("--json", type=Path)
    parser.add_argument("--cost", action="store_true", help="print the CPU cost of finding the pictures")
    args = parser.parse_args(argv)
    if not (args.out / "manifest.jsonl").exists():
        photos = collect_photos(True, None if args.no_debian else DEFAULT_DEBIAN_CACHE, [])
        entries = build(args.out, photos, args.per_template, args.seed)
        print(f"wrote {args.out}: {dict(Counter((e.split, e.role) for e in entries))}", file=sys.stderr)
    entries = load(args.out, None if args.split == "all" else args.split)
    if args.cost:
        print(cost(args.out, entries))
    if not args.run:
        return
    records = run(args.out, entries, args.dupwatch, args.flags.split())
    scored = score(entries, records)
    env = machine()
    head = (f"frames benchmark  {env['date']}  {env['cpu']}  {env['cpus_usable']} usable cores; split {args.split!r},"
            f" {len(entries)} files, flags {args.flags!r}")
    print(report(scored, head))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        wrong = [{"file": e.file, "role": e.role, "template": e.template, **r} for e, r in zip(entries, records)
                 if r["verdict"] in COPY_VERDICTS or e.role != "negative"]
        args.json.write_text(json.dumps({"machine": env, "split": args.split, "scored": scored,
                                         "records": wrong}, indent=1) + "\n")


if __name__ == "__main__":
    main()
