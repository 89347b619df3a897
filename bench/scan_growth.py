"""Does `dupwatch scan --hash-only` keep its pace as its own catalog grows? One whole scan of N distinct small JPEGs.

    python bench/scan_growth.py                         # 100,000 files under /tmp/dupwatch-scan-growth, then deleted
    nice python bench/scan_growth.py --n 100000 --out bench/results/scan-growth-DATE.txt

Issue 10's criterion: the scan decides all N, and its last WINDOW verdicts come at >= 70 % of the rate of
its first WINDOW.

1. The files: N small JPEGs (bench/throughput.py's small folder: a random crop of 35-100 % of the side at a
   web aspect, resized to a long side of 480-900 px, median about 650 x 530, quality 75-95) cut from the real
   photographs of bench/photos.py (scikit-image's and the curated Debian ones), file i from photo i mod P, so
   the scan's order interleaves the photos. Distinct: each photo's crop boxes are drawn in turn and a box is
   drawn again while it lies within TOLERANCE of a box already cut from that photo, or of one of the pHash
   crop windows (workers.hashing.WINDOWS) of one, or has one of its windows within TOLERANCE of one: those
   are the geometries the hash rule matches (it tolerates about 0.03 of the side in scale and 0.01 in
   position), so no two files are the same crop, nor one a crop the rule anticipates of another. Crops of
   one photo may still share part of a scene (most photos give N/P of them), and a plain area (sky, a wall)
   can look alike in two crops: the verdicts that are not `new` are counted and printed, not hidden.
2. The scan: `dupwatch scan --hash-only --files-from LIST` as a whole command in a fresh state dir, run and
   accounted by bench/measure.py (wall, CPU, peak RSS), with the load average sampled every few seconds.
3. The rates: each verdict's `decided_at` from the scan's catalog, in id (= scan) order; per window of
   WINDOW verdicts, the verdicts over the seconds since the previous window's last verdict (the first
   window counts from the first verdict, so start-up is not in it).
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
from pathlib import Path
from typing import Self

import numpy as np

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:  # `python bench/scan_growth.py` as well as `python -m bench.scan_growth`
    sys.path.insert(0, str(REPO))

from bench import measure
from bench.machine import cpu_model
from bench.photos import Photo
from bench.throughput import child_env, load_photos, small_box
from workers.hashing import WINDOWS

WINDOW = 5_000
"""Verdicts per rate window (the criterion compares the first and the last)."""
TOLERANCE = 0.06
"""How far (as a share of the box's side) every edge of a new box must be from an earlier box's or its crop
windows' for the two to count as distinct: twice the scale, six times the position pHash tolerates."""
DEFAULT_WORKDIR = Path("/tmp/dupwatch-scan-growth")

_PHOTOS: list[Photo] = []  # set before the pool forks: the generating processes inherit it


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
    from PIL import Image

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


def build_files(folder: Path, n: int, seed: int, jobs: int, debian: bool) -> tuple[list[Path], int, int]:
    """N distinct small JPEGs under `folder` (file i from photo i mod P): (paths in scan order, P, redraws)."""
    global _PHOTOS
    _PHOTOS = load_photos(debian)
    period = len(_PHOTOS)
    files = [folder / f"{i // 1000:03d}" / f"img_{i:06d}.jpg" for i in range(n)]
    for d in {f.parent for f in files}:
        d.mkdir(parents=True, exist_ok=True)
    work = [(j, seed, [str(f) for f in files[j::period]], period) for j in range(min(period, n))]
    done = redrawn = 0
    with multiprocessing.get_context("fork").Pool(jobs) as pool:
        for written, again in pool.imap_unordered(_cut_photo, work):
            done, redrawn = done + written, redrawn + again
            print(f"\rbuilding files: {done:,}/{n:,}", end="", file=sys.stderr, flush=True)
    print(file=sys.stderr)
    return files, period, redrawn


class LoadSampler:
    """The 1-minute load average every `every` seconds while the scan runs (a background thread)."""

    def __init__(self, every: float = 5.0):
        self.samples: list[float] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(every,), daemon=True)

    def _run(self, every: float) -> None:
        while not self._stop.wait(every):
            self.samples.append(os.getloadavg()[0])

    def __enter__(self) -> Self:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def window_rates(decided_at: np.ndarray, window: int = WINDOW) -> list[tuple[int, int, float, float]]:
    """(first, last verdict number, seconds, verdicts/s) per window of `window` verdicts in scan order; each
    window's time runs from the previous window's last verdict (the first window's from the first verdict)."""
    out = []
    for lo in range(0, len(decided_at), window):
        hi = min(lo + window, len(decided_at))
        start = decided_at[lo - 1] if lo else decided_at[0]
        count = hi - lo if lo else hi - lo - 1
        seconds = float(decided_at[hi - 1] - start)
        out.append((lo + 1, hi, seconds, count / seconds if seconds > 0 else float("inf")))
    return out


