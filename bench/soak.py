"""Soak: `dupwatch run` under a mixed stream of files while a worker, Redis and the daemon are SIGKILLed at
random moments; then check that nothing was lost, repeated or leaked.

    python bench/soak.py --minutes 30 [--seed N] [--workdir DIR]

The stream: bursts of small JPEGs, slow writers, files renamed into place from a temporary name, overwrites
and deletes of files already decided, bad files, names that are not valid UTF-8, and symlinks to files
outside the roots; folders renamed (once, or twice in a row) while their files are queued or after they were
decided, decided files moved, files moved in from outside and renamed at once, hard links to decided files
(overwritten later through one name), and mtimes set back on decided files. The kills: a worker process, the
private redis-server, or the whole `run` process group (then started again), at random moments drawn from the
printed seed.

Checks, printed as a table (exit status 1 if any fails):
- every landed version of every path has exactly one verdict (a version "landed" once its file was closed
  or renamed into place; overwrites and deletes hit only versions the daemon already decided, so each
  version is one the daemon could see);
- only the bad files get `error` verdicts: an image that waited through restarts is never given up;
- every webhook event id in the outbox reached the real HTTP receiver on 127.0.0.1, once; a re-send of the
  same id is allowed only where a daemon was SIGKILLed between the receiver's 2xx and recording it, so at
  most one per daemon kill (docs/guarantees.md, guarantee 4);
- no verdict matches a file to itself (a ghost row of a moved file; hard links apart), and the catalog's
  current rows are exactly the files on disk;
- no file outside the watched root was opened (inotify on the outside folder, via watchdog);
- `run` never exited by itself (it is restarted if it did, so the other checks still run).

The checks are read once the run has settled: every landed version decided (not only every catalogued row:
a version can land before it has a row), every outbox row sent. Each version left without a verdict is named
with its catalog rows, jobs and the log lines about it.
"""

from __future__ import annotations

import argparse
import collections
import http.server
import io
import json
import os
import random
import signal
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import psutil
from PIL import Image
from watchdog.events import FileOpenedEvent, FileSystemEventHandler
from watchdog.observers import Observer

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:  # `python bench/soak.py` as well as `python -m bench.soak`
    sys.path.insert(0, str(REPO))

from daemon.index.catalog import read_only_connection
from daemon.text import shown


def jpeg(rng: np.random.Generator, side: int = 48) -> bytes:
    """A small JPEG of random blocks: distinct from every other one (its hash differs)."""
    blocks = rng.integers(0, 256, (6, 6, 3), dtype=np.uint8)
    img = Image.fromarray(blocks).resize((side, side), Image.Resampling.NEAREST)
    buf = io.BytesIO()
    img.save(buf, "JPEG", quality=90)
    return buf.getvalue()


class Receiver:
    """A webhook receiver on 127.0.0.1 counting deliveries per event id (the `webhook-id` header)."""

    def __init__(self) -> None:
        self.ids: collections.Counter[str] = collections.Counter()
        lock = threading.Lock()
        ids = self.ids

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                self.rfile.read(int(self.headers.get("content-length", 0)))
                with lock:
                    ids[self.headers["webhook-id"]] += 1
                self.send_response(200)
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()


class OpenWatch(FileSystemEventHandler):
    """Records every open of a file in the outside folder (inotify IN_OPEN), and, where fanotify is allowed
    (root), which process opened it: an open seen by inotify alone cannot tell dupwatch from any other
    process on the host that happened to read the folder."""

    def __init__(self, folder: Path) -> None:
        self.opened: list[str] = []
        self.openers: list[str] = []  # "path by pid N (command line)", from fanotify
        self._fan = _fanotify_open_listener(folder)
        if self._fan is not None:
            threading.Thread(target=self._read_fanotify, args=(self._fan,), daemon=True).start()

    def on_opened(self, event: FileOpenedEvent) -> None:
        self.opened.append(os.fsdecode(event.src_path))

    def _read_fanotify(self, fan: int) -> None:
        """struct fanotify_event_metadata: u32 event_len, u8 vers, u8 reserved, u16 metadata_len, u64 mask,
        s32 fd, s32 pid (24 bytes)."""
        while True:
            try:
                buf = os.read(fan, 4096)
            except OSError:
                return
            for off in range(0, len(buf) - 23, 24):
                fd = int.from_bytes(buf[off + 16:off + 20], "little", signed=True)
                pid = int.from_bytes(buf[off + 20:off + 24], "little", signed=True)
                if fd < 0:
                    continue
                try:
                    path = os.readlink(f"/proc/self/fd/{fd}")
                finally:
                    os.close(fd)
                try:
                    cmd = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
                except OSError:
                    cmd = "(exited)"
                self.openers.append(f"{path} by pid {pid} ({cmd.strip()[:160]})")


