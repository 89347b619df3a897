"""CPU of the daemon process per verdict in `dupwatch run`, on a copy-heavy stream, against its workers' CPU.

    python -m bench.daemon_cpu --n 300                    # defaults (SSCD, CLIP), 30 photos x 10 frames
    python -m bench.daemon_cpu --n 300 --flags=--hash-only
    python -m bench.daemon_cpu --n 300 --repo /tmp/main-export   # the same for another checkout (a before)

`dupwatch run` (private Redis, daemon, worker processes) watches an empty root; once its workers are ready a
copy-heavy folder is copied in (bench.throughput's small frames, random crops and resizes, `--per-photo` of each
photo, interleaved so that each photo's first frame comes first: 1 - 1/per-photo of the files are copies), and the command waits until every file has its verdict in the catalog. The `run` process's own
CPU (user + sys, psutil) and its children's (workers and Redis), each counted from the first copy to the last
verdict, are divided by the verdicts: the daemon's share is what more workers, hosts or a GPU cannot shrink.
"""

from __future__ import annotations

import argparse
import shlex
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from bench.accuracy import machine
from bench.throughput import DEFAULT_WORK, child_env, load_photos, small_frame


def copy_heavy(folder: Path, n: int, per_photo: int, seed: int = 0) -> list[Path]:
    """`n` small JPEGs from ceil(n / per_photo) photos, file i from photo i mod that (built once, reused)."""
    import numpy as np

    photos = load_photos(debian=True)[: -(-n // per_photo)]
    files = [folder / f"heavy-{n}-{per_photo}-{seed}" / f"img_{i:05d}.jpg" for i in range(n)]
    if all(f.exists() for f in files):
        return files
    files[0].parent.mkdir(parents=True, exist_ok=True)
    for j, photo in enumerate(photos):
        image = photo.load()
        for i in range(j, n, len(photos)):
            rng = np.random.default_rng([seed, 2, i])
            small_frame(image, rng).save(files[i], quality=int(rng.integers(75, 96)))
    return files


def cpu_s(proc: psutil.Process) -> float:
    t = proc.cpu_times()
    return t.user + t.system


def tree_cpu(run: psutil.Process) -> tuple[float, dict[int, float]]:
    """(the run process's CPU-s, {child pid: CPU-s})."""
    children: dict[int, float] = {}
    for child in run.children(recursive=True):
        try:
            children[child.pid] = cpu_s(child)
        except psutil.Error:
            continue
    return cpu_s(run), children


def decided(catalog: Path) -> dict[str, int]:
    try:
        with sqlite3.connect(f"file:{catalog}?mode=ro", uri=True, timeout=10) as db:
            return dict(db.execute("SELECT coalesce(verdict, state), count(*) FROM files GROUP BY 1").fetchall())
    except sqlite3.Error:
        return {}


def measure(files: list[Path], flags: list[str], workers: int, timeout_s: float,
            repo: Path = REPO) -> dict[str, float | int | str]:
    with tempfile.TemporaryDirectory(prefix="dupwatch-daemon-cpu-") as tmp:
        root, state = Path(tmp) / "in", Path(tmp) / "state"
        root.mkdir()
        env = child_env(DUPWATCH_STATE_DIR=str(state), DUPWATCH_API__ENABLED="false",
                        DUPWATCH_WORKERS=str(workers), PYTHONPATH=str(repo))
        with open(Path(tmp) / "run.log", "wb") as log:
            proc = subprocess.Popen([sys.executable, "-c", "from daemon.cli.main import main; main()", "run", *flags,
                                     str(root)], env=env, stdout=subprocess.DEVNULL, stderr=log, cwd=repo)
            try:
                counts, done, wall, own, kids = _stream(proc, Path(tmp), files, root, state, workers, timeout_s)
            finally:
                proc.terminate()
                proc.wait(60)
    copies = counts.get("edited-copy", 0) + counts.get("exact-copy", 0)
    return {"checkout": repo.name, "flags": " ".join(flags) or "(defaults)", "files": len(files), "verdicts": done, "copies": copies,
            "wall_s": round(wall, 1), "run_cpu_s": round(own, 2), "workers_cpu_s": round(kids, 2),
            "run_ms_per_verdict": round(1000 * own / max(1, done), 1),
            "workers_ms_per_verdict": round(1000 * kids / max(1, done), 1)}


def _stream(proc: subprocess.Popen, tmp: Path, files: list[Path], root: Path, state: Path, workers: int,
            timeout_s: float) -> tuple[dict[str, int], int, float, float, float]:
    """Wait for the workers, copy the files in, wait for their verdicts: (verdict counts, verdicts, wall s,
    the run process's CPU-s, its children's CPU-s)."""
    run = psutil.Process(proc.pid)
    deadline = time.monotonic() + 600
    while (tmp / "run.log").read_text(errors="replace").count(" ready: model") < workers:
        if proc.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError((tmp / "run.log").read_text(errors="replace")[-3000:])
        time.sleep(0.5)
    time.sleep(2.0)  # start-up's last work (catch-up scan, kernels) out of the count
    own0, kids0 = tree_cpu(run)
    started = time.monotonic()
    for i, f in enumerate(files):
        shutil.copyfile(f, root / f"f{i:05d}.jpg")
    deadline = started + timeout_s
    while True:
        counts = decided(state / "catalog.sqlite3")
        done = sum(v for k, v in counts.items() if k not in ("pending", "featured"))
        if done >= len(files) or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    wall = time.monotonic() - started
    own1, kids1 = tree_cpu(run)
    return counts, done, wall, own1 - own0, sum(v - kids0.get(pid, 0.0) for pid, v in kids1.items())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=400, help="files copied in")
    ap.add_argument("--flags", default="", help="extra `dupwatch run` flags, e.g. --hash-only")
    ap.add_argument("--per-photo", type=int, default=10, help="frames cut from each photo")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--timeout", type=float, default=1200.0)
    ap.add_argument("--work", type=Path, default=DEFAULT_WORK)
    ap.add_argument("--repo", type=Path, default=REPO, help="the checkout whose `dupwatch run` is measured "
                    "(e.g. an export of main, for the before)")
    ap.add_argument("--out", type=Path)
    args = ap.parse_args()
    files = copy_heavy(args.work, args.n, args.per_photo)
    row = measure(files, shlex.split(args.flags), args.workers, args.timeout, args.repo.resolve())
    head = list(row)
    lines = [f"# daemon CPU per verdict, `dupwatch run`, {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}",
             f"# machine: {machine()['cpu']}, {machine()['cpus_usable']} usable cores; load average at end: {' '.join(f'{x:.2f}' for x in psutil.getloadavg())}",
             "| " + " | ".join(head) + " |", "|" + "---|" * len(head), "| " + " | ".join(str(row[k]) for k in head) + " |"]
    text = "\n".join(lines) + "\n"
    print(text)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        with args.out.open("a") as f:
            f.write(text + "\n")


if __name__ == "__main__":
    main()
