"""A copy-heavy stream through a fleet of one, then two, worker hosts: the speed-up a second host gives.

    sudo .venv/bin/python -m bench.fleet --originals 40 --copies 4 --rounds 2

The hosts are the fleet test's (tests/test_fleet.py): network namespaces on this machine, the daemon host with
Redis on TLS, the shipped ACL and firewall; hash-only workers with one decode thread each, so that one worker
host stands for one core's worth of work. On a 2-core machine that is what can be measured: the ratio, not a
GPU host's rate. Each round drops the whole stream (originals, then their copies: re-encoded, resized,
cropped) into an empty root with a fresh daemon, and times the first file landing to the last verdict.
Rounds interleave one host and two hosts, so a noisy neighbour hits both alike.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

from bench.machine import cpu_model
from tests.conftest import Service, base_env, catalog_rows, wait_for
from tests.test_fleet import FLEET, Hosts, daemon_host, env_file, rewritten
from workers import queue as q


def stream(folder: Path, originals: int, copies: int) -> list[Path]:
    """`originals` photos (scikit-image's, cut and tinted apart) and `copies` edited copies of each."""
    import skimage.data

    rng = np.random.default_rng(0)
    bases = [Image.fromarray(getattr(skimage.data, n)()).convert("RGB")
             for n in ("astronaut", "chelsea", "coffee", "rocket")]
    files = []
    for i in range(originals):
        base = bases[i % len(bases)]
        w, h = base.size
        x, y = int(rng.integers(0, w // 4)), int(rng.integers(0, h // 4))
        tint = Image.new("RGB", (w, h), tuple(int(c) for c in rng.integers(0, 256, 3)))
        photo = Image.blend(base, tint, 0.25).crop((x, y, x + 3 * w // 4, y + 3 * h // 4)).resize((1024, 768))
        files.append(folder / f"o{i:04d}.jpg")
        photo.save(files[-1], quality=90)
        for j in range(copies):
            scale = 0.5 + 0.5 * rng.random()
            copy = photo.resize((int(1024 * scale), int(768 * scale)))
            if j % 2:
                copy = copy.crop((0, 0, int(copy.width * 0.9), int(copy.height * 0.9)))
            files.append(folder / f"o{i:04d}-c{j}.jpg")
            copy.save(files[-1], quality=int(rng.integers(70, 95)))
    return files


def run_round(hosts: Hosts, work: Path, paths: dict[str, Path], files: list[Path], workers: int) -> float:
    """Seconds from the first file dropped to the last verdict, with `workers` worker hosts."""
    root = paths["/srv/images"]
    shutil.rmtree(root)
    root.mkdir()
    state = work / f"state-{time.monotonic_ns()}"
    q.connect(f"unix://inspector:inspector-secret@{paths['/run/dupwatch'] / 'redis.sock'}").flushall()
    common = base_env(state, DUPWATCH_HASH_ONLY="true", DUPWATCH_WATCH__ROOTS=f'["{root}"]',
                      DUPWATCH_DECODE__THREADS="1", DUPWATCH_LOG_LEVEL="WARNING")
    daemon = Service(["daemon"], {**common, **env_file(rewritten((FLEET / "daemon.env").read_text(), paths))},
                     work / "daemon.log", prefix=hosts.exec("daemon"))
    worker_env = {**common, **env_file(rewritten((FLEET / "worker.env").read_text(), paths))}
    started = [Service(["worker", "--name", f"bench-{role}"], worker_env, work / f"{role}.log",
                       prefix=hosts.exec(role)) for role in ("a", "b")[:workers]]
    try:
        wait_for(lambda: daemon.proc.poll() is None and (state / "catalog.sqlite3").exists(), 120, what="daemon")
        time.sleep(8)  # workers loaded and waiting (hash-only: a few seconds)
        t0 = time.monotonic()
        for path in files:
            shutil.copyfile(path, root / path.name)
        wait_for(lambda: sum(r["state"] == "decided" for r in catalog_rows(state)) == len(files), 900, 0.1,
                 what="every verdict")
        return time.monotonic() - t0
    finally:
        for service in (*started, daemon):
            service.stop(signal.SIGTERM)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--originals", type=int, default=40)
    parser.add_argument("--copies", type=int, default=4, help="Edited copies of each original.")
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    if os.geteuid() != 0:
        raise SystemExit("bench.fleet makes network namespaces: run it as root")
    work = Path(tempfile.mkdtemp(prefix="dupwatch-bench-fleet-"))
    names = ("/etc/dupwatch", "/run/dupwatch", "/var/lib/dupwatch-redis", "/srv/images")
    paths = {real: work / real.strip("/").replace("/", "-") for real in names}
    for folder in (*paths.values(), work / "stream"):
        folder.mkdir()
    files = stream(work / "stream", args.originals, args.copies)
    hosts = Hosts()
    redis_proc = None
    times: dict[int, list[float]] = {1: [], 2: []}
    try:
        hosts.build()
        redis_proc = daemon_host(hosts, work, paths)
        for _ in range(args.rounds):
            for workers in (1, 2):
                times[workers].append(run_round(hosts, work, paths, files, workers))
    finally:
        if redis_proc is not None:
            redis_proc.kill()
        hosts.remove()
        shutil.rmtree(work, ignore_errors=True)
    one, two = statistics.median(times[1]), statistics.median(times[2])
    load = os.getloadavg()
    print(f"# bench.fleet {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}: {cpu_model()}, "
          f"{os.cpu_count()} cores, load before {load[0]:.1f}; {len(files)} files ({args.originals} originals x "
          f"{args.copies} copies), hash-only, 1 decode thread per worker, {args.rounds} rounds (median)")
    print("| worker hosts | seconds (each round) | files/s | speed-up |")
    print("|---|---|---|---|")
    for workers, median in ((1, one), (2, two)):
        rounds = ", ".join(f"{t:.1f}" for t in times[workers])
        print(f"| {workers} | {median:.1f} ({rounds}) | {len(files) / median:.1f} | {one / median:.2f} |")


if __name__ == "__main__":
    main()