def _fanotify_open_listener(folder: Path) -> int | None:
    """A fanotify descriptor reporting opens of the files in `folder`, or None where it is not permitted."""
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)
    fan_class_notif, fan_cloexec, fan_open, fan_event_on_child, fan_mark_add = 0, 1, 0x20, 0x08000000, 1
    fan = libc.fanotify_init(fan_class_notif | fan_cloexec, os.O_RDONLY | os.O_LARGEFILE)
    if fan < 0:
        return None
    if libc.fanotify_mark(fan, fan_mark_add, ctypes.c_uint64(fan_open | fan_event_on_child), -100,
                          os.fsencode(folder)) != 0:
        os.close(fan)
        return None
    return fan


@dataclass
class Ledger:
    """What the stream put on disk: every landed version, by path."""

    versions: dict[str, list[tuple[int, int]]] = field(default_factory=lambda: collections.defaultdict(list))
    odd_names: list[str] = field(default_factory=list)  # tokens of the non-UTF-8 names (also in `versions`)
    bad: set[tuple[str, int, int]] = field(default_factory=set)  # the versions that are not images
    counts: collections.Counter[str] = field(default_factory=collections.Counter)
    links: list[set[str]] = field(default_factory=list)  # the names of each file given hard links
    folders: list[str] = field(default_factory=list)  # folders the stream made to move, where they are now

    def landed(self, path: Path) -> None:
        st = path.stat()
        self.versions[str(path)].append((st.st_size, st.st_mtime_ns))

    def moved(self, src: str, dest: str) -> None:
        """A rename of a file, or of a folder and every path below it: each current version follows its file
        (earlier versions stay under the name they were decided under), and so do its hard-link names."""
        below = src.rstrip("/") + "/"
        for path in [p for p in self.versions if p == src or p.startswith(below)]:
            new = dest + path[len(src):]
            if not os.path.lexists(new):
                continue  # deleted before the move: its versions keep the name they were decided under
            self.versions[new].append(self.versions[path].pop())
            if not self.versions[path]:
                del self.versions[path]
            for group in self.links:
                if path in group:
                    group.discard(path)
                    group.add(new)

    def changed(self, path: Path) -> None:
        """New bytes written into `path`'s file: a new version under each of its names (hard links)."""
        self.landed(path)
        for group in self.links:
            if str(path) in group:
                for other in group - {str(path)}:
                    self.landed(Path(other))

    def linked(self, path: str) -> bool:
        return any(path in group for group in self.links)

    def count(self) -> int:
        """Versions landed so far."""
        return sum(len(v) for v in self.versions.values())

    def all_versions(self) -> list[tuple[str, int, int]]:
        """Every landed version as (path, size, mtime_ns), the catalog's key of a version."""
        return [(p, s, m) for p, versions in self.versions.items() for s, m in versions]


