"""Shared fixtures: a real Redis server, real photos, a real (randomly initialised) open_clip checkpoint,
a real HTTP receiver, and helpers to run `dupwatch` as the user would, in subprocesses."""

from __future__ import annotations

import http.server
import json
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import redis
from PIL import Image

from daemon.service.redis_server import server_binary

REPO_ROOT = Path(__file__).resolve().parents[1]
"""This checkout: child processes import dupwatch from here."""

TINY_MODEL = "ViT-S-32"
"""The smallest ViT open_clip ships a config for; random weights, written to a checkpoint by the tests."""

PHOTOS = ("astronaut", "chelsea", "coffee", "rocket", "camera", "coins", "grass", "immunohistochemistry",
          "hubble_deep_field", "retina", "moon", "brick")
"""scikit-image sample photos that load offline (distinct scenes)."""


def free_port() -> int:
    """A TCP port on 127.0.0.1 that is free now, for a server a test starts later. Drawn below the kernel's
    ephemeral range: a port from `bind(0)` lies inside it, where the kernel hands ports to every client's
    connect() (webhook deliveries, Redis clients, other tests' HTTP calls), so one could take it before the
    server binds. Below the range only another explicit bind can."""
    try:
        low = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        low = 32768  # Linux's default
    draw = random.SystemRandom()
    while True:
        port = draw.randrange(max(1024, low - 16384), low)
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue  # a service listens there
            return port


def wait_for(predicate, timeout: float, interval: float = 0.05, what: str = "condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


class RedisServer:
    """A real redis-server on a unix socket in its own folder; can be killed and restarted (empty) for fault
    tests. A socket, not a free TCP port: a port found free can be taken by another process before the server
    binds it, or between a kill and the restart, and the ping would then reach someone else's Redis."""

    def __init__(self, workdir: Path, *, append_only: bool = False):
        """`append_only`: keep an fsync-always append-only file, so a restart replays what a kill left (the
        private Redis of `run` keeps one); otherwise a restart comes back empty."""
        self.dir = workdir
        self.socket = workdir / "redis.sock"
        self.append_only = append_only
        self.proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"unix://{self.socket}?db=0"

    def start(self) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        self.proc = subprocess.Popen([server_binary(), "--port", "0", "--unixsocket", str(self.socket),
                                      "--unixsocketperm", "700", "--save", "", "--dir", str(self.dir),
                                      *(["--appendonly", "yes", "--appendfsync", "always"] if self.append_only
                                        else ["--appendonly", "no"])],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_for(lambda: _ping(self.client()), 10, what="redis-server")

    def kill(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait()

    def client(self) -> redis.Redis:
        return redis.Redis(unix_socket_path=str(self.socket))


def _ping(client: redis.Redis) -> bool:
    try:
        return bool(client.ping())
    except redis.ConnectionError:
        return False


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory) -> Iterator[RedisServer]:
    server = RedisServer(tmp_path_factory.mktemp("redis"))
    server.start()
    yield server
    server.kill()


@pytest.fixture
def redis_url(redis_server: RedisServer) -> str:
    redis_server.client().flushall()
    return redis_server.url


@pytest.fixture(scope="session")
def photos(tmp_path_factory) -> dict[str, Path]:
    """Real photos as JPEG files (quality 92, as cameras write)."""
    import skimage.data

    out = tmp_path_factory.mktemp("photos")
    paths = {}
    for name in PHOTOS:
        arr = getattr(skimage.data, name)()
        if arr.dtype != np.uint8:
            arr = arr.astype(np.float64)  # some samples are boolean, where subtraction is undefined
            arr = (255 * (arr - arr.min()) / max(1e-9, float(arr.max() - arr.min()))).astype(np.uint8)
        img = Image.fromarray(arr).convert("RGB")
        paths[name] = out / f"{name}.jpg"
        img.save(paths[name], quality=92)
    return paths


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory) -> Path:
    """A randomly initialised open_clip checkpoint, written here and loaded through model.pretrained."""
    from workers.torch_guard import ensure_torchvision_importable

    ensure_torchvision_importable()
    import open_clip
    import torch

    torch.manual_seed(0)
    model = open_clip.create_model(TINY_MODEL, pretrained=None)
    path = tmp_path_factory.mktemp("model") / "tiny-vit-s-32.pt"
    torch.save(model.state_dict(), path)
    return path


@pytest.fixture
def model_env(tiny_checkpoint: Path) -> dict[str, str]:
    return {"DUPWATCH_MODEL__NAME": TINY_MODEL, "DUPWATCH_MODEL__PRETRAINED": str(tiny_checkpoint),
            "DUPWATCH_MODEL__BATCH_SIZE": "16"}


class Receiver:
    """A real HTTP server on 127.0.0.1 that records webhook deliveries."""

    def __init__(self):
        self.requests: list[dict] = []
        self.lock = threading.Lock()
        receiver = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self):  # http.server's naming
                body = self.rfile.read(int(self.headers.get("content-length", 0)))
                with receiver.lock:
                    receiver.requests.append({"headers": {k.lower(): v for k, v in self.headers.items()},
                                              "body": body, "json": json.loads(body)})
                self.send_response(200)
                self.end_headers()

            def log_message(self, *args):
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def events(self) -> list[dict]:
        with self.lock:
            return [r["json"] for r in self.requests]

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    r = Receiver()
    yield r
    r.close()


