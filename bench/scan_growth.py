"""Does `dupwatch scan --hash-only` keep its pace as its own catalog grows? One whole scan of N distinct small JPEGs.

    python bench/scan_growth.py                         # 100,000 collages under /tmp/dupwatch-scan-growth, then deleted
    nice python bench/scan_growth.py --n 40000 --out bench/results/scan-growth-DATE.txt
    python bench/scan_growth.py --kind crops --n 20000 --keep   # crops of one photo each (see 1.)

Issue 10's criterion: the scan decides all N, and its last WINDOW verdicts come at >= 70 % of the rate of
its first WINDOW.

1. The files: N small JPEGs at bench/throughput.py's web sizes (a long side of 480-900 px at a web aspect,
   median about 650 x 530, quality 75-95), of the real photographs of bench/photos.py (scikit-image's and
   the curated Debian ones, P = 186), in one of two kinds:
   - `collage` (the default): each file is four tiles, each a random box (35-100 % of the side) of another
     photo, scaled to a quarter of the frame. Distinct: two files look alike to the hash rule only if all
     four quarters do, i.e. the same four photos in the same places (for N = 100,000 about 4 pairs are
     expected to draw them, of 5e9) and four coinciding boxes.
   - `crops`: each file one crop of one photo (file i from photo i mod P), the boxes of a photo drawn again
     while within TOLERANCE of an earlier box of it, of one of its pHash crop windows
     (workers.image.hashing.WINDOWS), or having one of its windows there: no two files are the same crop nor one
     a crop the rule anticipates of another. Not distinct enough at scale: with N/P crops a photo, many
     overlap and share a scene, the hash rule matches a growing share of them (0.7 % of the first 1,000
     verdicts, 3.3-3.7 % of the 6,001st to 8,000th) and geometric verification confirms most as edited copies,
     so the rate falls with the share of verified files, not with the catalog
     (bench/results/scan-growth-2026-11-28-crops-partial.txt).
   Verdicts that are not `new` are counted and printed.
2. The scan: `dupwatch scan --hash-only --files-from LIST` as a whole command in a fresh state dir, run and
   accounted by bench/measure.py (wall, CPU, peak RSS); every 2 s the scan's CPU seconds (from /proc) and
   the load average are sampled.
3. The rates: each verdict's `decided_at` from the scan's catalog, in id (= scan) order; per window of
   WINDOW verdicts, the verdicts over the seconds since the previous window's last verdict (the first
   window counts from the first verdict, so start-up is not in it), and the scan's CPU-ms a verdict over
   the same span: on shared cores the neighbours' load moves verdicts/s, and CPU time much less.
The files and the state dir live under --workdir (never the repository) and are deleted at the end unless
--keep.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import shlex
import shutil
import sqlite3
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Self

import numpy as np
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:  # `python bench/scan_growth.py` as well as `python -m bench.scan_growth`
    sys.path.insert(0, str(REPO))

from bench import measure
from bench.machine import cpu_model
from bench.photos import Photo
from bench.throughput import child_env, cover_box, load_photos, small_box, small_size
from workers.image.hashing import WINDOWS

WINDOW = 5_000
"""Verdicts per rate window (the criterion compares the first and the last)."""
TOLERANCE = 0.06
"""How far (as a share of the box's side) every edge of a new box must be from an earlier box's or its crop
windows' for the two to count as distinct: twice the scale, six times the position pHash tolerates."""
DEFAULT_WORKDIR = Path("/tmp/dupwatch-scan-growth")

KINDS = ("collage", "crops")
_PHOTOS: list[Photo] = []  # set before the pool forks: the generating processes inherit them
_IMAGES: list[Image.Image] = []  # the photos decoded (collages)


def _sub_boxes(boxes: np.ndarray) -> np.ndarray:
    """[k, W, 4]: each box's crop windows (the identity first), in the photo's coordinates."""
    win = np.asarray(WINDOWS, np.float64)
    x0, y0, x1, y1 = (boxes[:, None, i] for i in range(4))
    w, h = x1 - x0, y1 - y0
    return np.stack([x0 + win[:, 0] * w, y0 + win[:, 1] * h, x0 + win[:, 2] * w, y0 + win[:, 3] * h], axis=-1)


def too_close(box: np.ndarray, earlier: np.ndarray, tolerance: float = TOLERANCE) -> bool:
    """Whether `box` (x0, y0, x1, y1) is, or is a crop window of, or has a crop window that is, one of the
    `earlier` boxes [k, 4] or their windows, to within `tolerance` of the smaller box's side on every edge."""
    if not len(earlier):
        return False
    side = np.array([box[2] - box[0], box[3] - box[1]] * 2)
    theirs = _sub_boxes(earlier)  # [k, W, 4]
    if (np.abs(theirs - box).max(axis=-1) <= tolerance * side[None, None, :].min()).any():
        return True
    mine = _sub_boxes(box[None, :])[0]  # [W, 4]
    sides = np.stack([earlier[:, 2] - earlier[:, 0], earlier[:, 3] - earlier[:, 1]], axis=1).min(axis=1)
    return bool((np.abs(mine[None, :, :] - earlier[:, None, :]).max(axis=-1) <= tolerance * sides[:, None]).any())


def _cut_photo(job: tuple[int, int, list[str], int]) -> tuple[int, int]:
    """Cut photo j's files (indices j, j+P, ...): returns (files written, boxes drawn again)."""
    j, seed, paths, period = job
    image = _PHOTOS[j].load()
    rng = np.random.default_rng([seed, 3, j])
    boxes = np.zeros((0, 4), np.float64)
    redrawn = 0
    for path in paths:
        for _ in range(1000):
            box, size = small_box(image.width, image.height, rng)
            candidate = np.array(box, np.float64)
            if not too_close(candidate, boxes):
                break
            redrawn += 1
        else:
            raise RuntimeError(f"photo {_PHOTOS[j].id}: no distinct crop left after {len(boxes)} ({period} photos)")
        boxes = np.vstack([boxes, candidate])
        image.crop(box).resize(size, Image.Resampling.BILINEAR).save(path, quality=int(rng.integers(75, 96)))
    return len(paths), redrawn


def _collages(job: tuple[int, list[str]]) -> int:
    """Write the collages of files lo, lo+1, ... (their paths given): returns how many."""
    seed, paths = job[0], job[1]
    for path in paths:
        i = int(Path(path).stem.split("_")[1])
        rng = np.random.default_rng([seed, 4, i])
        w, h = small_size(rng)
        canvas = Image.new("RGB", (w, h))
        xs, ys = (0, w // 2, w), (0, h // 2, h)
        for k, j in enumerate(rng.choice(len(_IMAGES), 4, replace=False)):
            x0, x1, y0, y1 = xs[k % 2], xs[k % 2 + 1], ys[k // 2], ys[k // 2 + 1]
            image = _IMAGES[j]
            box = cover_box(image.width, image.height, x1 - x0, y1 - y0, rng)
            canvas.paste(image.resize((x1 - x0, y1 - y0), Image.Resampling.BILINEAR, box=box, reducing_gap=2.0),
                         (x0, y0))
        canvas.save(path, quality=int(rng.integers(75, 96)))
    return len(paths)


def build_files(folder: Path, n: int, seed: int, jobs: int, debian: bool, kind: str) -> tuple[list[Path], str]:
    """N small JPEGs of `kind` under `folder`: (paths in scan order, a line saying how they were made)."""
    global _PHOTOS, _IMAGES
    _PHOTOS = load_photos(debian)
    period = len(_PHOTOS)
    files = [folder / f"{i // 1000:03d}" / f"img_{i:06d}.jpg" for i in range(n)]
    for d in {f.parent for f in files}:
        d.mkdir(parents=True, exist_ok=True)
    done = redrawn = 0
    if kind == "crops":
        work: list = [(j, seed, [str(f) for f in files[j::period]], period) for j in range(min(period, n))]
        task: Callable = _cut_photo
    else:
        _IMAGES = [photo.load() for photo in _PHOTOS]
        work = [(seed, [str(f) for f in files[lo:lo + 500]]) for lo in range(0, n, 500)]
        task = _collages
    with multiprocessing.get_context("fork").Pool(jobs) as pool:
        for got in pool.imap_unordered(task, work):
            written, again = got if kind == "crops" else (got, 0)
            done, redrawn = done + written, redrawn + again
            print(f"\rbuilding files: {done:,}/{n:,}", end="", file=sys.stderr, flush=True)
    print(file=sys.stderr)
    if kind == "crops":
        return files, (f"crops of {period} photos (about {n // period} each; {redrawn:,} boxes drawn again as too "
                       "close to an earlier one)")
    return files, f"collages of 4 tiles, each from another of {period} photos"


class Sampler:
    """Every `every` seconds while the scan runs (a background thread): the wall clock, the CPU seconds of this
    process's descendants (the scan, under /usr/bin/time) and the 1-minute load average. The CPU time gives
    each window its CPU-ms a verdict, which a busy neighbour on the shared cores moves far less than verdicts/s."""

    def __init__(self, every: float = 2.0):
        self.samples: list[tuple[float, float, float]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(every,), daemon=True)

    def _run(self, every: float) -> None:
        while not self._stop.wait(every):
            self.samples.append((time.time(), descendants_cpu(os.getpid()), os.getloadavg()[0]))

    def __enter__(self) -> Self:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def descendants_cpu(pid: int) -> float:
    """User + system CPU seconds of the live descendants of `pid` (every thread of each), from /proc."""
    tick = os.sysconf("SC_CLK_TCK")
    total, todo = 0.0, [pid]
    while todo:
        parent = todo.pop()
        for children in Path(f"/proc/{parent}/task").glob("*/children"):
            try:
                kids = [int(c) for c in children.read_text().split()]
            except OSError:
                continue
            for kid in kids:
                try:
                    fields = Path(f"/proc/{kid}/stat").read_text().rsplit(")", 1)[1].split()
                except OSError:
                    continue
                if fields[0] != "Z":  # a zombie (the files' generating processes, not yet reaped) is not the scan
                    total += (int(fields[11]) + int(fields[12])) / tick
                    todo.append(kid)
    return total


def window_rates(decided_at: np.ndarray, samples: list[tuple[float, float, float]],
                 window: int = WINDOW) -> list[tuple[int, int, float, float, float | None, float | None]]:
    """(first, last verdict number, seconds, verdicts/s, CPU-ms a verdict, mean load) per window of `window`
    verdicts in scan order; each window's time runs from the previous window's last verdict (the first
    window's from the first verdict). CPU and load come from the `samples` (time, CPU s, load), interpolated
    at the window's ends; None where the samples do not span the window."""
    at = np.array([s[0] for s in samples]) if samples else np.zeros(0)
    cpu = np.array([s[1] for s in samples]) if samples else np.zeros(0)
    out = []
    for lo in range(0, len(decided_at), window):
        hi = min(lo + window, len(decided_at))
        start, end = float(decided_at[lo - 1] if lo else decided_at[0]), float(decided_at[hi - 1])
        count = hi - lo if lo else hi - lo - 1
        rate = count / (end - start) if end > start else float("inf")
        ms = load = None
        if len(at) >= 2 and at[0] <= start and end <= at[-1] and count:
            ms = float(np.interp(end, at, cpu) - np.interp(start, at, cpu)) / count * 1e3
            inside = [s[2] for s in samples if start <= s[0] <= end]
            load = float(np.mean(inside)) if inside else None
        out.append((lo + 1, hi, end - start, rate, ms, load))
    return out


def uptime() -> str:
    return subprocess.run(["uptime"], capture_output=True, text=True, check=False).stdout.strip()


def report(records: list[dict], decided_at: np.ndarray, n: int, done: measure.Measured, launched: float,
           samples: list[tuple[float, float, float]]) -> list[str]:
    """The verdict counts, the load, the table of window rates, the whole scan and the criterion."""
    verdicts = Counter(r["verdict"] for r in records)
    rates = window_rates(decided_at, samples)
    first, last = rates[0][3], rates[-1][3]
    load = [s[2] for s in samples]
    counts = ", ".join(f"{k} {v:,}" for k, v in verdicts.most_common())
    lines = [
        (f"# scan: {len(records):,} JSON lines for {n:,} files, {len(decided_at):,} decided rows; verdicts: {counts}; "
        f"not `new`: {len(records) - verdicts['new']:,}"),
        (f"# load average during the scan (1 min, every 2 s): min {min(load, default=0):.1f}, median "
        f"{float(np.median(load or [0])):.1f}, max {max(load, default=0):.1f}"),
        "",
        "| verdicts | seconds | verdicts/s | CPU-ms a verdict | load |",
        "|---|---|---|---|---|",
    ]
    lines += [f"| {lo:,}-{hi:,} | {s:.1f} | {r:.1f} | {_num(ms)} | {_num(ld)} |" for lo, hi, s, r, ms, ld in rates]
    lines += [
        "",
        (f"whole scan: {done.wall_s:.0f} s wall ({n / done.wall_s:.1f} files/s), {done.cpu_s:.0f} s CPU "
        f"({done.cpu_s / n * 1e3:.1f} ms a file), peak RSS {done.max_rss_mib:,.0f} MiB; first verdict "
        f"{decided_at[0] - launched:.1f} s after the launch"),
        (f"first {rates[0][1]:,}: {first:.1f} verdicts/s; last {rates[-1][1] - rates[-1][0] + 1:,}: {last:.1f} "
        f"verdicts/s; last/first = {last / first:.2f} (criterion >= 0.70: {'met' if last / first >= 0.7 else 'NOT met'})"),
    ]
    if rates[0][4] and rates[-1][4]:
        lines.append(f"CPU-ms a verdict: first window {rates[0][4]:.1f}, last {rates[-1][4]:.1f} "
                     f"(first/last = {rates[0][4] / rates[-1][4]:.2f}, the same criterion without the neighbours' load)")
    if len(records) != n or len(decided_at) != n:
        lines.append(f"NOT ALL DECIDED: {len(records):,} lines, {len(decided_at):,} decided rows for {n:,} files")
    return lines


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=100_000, help="files to make and scan")
    ap.add_argument("--workdir", type=Path, default=DEFAULT_WORKDIR, help="files and state dir (deleted after)")
    ap.add_argument("--kind", choices=KINDS, default="collage", help="collages of four photos' tiles (distinct), "
                    "or crops of one photo each (many share a scene with another: see the module docstring)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--jobs", type=int, default=os.cpu_count() or 1, help="processes cutting the files")
    ap.add_argument("--no-debian", action="store_true", help="scikit-image's photos only (14)")
    ap.add_argument("--keep", action="store_true", help="leave the files and the scan's state dir in --workdir")
    ap.add_argument("--dupwatch", default=f"{shlex.quote(sys.executable)} -c 'from daemon.cli.main import main; main()'",
                    help="command that runs dupwatch (default: this checkout)")
    ap.add_argument("--out", type=Path, help="also write the report here")
    args = ap.parse_args(argv)
    workdir = args.workdir.resolve()
    if workdir == REPO or REPO in workdir.parents:
        ap.error("--workdir must be outside the repository")
    if workdir.exists():
        shutil.rmtree(workdir)
    lines = [(f"# bench/scan_growth.py, {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, {cpu_model()}, "
             f"{os.cpu_count()} cores; git {_git_head()}"),
             f"# $ python bench/scan_growth.py {' '.join(argv if argv is not None else sys.argv[1:])}"]
    try:
        started = time.monotonic()
        files, made = build_files(workdir / "files", args.n, args.seed, args.jobs, not args.no_debian, args.kind)
        size = np.mean([f.stat().st_size for f in files])
        lines += [(f"# files: {len(files):,} JPEGs, {made}, {size / 1e3:.0f} KB on average, "
                  f"made in {time.monotonic() - started:.0f} s"),
                  f"# uptime before the scan: {uptime()}"]
        print("\n".join(lines), flush=True)
        listing = workdir / "files.txt"
        listing.write_text("".join(f"{f}\n" for f in files))
        state = workdir / "state"
        launched = time.time()
        with Sampler() as sampler:
            sampler.samples.append((launched, 0.0, os.getloadavg()[0]))  # the scan has used no CPU at its launch
            done = measure.run(shlex.split(args.dupwatch) + ["scan", "--hash-only", "--files-from", str(listing)],
                               env=child_env(DUPWATCH_STATE_DIR=str(state)))
        # the scan's last seconds, which no sample may have seen: its whole CPU time (wait4) at its exit
        sampler.samples.append((launched + done.wall_s, done.cpu_s, os.getloadavg()[0]))
        if done.rc != 0:
            sys.exit(f"scan failed (exit {done.rc}):\n{done.stderr_tail}")
        with sqlite3.connect(f"file:{state / 'catalog.sqlite3'}?mode=ro", uri=True) as db:
            rows = db.execute("SELECT decided_at FROM files WHERE state = 'decided' ORDER BY id").fetchall()
        tail = [f"# uptime after the scan: {uptime()}",
                *report([json.loads(line) for line in done.stdout.splitlines()],
                        np.array([r[0] for r in rows], np.float64), len(files), done, launched, sampler.samples)]
    finally:
        if not args.keep and workdir.exists():
            shutil.rmtree(workdir)
    print("\n".join(tail))
    if args.out:
        args.out.write_text("\n".join(lines + tail) + "\n")


def _num(x: float | None) -> str:
    return "-" if x is None else f"{x:.1f}"


def _git_head() -> str:
    done = subprocess.run(["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                          check=False)
    return done.stdout.strip() or "unknown"


if __name__ == "__main__":
    main()