def run_env(state: Path, webhook_url: str | None) -> dict[str, str]:
    """The environment of the soak's `run`: this checkout, its state dir, no API, every verdict kind sent to
    `webhook_url` (none without)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("DUPWATCH_")}
    hooks = [{"url": webhook_url, "kinds": ["new", "exact-copy", "edited-copy", "similar", "error"]}] if webhook_url else []
    env.update({"PYTHONPATH": str(REPO), "DUPWATCH_STATE_DIR": str(state), "DUPWATCH_API__ENABLED": "false",
                "DUPWATCH_WEBHOOKS": json.dumps(hooks), "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"})
    return env


class Run:
    """`dupwatch run --hash-only ROOT` in its own process group, restartable."""

    def __init__(self, root: Path, state: Path, env: dict[str, str], log: Path):
        self.args = [sys.executable, "-c", "from daemon.cli.main import main; main()", "run", "--hash-only", str(root)]
        self.env, self.log, self.state = env, log, state
        self.proc = self._spawn()

    def start(self) -> None:
        self.proc = self._spawn()

    def _spawn(self) -> subprocess.Popen:
        with open(self.log, "ab") as err:  # the child keeps its own copy of the descriptor
            return subprocess.Popen(self.args, env=self.env, stdout=subprocess.DEVNULL, stderr=err,
                                    start_new_session=True)

    def children(self, marker: str) -> list[psutil.Process]:
        try:
            return [p for p in psutil.Process(self.proc.pid).children(recursive=True)
                    if marker in " ".join(p.cmdline())]
        except psutil.Error:
            return []

    def kill_all(self) -> None:
        os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait()

    def stop(self) -> int:
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(60)
        except subprocess.TimeoutExpired:
            self.kill_all()
            return -9


def catalog(state: Path) -> sqlite3.Connection:
    """Read-only, with the catalog's own text decoding: names that are not UTF-8 come back as the same
    surrogate-escaped strings the ledger holds."""
    return read_only_connection(state / "catalog.sqlite3")


def decided_versions(state: Path) -> set[tuple[str, int, int]]:
    try:
        conn = catalog(state)
        try:
            return {(r["path"], r["size"], r["mtime_ns"]) for r in
                    conn.execute("SELECT path, size, mtime_ns FROM files WHERE state = 'decided'")}
        finally:
            conn.close()
    except sqlite3.Error as exc:
        print(f"soak: catalog not readable ({exc}); no overwrite or delete this time", flush=True)
        return set()


ACTIONS = {"burst": 1, "slow": 4, "rename": 6, "overwrite": 4, "delete": 3, "bad": 2, "odd-name": 2, "symlink": 1,
           "pause": 6, "move-queued": 2, "move-decided": 2, "move-folder": 1, "move-in": 2, "hardlink": 1}
"""The mix drawn from. `touch` (an mtime set back on a decided file) is run only with `--with touch`: a running
daemon does not notice an mtime-only change, and a file touched and then moved is catalogued again as a new
file (a row's identity is device, inode, size and mtime): a known gap (README, Limits), not yet a guarantee."""
OPTIONAL_ACTIONS = {"touch": 2}
"""What the stream does, with its relative frequency."""


def backlog(state: Path, landed: int) -> int:
    """Files waiting for a verdict: the rows the daemon has not decided yet, or, when more, the `landed`
    versions less the decided rows. Counting rows alone let bursts through while the daemon had not yet
    catalogued the last one (settling, or restarting after a kill): 15 bursts, 300,000 files in 12 minutes."""
    try:
        conn = catalog(state)
        try:
            undecided, decided = conn.execute(
                "SELECT count(*) FILTER (WHERE state != 'decided'), count(*) FILTER (WHERE state = 'decided') "
                "FROM files").fetchone()
            return max(int(undecided), landed - int(decided))
        finally:
            conn.close()
    except sqlite3.Error:
        return landed


def stream(root: Path, outside: Path, ledger: Ledger, rng: np.random.Generator, pick: random.Random,
           deadline: float, burst: int, burst_backlog: int | None, state: Path, actions: dict[str, int]) -> None:
    """Write the mixed stream into `root` until `deadline`. With `burst_backlog`, a burst is written only
    while fewer rows than that wait for a verdict: at their drawn frequency a 30-minute run would write
    some fifty bursts of 20,000, a backlog no 2-core host decides within the run (about 20 verdicts/s at
    load 20), and the soak is about faults, not an ever-growing queue. The other actions go on meanwhile."""
    n = 0
    tmp = root.parent / "staging"
    tmp.mkdir(exist_ok=True)

    def name() -> Path:
        nonlocal n
        n += 1
        return root / f"d{n % 7}" / f"f{n:07d}.jpg"

    for d in range(7):
        (root / f"d{d}").mkdir(parents=True, exist_ok=True)
    while time.monotonic() < deadline:
        action = pick.choices(list(actions), list(actions.values()))[0]
        if action == "burst" and burst_backlog is not None and backlog(state, ledger.count()) >= burst_backlog:
            continue
        ledger.counts[action] += 1
        if action == "burst":
            for _ in range(burst):
                path = name()
                path.write_bytes(jpeg(rng))
                ledger.landed(path)
        elif action == "slow":
            path, data = name(), jpeg(rng, 96)
            with open(path, "wb") as fh:
                for i in range(0, len(data), 512):
                    fh.write(data[i:i + 512])
                    fh.flush()
                    time.sleep(0.02)
            ledger.landed(path)
        elif action == "rename":
            path, part = name(), tmp / f"{n}.part"
            part.write_bytes(jpeg(rng))
            os.rename(part, path)
            ledger.landed(path)
        elif action in ("overwrite", "delete", "move-decided", "hardlink", "touch"):
            done = [p for p, size, mtime in decided_versions(state)
                    if ledger.versions.get(p) and ledger.versions[p][-1] == (size, mtime) and Path(p).exists()
                    and (action != "move-decided" or "nu8-" not in p)  # a moved odd name keeps its token
                    and (action in ("overwrite", "delete") or (p, size, mtime) not in ledger.bad)]  # bad stay put
            if done:
                path = Path(pick.choice(sorted(done)))
                if action == "delete":
                    path.unlink()
                    for group in ledger.links:
                        group.discard(str(path))
                    ledger.counts["deleted"] += 1
                elif action == "overwrite":
                    path.write_bytes(jpeg(rng))  # in place: its hard links hold the new bytes too
                    ledger.changed(path)
                    ledger.counts["overwritten"] += 1
                elif action == "move-decided":
                    dest = name()
                    os.rename(path, dest)
                    ledger.moved(str(path), str(dest))
                elif action == "hardlink":
                    dest = name()
                    os.link(path, dest)
                    ledger.landed(dest)
                    groups = [g for g in ledger.links if str(path) in g]
                    if not groups:
                        ledger.links.append(set())
                        groups = [ledger.links[-1]]
                    groups[0].update((str(path), str(dest)))
                else:  # the same bytes with an mtime set back: no new version (no bytes changed) and no verdict;
                    st = path.stat()  # a restart's catch-up catalogues the new mtime silently
                    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns - 86_400 * 10**9))
        elif action == "move-queued":  # a folder renamed (once or twice) while its files wait for their verdicts
            n += 1
            folder = root / f"q{n:07d}"
            folder.mkdir()
            for k in range(4):
                (folder / f"{k}.jpg").write_bytes(jpeg(rng))
                ledger.landed(folder / f"{k}.jpg")
            time.sleep(pick.uniform(0.0, 0.5))
            dest = root / f"q{n:07d}r"
            os.rename(folder, dest)
            ledger.moved(str(folder), str(dest))
            ledger.folders.append(str(dest))
        elif action == "move-folder":  # a folder of (mostly) decided files renamed twice before either event is read
            if ledger.folders:
                at = pick.randrange(len(ledger.folders))
                src = Path(ledger.folders[at])
                first, second = src.with_name(src.name + "x"), root / f"d{pick.randrange(7)}" / (src.name + "y")
                os.rename(src, first)
                os.rename(first, second)
                ledger.moved(str(src), str(second))
                ledger.folders[at] = str(second)
        elif action == "move-in":  # moved in from outside the root and renamed at once
            staged = tmp / f"in{n}.jpg"
            staged.write_bytes(jpeg(rng))
            first, final = name(), name()
            os.rename(staged, first)
            os.rename(first, final)
            ledger.landed(final)
        elif action == "bad":
            path = name()
            path.write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg" + rng.bytes(100))
            ledger.landed(path)
            ledger.bad.add((str(path), *ledger.versions[str(path)][-1]))
        elif action == "odd-name":
            n += 1
            token = f"nu8-{n:07d}-"
            raw = os.fsencode(root / "d0") + b"/" + token.encode() + b"\xff\xfe.jpg"
            with open(raw, "wb") as fh:
                fh.write(jpeg(rng))
            ledger.landed(Path(os.fsdecode(raw)))  # surrogate-escaped, as the catalog gives it back
            ledger.odd_names.append(token)
        elif action == "symlink":
            target = pick.choice(sorted(outside.iterdir()))
            link = name()
            os.symlink(target, link)  # never to be read: outside the root
        else:
            time.sleep(pick.uniform(0.1, 1.0))