def uptime() -> str:
    return subprocess.run(["uptime"], capture_output=True, text=True, check=False).stdout.strip()


def report(records: list[dict], decided_at: np.ndarray, n: int, done: measure.Measured, launched: float,
           load: list[float]) -> list[str]:
    """The verdict counts, the load, the table of window rates, the whole scan and the criterion."""
    verdicts = Counter(r["verdict"] for r in records)
    rates = window_rates(decided_at)
    first, last = rates[0][3], rates[-1][3]
    counts = ", ".join(f"{k} {v:,}" for k, v in verdicts.most_common())
    lines = [
        (f"# scan: {len(records):,} JSON lines for {n:,} files, {len(decided_at):,} decided rows; verdicts: {counts}; "
        f"not `new`: {len(records) - verdicts['new']:,}"),
        (f"# load average during the scan (1 min, every 5 s): min {min(load, default=0):.1f}, median "
        f"{float(np.median(load or [0])):.1f}, max {max(load, default=0):.1f}"),
        "",
        "| verdicts | seconds | verdicts/s |",
        "|---|---|---|",
    ]
    lines += [f"| {lo:,}-{hi:,} | {s:.1f} | {r:.1f} |" for lo, hi, s, r in rates]
    lines += [
        "",
        (f"whole scan: {done.wall_s:.0f} s wall ({n / done.wall_s:.1f} files/s), {done.cpu_s:.0f} s CPU "
        f"({done.cpu_s / n * 1e3:.1f} ms a file), peak RSS {done.max_rss_mib:,.0f} MiB; first verdict "
        f"{decided_at[0] - launched:.1f} s after the launch"),
        (f"first {rates[0][1]:,}: {first:.1f} verdicts/s; last {rates[-1][1] - rates[-1][0] + 1:,}: {last:.1f} "
        f"verdicts/s; last/first = {last / first:.2f} (criterion >= 0.70: {'met' if last / first >= 0.7 else 'NOT met'})"),
    ]
    if len(records) != n or len(decided_at) != n:
        lines.append(f"NOT ALL DECIDED: {len(records):,} lines, {len(decided_at):,} decided rows for {n:,} files")
    return lines


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=100_000, help="files to make and scan")
    ap.add_argument("--workdir", type=Path, default=DEFAULT_WORKDIR, help="files and state dir (deleted after)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--jobs", type=int, default=os.cpu_count() or 1, help="processes cutting the files")
    ap.add_argument("--no-debian", action="store_true", help="scikit-image's photos only (14)")
    ap.add_argument("--keep", action="store_true", help="leave the files and the scan's state dir in --workdir")
    ap.add_argument("--dupwatch", default=f"{shlex.quote(sys.executable)} -c 'from daemon.cli import main; main()'",
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
        files, period, redrawn = build_files(workdir / "files", args.n, args.seed, args.jobs, not args.no_debian)
        size = np.mean([f.stat().st_size for f in files])
        lines += [(f"# files: {len(files):,} JPEGs from {period} photos (about {len(files) // period} crops each; "
                  f"{redrawn:,} boxes drawn again as too close to an earlier one), {size / 1e3:.0f} KB on average, "
                  f"made in {time.monotonic() - started:.0f} s"),
                  f"# uptime before the scan: {uptime()}"]
        print("\n".join(lines), flush=True)
        listing = workdir / "files.txt"
        listing.write_text("".join(f"{f}\n" for f in files))
        state = workdir / "state"
        launched = time.time()
        with LoadSampler() as load:
            done = measure.run(shlex.split(args.dupwatch) + ["scan", "--hash-only", "--files-from", str(listing)],
                               env=child_env(DUPWATCH_STATE_DIR=str(state)))
        if done.rc != 0:
            sys.exit(f"scan failed (exit {done.rc}):\n{done.stderr_tail}")
        with sqlite3.connect(f"file:{state / 'catalog.sqlite3'}?mode=ro", uri=True) as db:
            rows = db.execute("SELECT decided_at FROM files WHERE state = 'decided' ORDER BY id").fetchall()
        tail = [f"# uptime after the scan: {uptime()}",
                *report([json.loads(line) for line in done.stdout.splitlines()],
                        np.array([r[0] for r in rows], np.float64), len(files), done, launched, load.samples)]
    finally:
        if not args.keep and workdir.exists():
            shutil.rmtree(workdir)
    print("\n".join(tail))
    if args.out:
        args.out.write_text("\n".join(lines + tail) + "\n")


def _git_head() -> str:
    done = subprocess.run(["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                          check=False)
    return done.stdout.strip() or "unknown"


if __name__ == "__main__":
    main()
