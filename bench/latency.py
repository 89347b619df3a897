"""Latency of `dupwatch run`: file closed -> webhook received, at steady arrival rates, in one run.

    python -m bench.latency                                  # hash-only at 5, 20, 50 images/s
    python -m bench.latency --rates 20 --duration 30 --model ViT-S-32 --json bench/out/lat.json

A writer thread writes camera JPEGs (the files of bench.throughput) into a watched folder at a steady
rate, the way a camera or an uploader does (open, write, close), and notes the time of each close. A real
HTTP receiver on 127.0.0.1, subscribed to every verdict kind, notes when each webhook arrives. Latency is
the difference, per file (same host, same clock). Each rate gets a fresh `dupwatch run` (private Redis,
one worker) that is warmed up first (model loaded, first files through), so start-up is not counted.

"Sustained" means the service kept up: every file was delivered within `--grace` seconds of the last
write, and the latency of the last third of the files is not growing away from the first third's
(median at most twice as high plus 0.5 s). The report gives p50/p95/p99/max per rate and the highest
rate sustained.
"""

from __future__ import annotations

import argparse
import http.server
import json
import os
import shlex
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:  # `python bench/latency.py` as well as `python -m bench.latency`
    sys.path.insert(0, str(REPO))

from bench.accuracy import _table, machine
from bench.throughput import DEFAULT_WORK, build_files, checkpoint, child_env

KINDS = ["new", "exact-copy", "edited-copy", "similar", "error"]


class Receiver:
    """A webhook receiver that notes the arrival time of each delivery, by file path."""

    def __init__(self) -> None:
        self.arrived: dict[str, float] = {}
        self.lock = threading.Lock()
        receiver = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # http.server's naming
                body = self.rfile.read(int(self.headers.get("content-length", 0)))
                now = time.time()
                path = json.loads(body)["file"]["path"]
                with receiver.lock:
                    receiver.arrived.setdefault(path, now)
                self.send_response(200)
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def count(self, paths: list[str]) -> int:
        with self.lock:
            return sum(p in self.arrived for p in paths)

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def wait_until(predicate, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.05)
    return False


def write_at_rate(sources: list[bytes], folder: Path, prefix: str, rate: float, count: int) -> dict[str, float]:
    """Write `count` files at `rate` per second on a fixed schedule (no drift); return path -> close time."""
    closed: dict[str, float] = {}
    start = time.monotonic() + 0.1
    for i in range(count):
        delay = start + i / rate - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        path = folder / f"{prefix}-{i:05d}.jpg"
        with open(path, "wb") as fh:
            fh.write(sources[i % len(sources)])
        closed[str(path)] = time.time()
    return closed