def machine() -> str:
    """The host, for the summary: results are only comparable on the same kind of machine."""
    model = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                  if line.startswith("model name")), "unknown CPU")
    return f"{model}, {os.cpu_count()} cores, {psutil.virtual_memory().total / 2**30:.0f} GiB"


def load() -> str:
    return "/".join(f"{x:.2f}" for x in os.getloadavg())


def sample_load(loads: list[float], stop: threading.Event) -> None:
    while not stop.wait(15):
        loads.append(os.getloadavg()[0])


def killer(run: Run, pick: random.Random, deadline: float, kills: collections.Counter, mean_s: float,
           stop: threading.Event) -> None:
    """SIGKILL a worker, the redis-server or the whole run, at random moments."""
    while not stop.wait(pick.expovariate(1 / mean_s)) and time.monotonic() < deadline:
        if run.proc.poll() is not None:  # `run` must never exit by itself: counted (a failed check), restarted
            kills["exited by itself"] += 1
            run.start()
        what = pick.choice(["worker", "redis", "daemon"])
        if what == "daemon":
            run.kill_all()
            run.start()
            kills["daemon"] += 1
            continue
        victims = run.children("spawn_main" if what == "worker" else "redis-server")
        if victims:
            victims[0].kill()
            kills[what] += 1


