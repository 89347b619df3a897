"""Where verdicts go besides webhooks: a human line on the console, a JSON-lines event log, and programs.

Webhooks have their own durable outbox (daemon.notify.outbox); these two are written after each commit.
"""

from __future__ import annotations

import logging
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TextIO

from daemon.config import CommandSettings
from daemon.events import VerdictEvent
from daemon.notify.outbox import wants
from daemon.text import dumps, shown

log = logging.getLogger(__name__)

SYMBOL = {"exact-copy": "=", "edited-copy": "≈", "similar": "~"}


def human_line(event: VerdictEvent) -> str:
    """`12:01:09 edited-copy  c/meme.png  ≈ a/IMG_0042.jpg  (93 clip)`: the line `run` prints."""
    stamp = time.strftime("%H:%M:%S", time.localtime(event.decided_at))
    line = f"{stamp} {event.kind:<12} {shown(event.file.path)}"
    best = event.best
    if best is not None:
        detail = f"{best.score:.0f} {best.signal}"
        if best.hash_distance is not None and best.signal != "sha256":
            detail += f", d={best.hash_distance}"
        line += f"  {SYMBOL.get(event.kind, '?')} {shown(best.file.path)}  ({detail})"
    elif event.reason:
        line += f"  ({shown(event.reason)})"
    return line


class ConsoleSink:
    def __init__(self, stream: TextIO | None = None):
        self.stream = stream or sys.stdout

    def __call__(self, event: VerdictEvent) -> None:
        print(human_line(event), file=self.stream, flush=True)


class EventLog:
    """Append-only JSON lines, rotated by size (events.jsonl -> events.jsonl.1 ... .N)."""

    def __init__(self, path: Path, max_bytes: int = 64 * 1024 * 1024, backups: int = 5):
        self.path = Path(path)
        self.max_bytes = max_bytes
        self.backups = backups
        self._lock = threading.Lock()
        self.path.parent.mkdir(parents=True, exist_ok=True)

    def __call__(self, event: VerdictEvent) -> None:
        line = dumps(event.to_dict()) + "\n"
        with self._lock:
            if self.path.exists() and self.path.stat().st_size + len(line) > self.max_bytes:
                self._rotate()
            with self.path.open("a", encoding="utf-8") as fh:
                fh.write(line)

    def _rotate(self) -> None:
        for i in range(self.backups - 1, 0, -1):
            src = self.path.with_name(f"{self.path.name}.{i}")
            if src.exists():
                src.replace(self.path.with_name(f"{self.path.name}.{i + 1}"))
        self.path.replace(self.path.with_name(f"{self.path.name}.1"))


class CommandSink:
    """Run each `[[commands]]` program with the event JSON on stdin, one event at a time per command.

    A background thread runs them so a slow program never holds up verdicts; order is kept. A program that
    fails or outlives its timeout is logged (and killed), and the next event goes on.
    """

    def __init__(self, commands: list[CommandSettings]):
        self.commands = commands
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="commands")

    def __call__(self, event: VerdictEvent) -> None:
        wanted = [c for c in self.commands if wants(c, event)]
        if wanted:
            body = dumps(event.to_dict()).encode()
            self._pool.submit(self._run, wanted, body, event.event_id)

    def _run(self, commands: list[CommandSettings], body: bytes, event_id: str) -> None:
        for command in commands:
            try:
                done = subprocess.run(command.argv, input=body, capture_output=True, timeout=command.timeout_s,
                                      check=False)
            except subprocess.TimeoutExpired:
                log.warning("command %s killed after %.0fs on %s", command.argv[0], command.timeout_s, event_id)
                continue
            except OSError as exc:
                log.warning("command %s could not run: %s", command.argv[0], exc)
                continue
            if done.returncode != 0:
                log.warning("command %s exited %d on %s: %s", command.argv[0], done.returncode, event_id,
                            done.stderr.decode(errors="replace").strip()[-300:])

    def close(self) -> None:
        """Let queued events run (each bounded by its command's timeout), then stop."""
        self._pool.shutdown(wait=True)