def measure(dupwatch: list[str], sources: list[bytes], rate: float, duration: float, grace: float,
            model_env: dict[str, str] | None, batch_ms: int | None) -> dict[str, Any]:
    """One fresh `dupwatch run`, warmed up, then `rate` files/s for `duration` seconds."""
    receiver = Receiver()
    with tempfile.TemporaryDirectory(prefix="dupwatch-lat-") as tmp:
        incoming = Path(tmp) / "incoming"
        incoming.mkdir()
        env = child_env(DUPWATCH_STATE_DIR=str(Path(tmp) / "state"), DUPWATCH_API__ENABLED="false",
                        DUPWATCH_WEBHOOKS=json.dumps([{"url": receiver.url, "kinds": KINDS}]),
                        **(model_env or {"DUPWATCH_HASH_ONLY": "true"}))
        if batch_ms is not None:
            env["DUPWATCH_QUEUE__BATCH_MS"] = str(batch_ms)
        log = open(Path(tmp) / "run.log", "wb")  # noqa: SIM115 - closed in the finally below
        proc = subprocess.Popen(dupwatch + ["run", str(incoming)], env=env, stdout=subprocess.DEVNULL,
                                stderr=log, start_new_session=True)
        try:
            warm = list(write_at_rate(sources, incoming, "warm", 5, 5))
            if not wait_until(lambda: receiver.count(warm) == len(warm), 180):
                raise RuntimeError(f"no webhooks for the warm-up files; see {log.name}:\n"
                                   + Path(log.name).read_text(errors="replace")[-2000:])
            count = max(1, round(rate * duration))
            started = time.monotonic()
            closed = write_at_rate(sources, incoming, f"r{rate:g}", rate, count)
            offered = count / (time.monotonic() - started)
            paths = list(closed)
            wait_until(lambda: receiver.count(paths) == len(paths), grace)
        finally:
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
            log.close()
            receiver.close()
    with receiver.lock:
        lat = np.array([receiver.arrived[p] - closed[p] for p in paths if p in receiver.arrived])
    third = max(1, len(lat) // 3)
    first, last = (float(np.median(lat[:third])), float(np.median(lat[-third:]))) if len(lat) else (0.0, 0.0)
    delivered = len(lat)
    row: dict[str, Any] = {"rate": rate, "offered": offered, "files": len(paths), "delivered": delivered,
                           "first_third_p50": first, "last_third_p50": last,
                           "sustained": delivered == len(paths) and last <= 2 * first + 0.5}
    if delivered:
        row.update({f"p{q}": float(np.percentile(lat, q)) for q in (50, 95, 99)}, max=float(lat.max()))
    return row


def report(rows: list[dict[str, Any]], env: dict[str, Any], info: dict[str, Any]) -> str:
    table = [[r["mode"], r["rate"], r["offered"], f"{r['delivered']}/{r['files']}", r.get("p50"), r.get("p95"),
              r.get("p99"), r.get("max"), f"{r['first_third_p50']:.2f} -> {r['last_third_p50']:.2f}",
              "yes" if r["sustained"] else "NO"] for r in rows]
    best: dict[str, float] = {}
    for r in rows:
        if r["sustained"]:
            best[r["mode"]] = max(best.get(r["mode"], 0.0), r["rate"])
    head = (f"# dupwatch latency, file closed -> webhook received, {env['date']}\n"
            f"machine: {env['cpu']}, {env['cpus_usable']} of {env['cpus_total']} CPUs usable, "
            f"Python {env['python']}, Pillow {env['pillow']}\n"
            f"`dupwatch run`, 1 worker, private Redis; {info['duration']:g} s per rate; files: "
            f"{info['n_sources']} camera JPEGs of {info['sizes']} MP in turn; seconds\n")
    tail = "\nhighest rate sustained (of those tried): " + (
        ", ".join(f"{mode} {rate:g}/s" for mode, rate in best.items()) or "none")
    return head + "\n" + _table(["mode", "rate/s", "offered/s", "delivered", "p50", "p95", "p99", "max",
                                 "p50 first -> last third", "sustained"], table) + tail


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rates", default="5,20,50", help="arrival rates (files/s), hash-only")
    parser.add_argument("--duration", type=float, default=30.0, help="seconds of writing per rate")
    parser.add_argument("--grace", type=float, default=15.0, help="seconds after the last write to wait")
    parser.add_argument("--model", help="also run this open_clip model (random weights) at --model-rates")
    parser.add_argument("--model-rates", default="5")
    parser.add_argument("--n", type=int, default=40, help="distinct source files, written in turn")
    parser.add_argument("--sizes", default="1,3,6,12", help="their sizes in megapixels, in turn")
    parser.add_argument("--batch-ms", type=int, help="queue.batch_ms for the service (default: its own)")
    parser.add_argument("--work", type=Path, default=DEFAULT_WORK, help="where files and checkpoints are kept")
    parser.add_argument("--no-debian", action="store_true", help="scikit-image photos only")
    parser.add_argument("--dupwatch", default=f"{shlex.quote(sys.executable)} -c 'from daemon.cli.main import main; main()'",
                        help="command that runs dupwatch (default: this checkout)")
    parser.add_argument("--out", type=Path, help="also write the table here")
    parser.add_argument("--json", type=Path, help="also write the rows here")
    args = parser.parse_args(argv)

    sizes = [float(s) for s in args.sizes.split(",")]
    files = build_files(args.work / f"lat-{args.n}", args.n, sizes, debian=not args.no_debian)
    sources = [f.read_bytes() for f in files]
    dupwatch = shlex.split(args.dupwatch)
    plan: list[tuple[str, float, dict[str, str] | None]] = [
        ("hash-only", float(r), None) for r in args.rates.split(",") if r]
    if args.model:
        model_env: dict[str, str] | None = {"DUPWATCH_MODEL__NAME": args.model,
                     "DUPWATCH_MODEL__PRETRAINED": str(checkpoint(args.work, args.model))}
        plan += [(args.model, float(r), model_env) for r in args.model_rates.split(",") if r]
    rows = []
    for mode, rate, model_env in plan:
        row = {"mode": mode, **measure(dupwatch, sources, rate, args.duration, args.grace, model_env, args.batch_ms)}
        rows.append(row)
        print(f"{mode} {rate:g}/s: p99 {row.get('p99', float('nan')):.2f}s, "
              f"{row['delivered']}/{row['files']} delivered", file=sys.stderr)
    env = machine()
    text = report(rows, env, {"duration": args.duration, "n_sources": len(files), "sizes": sizes})
    print(text)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text + "\n")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"machine": env, "rows": rows}, indent=2) + "\n")


if __name__ == "__main__":
    main()