def unsettled(state: Path, ledger: Ledger) -> tuple[list[tuple[str, int, int]], int, int]:
    """(landed versions with no decided row, rows not decided, deliveries pending). A version the daemon
    has not catalogued yet has no row at all: a file renamed into place waits `watch.settle_ms` before it
    lands, and one that landed while the daemon was down waits for the catch-up scan of its next start.
    Counting rows alone read 0 in those windows, and the final stop then cut their verdicts off."""
    conn = catalog(state)
    try:
        decided = {(r["path"], r["size"], r["mtime_ns"]) for r in
                   conn.execute("SELECT path, size, mtime_ns FROM files WHERE state = 'decided'")}
        open_rows = conn.execute("SELECT count(*) FROM files WHERE state != 'decided'").fetchone()[0]
        unsent = conn.execute("SELECT count(*) FROM deliveries WHERE state = 'pending'").fetchone()[0]
    finally:
        conn.close()
    return [v for v in ledger.all_versions() if v not in decided], int(open_rows), int(unsent)


def settle(state: Path, ledger: Ledger, stall_s: float) -> float:
    """Wait until every landed version is decided, no row is undecided and every outbox row was sent, for as
    long as that backlog keeps shrinking: a 20,000-file burst near the end can take minutes on 2 busy cores,
    and that is throughput, not loss. Gives up after `stall_s` with no progress. Returns the seconds waited."""
    started = time.monotonic()
    best, best_at = None, started
    while time.monotonic() - best_at < stall_s:
        try:
            missing, open_rows, unsent = unsettled(state, ledger)
            left = len(missing) + open_rows + unsent
            if left == 0:
                break
            if best is None or left < best:
                best, best_at = left, time.monotonic()
        except sqlite3.Error:
            pass
        time.sleep(1)
    return time.monotonic() - started