def dupwatch_cmd() -> list[str]:
    exe = Path(sys.executable).parent / "dupwatch"
    return [str(exe)] if exe.exists() else [sys.executable, "-c", "from daemon.cli.main import main; main()"]


def base_env(state_dir: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("DUPWATCH_")}
    # Children import this checkout's code, whatever else the interpreter has installed (e.g. an
    # editable install of another worktree).
    env["PYTHONPATH"] = os.pathsep.join([str(REPO_ROOT), *filter(None, [os.environ.get("PYTHONPATH")])])
    env.update({"DUPWATCH_STATE_DIR": str(state_dir), "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1",
                "DUPWATCH_API__ENABLED": "false", "DUPWATCH_WATCH__SETTLE_MS": "300",
                "DUPWATCH_QUEUE__BATCH_MS": "100", "PYTHONUNBUFFERED": "1"})
    env.update(extra)
    return env


class Service:
    """`dupwatch run|daemon|worker` as a subprocess whose stdout lines are collected as they come."""

    def __init__(self, args: list[str], env: dict[str, str], log: Path, cwd: Path | None = None,
                 prefix: tuple[str, ...] = ()):
        """`prefix`: a command that runs dupwatch, e.g. `ip netns exec HOST` (tests/test_fleet.py)."""
        self.log = log
        self.lines: list[str] = []
        with open(log, "ab") as stderr:  # the child has its own copy of the descriptor
            self.proc = subprocess.Popen([*prefix, *dupwatch_cmd(), *args], env=env, stdout=subprocess.PIPE, cwd=cwd,
                                         stderr=stderr, text=True, start_new_session=True)
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.append(line.rstrip("\n"))

    def verdict_lines(self) -> list[str]:
        return [line for line in self.lines if line[:2].isdigit()]

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 30) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            return self.proc.wait()

    def stderr(self) -> str:
        return self.log.read_text(errors="replace")


@pytest.fixture
def services(tmp_path) -> Iterator[list[Service]]:
    started: list[Service] = []
    yield started
    for s in started:
        s.stop(signal.SIGKILL, timeout=10)
        try:
            os.killpg(s.proc.pid, signal.SIGKILL)  # workers and a private Redis die with their group
        except ProcessLookupError:
            pass


def catalog_rows(state_dir: Path) -> list[dict]:
    import sqlite3

    conn = sqlite3.connect(f"file:{state_dir / 'catalog.sqlite3'}?mode=ro", uri=True, timeout=10)
    conn.row_factory = sqlite3.Row
    conn.text_factory = lambda b: b.decode("utf-8", "surrogateescape")  # names that are not UTF-8
    try:
        return [dict(r) for r in conn.execute("SELECT id, path, state, verdict, match_id, score, signal, error "
                                              "FROM files ORDER BY id")]
    finally:
        conn.close()


def copy_into(src: Path, dest: Path) -> Path:
    """Write a file the way `cp` does (open, write, close: a close-write event)."""
    shutil.copyfile(src, dest)
    return dest