def held(state: Path, missing: list[tuple[str, int, int]], log: Path, *, redis_too: bool, limit: int = 20) -> str:
    """What holds each landed version with no verdict: its path, the catalog's rows for that path (state, job,
    attempts, error, when detected), what Redis says of their jobs (`redis_too`: while `run` still runs), and
    the last log lines naming the file or its job; then the oldest undecided rows (verdicts go in arrival
    order, so the first one holds back the rest) and the end of the log. Printed before the final stop, and
    again after it, so a failure in CI can be diagnosed from its output."""
    import redis
    from rq import Queue
    from rq.job import Job
    from rq.registry import StartedJobRegistry
    from rq.serializers import JSONSerializer

    from workers import queue as q

    lines = log.read_text(errors="replace").splitlines() if log.exists() else []
    rc = redis.Redis(unix_socket_path=str(state / "redis.sock"), socket_timeout=5) if redis_too else None

    def job_line(job_id: str) -> str:
        if rc is None:
            return ""
        try:
            job = Job.fetch(job_id, connection=rc, serializer=JSONSerializer)
            return f"; redis: {job.get_status()} worker {job.worker_name} started {job.started_at}"
        except Exception as exc:  # noqa: BLE001 - a report, whatever Redis holds
            return f"; redis: {type(exc).__name__} {exc}"

    conn = catalog(state)
    now = time.time()
    cols = "id, size, mtime_ns, state, current, job_id, attempts, detected_at, queued_at, error"
    out = [f"{len(missing)} landed versions with no verdict{f' (the first {limit})' if len(missing) > limit else ''}:"]
    for path, size, mtime in missing[:limit]:
        out.append(f"  {shown(path)} (size {size}, mtime_ns {mtime})")
        rows = conn.execute(f"SELECT {cols} FROM files WHERE path = ? ORDER BY id", (path,)).fetchall()
        for r in rows:
            this = " <- this version" if (r["size"], r["mtime_ns"]) == (size, mtime) else ""
            out.append(f"    row {r['id']} {r['state']} current {r['current']} job {r['job_id']} attempts "
                       f"{r['attempts']} detected {now - r['detected_at']:.0f}s ago error {r['error']}{this}"
                       + (job_line(r["job_id"]) if r["job_id"] else ""))
        if not rows:
            out.append("    no catalog row: the daemon never saw it land")
        names = [Path(path).name] + [r["job_id"] for r in rows if r["job_id"]]
        about = [line for line in lines if any(n in line for n in names)]
        out += [f"    log: {line[:300]}" for line in about[-5:]] or ["    log: no line names it or its job"]
    head = conn.execute(f"SELECT path, {cols} FROM files WHERE state != 'decided' ORDER BY id LIMIT 5").fetchall()
    conn.close()
    out.append("oldest undecided rows:")
    for r in head:
        out.append(f"  id {r['id']} {r['state']} job {r['job_id']} attempts {r['attempts']} queued "
                   f"{now - (r['queued_at'] or r['detected_at']):.0f}s ago error {r['error']} {shown(r['path'])}"
                   + (job_line(r["job_id"]) if r["job_id"] else ""))
    if rc is not None:
        try:
            started = StartedJobRegistry(q.INGEST_QUEUE, connection=rc, serializer=JSONSerializer).get_job_ids()
            workers = {k.decode(): rc.hgetall(k) for k in rc.scan_iter(match=q.WORKER_KEY.format(name="*"))}
            out.append(f"redis: queue {Queue(q.INGEST_QUEUE, connection=rc).count}, started {started}, workers "
                       f"{workers}, results stream {rc.xlen(q.RESULTS_STREAM)}")
        except Exception as exc:  # noqa: BLE001
            out.append(f"redis unreadable: {exc}")
    out += ["last lines of run.log:"] + [f"  {line[:300]}" for line in lines[-40:]]
    return "\n".join(out)


def check(state: Path, ledger: Ledger, receiver: Receiver, opened: list[str], openers: list[str],
          daemon_kills: int) -> list[tuple[str, str, bool]]:
    conn = catalog(state)
    rows = conn.execute("SELECT path, size, mtime_ns, state, verdict FROM files").fetchall()
    outbox = [r[0] for r in conn.execute("SELECT event_id FROM deliveries")]
    conn.close()
    per_version = collections.Counter((r["path"], r["size"], r["mtime_ns"]) for r in rows if r["state"] == "decided")
    landed = ledger.all_versions()
    missing = [v for v in landed if per_version[v] == 0]
    repeated = [v for v in landed if per_version[v] > 1]
    errors = {(r["path"], r["size"], r["mtime_ns"]) for r in rows if r["state"] == "decided" and r["verdict"] == "error"}
    wrong_errors = [v for v in landed if v in errors and v not in ledger.bad]
    undecided = sum(r["state"] != "decided" for r in rows)
    odd_rows = sum(any(tok in r["path"] for r in rows if r["state"] == "decided") for tok in ledger.odd_names)
    resent = sum(receiver.ids[i] - 1 for i in outbox if receiver.ids[i] > 1)
    never_sent = [i for i in outbox if receiver.ids[i] == 0]
    kinds = collections.Counter(r["verdict"] for r in rows if r["state"] == "decided")
    return [
        ("paths written", f"{len(ledger.versions)} ({len(ledger.odd_names)} non-UTF-8 names)", True),
        ("landed versions", str(len(landed)), True),
        ("verdicts by kind", " ".join(f"{k} {v}" for k, v in sorted(kinds.items())), True),
        ("versions with no verdict", f"{len(missing)} {[shown(p) for p, *_ in missing[:3]]}", not missing),
        ("versions with 2+ verdicts", f"{len(repeated)} {[shown(p) for p, *_ in repeated[:3]]}", not repeated),
        ("images given an error verdict", f"{len(wrong_errors)} {[shown(p) for p, *_ in wrong_errors[:3]]}",
         not wrong_errors),
        ("rows still undecided", str(undecided), undecided == 0),
        ("non-UTF-8 names decided", f"{odd_rows} of {len(ledger.odd_names)}", odd_rows == len(ledger.odd_names)),
        ("webhook events in the outbox", str(len(outbox)), True),
        ("deliveries received (2xx)", str(sum(receiver.ids.values())), True),
        ("events never delivered", str(len(never_sent)), not never_sent),
        ("re-sends (at most 1 per daemon kill)", f"{resent} ({daemon_kills} daemon kills)", resent <= daemon_kills),
        ("files outside the root opened", f"{len(opened)} {opened[:3]}", not opened),
        *(("  opened by", who, False) for who in openers[:5]),
    ]


def tree_checks(state: Path, root: Path, ledger: Ledger) -> list[tuple[str, str, bool]]:
    """What moves and links must leave: no verdict matching a file to itself (the same inode under a name
    that is gone: a ghost row), hard links apart; and current rows that are exactly the files on disk."""
    conn = catalog(state)
    selves = conn.execute(
        "SELECT f.path, m.path FROM files f JOIN files m ON m.id = f.match_id "
        "WHERE f.state = 'decided' AND f.ino IS NOT NULL AND f.ino = m.ino AND f.dev = m.dev").fetchall()
    current = {r[0] for r in conn.execute("SELECT path FROM files WHERE current = 1")}
    conn.close()
    selves = [(a, b) for a, b in selves if not (ledger.linked(a) or ledger.linked(b))]
    disk = {os.path.join(d, f) for d, _, files in os.walk(root) for f in files
            if not os.path.islink(os.path.join(d, f))}
    ghosts, uncatalogued = sorted(current - disk), sorted(disk - current)
    return [
        ("files a copy of themselves", f"{len(selves)} {[shown(a) for a, _ in selves[:2]]}", not selves),
        ("current rows with no file", f"{len(ghosts)} {[shown(p) for p in ghosts[:2]]}", not ghosts),
        ("files with no current row", f"{len(uncatalogued)} {[shown(p) for p in uncatalogued[:2]]}",
         not uncatalogued),
    ]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--minutes", type=float, default=30.0)
    ap.add_argument("--seed", type=int, default=None)
    ap.add_argument("--workdir", type=Path, default=None)
    ap.add_argument("--burst", type=int, default=None, help="Files per burst (default 20,000; 300 under 10 min).")
    ap.add_argument("--kill-every-s", type=float, default=None, help="Mean seconds between kills.")
    ap.add_argument("--burst-backlog", type=int, default=None,
                    help="Write a burst only while fewer rows wait for a verdict (default 1,000; no limit "
                         "under 10 min).")
    ap.add_argument("--without", action="append", default=[], choices=sorted(ACTIONS),
                    help="Leave this action out of the stream (repeatable), to isolate a failure.")
    ap.add_argument("--with", dest="extra", action="append", default=[], choices=sorted(OPTIONAL_ACTIONS),
                    help="Add an action that is off by default (repeatable): a known gap to reproduce.")
    args = ap.parse_args(argv)
    seed = args.seed if args.seed is not None else random.SystemRandom().randrange(2**32)
    short = args.minutes < 10
    burst = args.burst or (300 if short else 20_000)
    mean_kill = args.kill_every_s or (20.0 if short else 60.0)
    burst_backlog = args.burst_backlog or (None if short else 1_000)
    work = args.workdir or Path(tempfile.mkdtemp(prefix="dupwatch-soak-"))
    root, outside, state = work / "root", work / "outside", work / "state"
    for d in (root, outside):
        d.mkdir(parents=True, exist_ok=True)
    print(f"soak: seed {seed}, {args.minutes:g} min, bursts of {burst}"
          f"{f' (each once fewer than {burst_backlog} rows wait)' if burst_backlog else ''}, "
          f"a kill every ~{mean_kill:.0f}s, in {work}"
          + (f", without {', '.join(args.without)}" if args.without else ""), flush=True)
    print(f"machine: {machine()}; load at start {load()}", flush=True)
    loads: list[float] = []
    rng, pick = np.random.default_rng(seed), random.Random(seed)
    for i in range(5):
        (outside / f"secret{i}.jpg").write_bytes(jpeg(rng))
    watch = OpenWatch(outside)
    observer = Observer()
    observer.schedule(watch, str(outside))
    observer.start()

    receiver = Receiver()
    run = Run(root, state, run_env(state, receiver.url), work / "run.log")
    ledger, kills, stop = Ledger(), collections.Counter[str](), threading.Event()
    started = time.monotonic()
    deadline = started + args.minutes * 60
    chaos = threading.Thread(target=killer, args=(run, pick, deadline, kills, mean_kill, stop), daemon=True)
    threading.Thread(target=sample_load, args=(loads, stop), daemon=True).start()
    while not (state / "catalog.sqlite3").exists():  # the first start
        if run.proc.poll() is not None:
            raise SystemExit(f"soak: `dupwatch run` exited ({run.proc.returncode}) at start; see {work / 'run.log'}")
        time.sleep(0.2)
    chaos.start()
    try:
        stream(root, outside, ledger, rng, pick, deadline, burst, burst_backlog, state,
               {k: w for k, w in {**ACTIONS, **{a: OPTIONAL_ACTIONS[a] for a in args.extra}}.items()
                if k not in args.without})
        stop.set()
        chaos.join()
        settled_s = settle(state, ledger, stall_s=300)
        missing, open_rows, _ = unsettled(state, ledger)
        if missing or open_rows:  # before the stop changes what Redis holds
            print("before the final stop: " + held(state, missing, work / "run.log", redis_too=True), flush=True)
        code = run.stop()
    finally:
        if run.proc.poll() is None:
            run.kill_all()
        observer.stop()
    results = check(state, ledger, receiver, watch.opened, watch.openers, kills["daemon"])
    results += tree_checks(state, root, ledger)
    results.append(("`run` exits by itself (restarted)", str(kills["exited by itself"]), not kills["exited by itself"]))
    elapsed = time.monotonic() - started
    print(f"\nsoak (seed {seed}): {elapsed / 60:.1f} min; actions {dict(ledger.counts)}; kills {dict(kills)}; "
          f"final SIGTERM exit {code}; settled {settled_s:.0f}s after the stream stopped")
    print(f"machine: {machine()}; load average during the stream (1-min, sampled every 15 s): "
          f"mean {sum(loads) / max(len(loads), 1):.1f}, max {max(loads, default=0):.1f}; at the end {load()}")
    print(f"{'check':<34} {'value':<44} ok")
    for what, value, ok in results:
        print(f"{what:<34} {value[:44]:<44} {'yes' if ok else 'NO'}")
    missing = unsettled(state, ledger)[0]
    if missing:
        print("\nafter the final stop: " + held(state, missing, work / "run.log", redis_too=False))
    return 0 if all(ok for *_, ok in results) else 1


if __name__ == "__main__":
    sys.exit(main())
