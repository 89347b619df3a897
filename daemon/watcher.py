"""Turn filesystem events into "this file has landed, completely" — once per version of a file.

A file has landed when (a) a writer closes it after writing (inotify close-write), (b) it is renamed into
place (the destination of a move: a temp name becoming a final one), or (c) it appears with no write at
all (a same-filesystem `mv` from outside gives only `created`) and its size and mtime stay still for
`settle_ms` while nobody holds it open. Polling (network mounts, or a root whose inotify watch the kernel
refused) sees only created/deleted, so there every file goes through the settle check.
"""

from __future__ import annotations

import errno
import logging
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from watchdog.events import (
    DirCreatedEvent,
    DirMovedEvent,
    FileClosedEvent,
    FileClosedNoWriteEvent,
    FileCreatedEvent,
    FileDeletedEvent,
    FileModifiedEvent,
    FileMovedEvent,
    FileOpenedEvent,
    FileSystemEvent,
    FileSystemEventHandler,
)
from watchdog.observers import Observer
from watchdog.observers.api import BaseObserver
from watchdog.observers.polling import PollingObserver

from daemon.config import WatchSettings
from daemon.walk import PathFilter

log = logging.getLogger("dupwatch.watcher")

QUIET_FALLBACK_S = 60.0
"""A file written but never seen closed (events dropped) lands after this long without events."""

INOTIFY_HINT = ("the kernel refused an inotify watch (fs.inotify.max_user_watches is too low). Raise it: "
                "`sudo sysctl fs.inotify.max_user_watches=1048576` (persist in /etc/sysctl.d/). "
                "Falling back to polling for %s")


@dataclass
class _Tracked:
    first_seen: float
    last_event: float
    wrote: bool = False
    opens: int = 0
    stat: tuple[int, int] | None = None
    stable_since: float = field(default_factory=time.monotonic)


class Watcher(FileSystemEventHandler):
    def __init__(self, filt: PathFilter, watch: WatchSettings, *, landed: Callable[[str], None],
                 moved: Callable[[str, str], None], deleted: Callable[[str], None]):
        self.filter = filt
        self.settings = watch
        self.landed, self.on_move, self.on_delete = landed, moved, deleted
        self._tracked: dict[str, _Tracked] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self.observers: list = []
        self.polled_roots: list[Path] = []
        self._inotify: dict[Path, BaseObserver] = {}  # root -> its inotify observer
        self._refused: set[Path] = set()  # inotify roots where the kernel refused a watch: poll them
        self._ticker = threading.Thread(target=self._tick_loop, name="settle", daemon=True)

    # --- lifecycle -----------------------------------------------------------------------------------

    def start(self) -> None:
        for root in self.filter.roots:
            root.mkdir(parents=True, exist_ok=True)
            if self.settings.poll:
                self._poll(root)
                continue
            observer = Observer()
            try:
                observer.schedule(self, str(root), recursive=True, follow_symlink=self.settings.follow_symlinks)
                observer.start()
                self.observers.append(observer)
                self._inotify[root] = observer
            except OSError as exc:
                if exc.errno not in (errno.ENOSPC, errno.EMFILE):
                    raise
                log.error(INOTIFY_HINT, root)
                self._poll(root)
                continue
            if self._unwatched(str(root)):
                self._refused.add(root)
        self._fall_back()
        self._ticker.start()

    def _unwatched(self, folder: str) -> bool:
        """Whether the kernel refused a watch on `folder` or a folder below it. watchdog 7.1 raises only
        when the root's own watch fails and silently skips refused sub-folders (at start and when one is
        created later), which would leave them unwatched; /proc/self/fdinfo lists the watches we hold."""
        watched = inotify_watches()
        if watched is None:
            return False  # no /proc to ask: trust watchdog
        for dirpath, dirnames, _ in os.walk(folder, followlinks=self.settings.follow_symlinks):
            try:
                st = os.stat(dirpath)
            except OSError:
                continue  # gone meanwhile
            if (os.major(st.st_dev), os.minor(st.st_dev), st.st_ino) not in watched:
                return True
            if not self.settings.follow_symlinks:
                dirnames[:] = [d for d in dirnames if not os.path.islink(os.path.join(dirpath, d))]
        return False

    def _fall_back(self) -> None:
        """Poll the roots where the kernel refused watches, and land what arrived there unseen meanwhile."""
        while self._refused:
            root = self._refused.pop()
            observer = self._inotify.pop(root, None)
            if observer is None:
                continue
            log.error(INOTIFY_HINT, root)
            observer.stop()
            observer.join(5)
            self.observers.remove(observer)
            self._poll(root)
            self._land_tree(str(root))

    def _poll(self, root: Path) -> None:
        observer = PollingObserver(timeout=self.settings.poll_interval_s)
        observer.schedule(self, str(root), recursive=True)
        observer.start()
        self.observers.append(observer)
        self.polled_roots.append(root)

    def stop(self) -> None:
        self._stop.set()
        for observer in self.observers:
            observer.stop()
        for observer in self.observers:
            observer.join(5)
        if self._ticker.is_alive():
            self._ticker.join(5)

    # --- events --------------------------------------------------------------------------------------

    def dispatch(self, event: FileSystemEvent) -> None:
        try:
            self._handle(event)
        except Exception:  # one odd event must never kill the observer thread
            log.exception("error handling %r", event)

    def _handle(self, event: FileSystemEvent) -> None:
        src = os.fsdecode(event.src_path)
        if isinstance(event, FileMovedEvent):
            dest = os.fsdecode(event.dest_path)
            with self._lock:
                self._tracked.pop(src, None)
            src_in, dest_in = self.filter.wanted(src), self.filter.wanted(dest)
            if dest_in:
                self.on_move(src, dest) if src_in else self._land(dest)
            elif src_in:
                self.on_delete(src)
            return
        if isinstance(event, DirMovedEvent | DirCreatedEvent):
            target = os.fsdecode(event.dest_path) if isinstance(event, DirMovedEvent) else src
            root = self.filter.root_of(target)
            if root in self._inotify and self._unwatched(target):
                self._refused.add(root)  # the settle thread switches it to polling
            if not self.filter.excluded(target):
                self._land_tree(target, settle=True)  # files no event will mention (moved in, or
                # written before watchdog's watch on the new folder was in place)
            return
        if not self.filter.wanted(src):
            return
        now = time.monotonic()
        if isinstance(event, FileDeletedEvent):
            with self._lock:
                self._tracked.pop(src, None)
            self.on_delete(src)
        elif isinstance(event, FileClosedEvent):
            with self._lock:
                self._tracked.pop(src, None)
            self._land(src)
        elif isinstance(event, FileCreatedEvent | FileModifiedEvent | FileOpenedEvent | FileClosedNoWriteEvent):
            with self._lock:
                t = self._tracked.get(src)
                if t is None:
                    if isinstance(event, FileClosedNoWriteEvent | FileOpenedEvent) and not self.polled_roots:
                        return  # a reader (our own worker, a viewer): nothing landed
                    t = self._tracked[src] = _Tracked(first_seen=now, last_event=now)
                t.last_event = now
                if isinstance(event, FileModifiedEvent):
                    t.wrote = self.filter.root_of(src) not in self.polled_roots  # polling sees no close
                elif isinstance(event, FileOpenedEvent):
                    t.opens += 1
                elif isinstance(event, FileClosedNoWriteEvent):
                    t.opens = max(0, t.opens - 1)

    def _land(self, path: str) -> None:
        if not self.settings.follow_symlinks and os.path.islink(path):
            return  # its target may lie outside the roots (invariant 5)
        if not os.path.isdir(path):  # a FIFO or device named like an image gets its 'not-a-file' error,
            self.landed(path)          # as the catch-up scan gives it

    def _land_tree(self, folder: str, settle: bool = False) -> None:
        """Land the files already inside `folder`. With `settle` (a folder that just appeared), a writer
        may still hold some of them open, mid-write: they go through the settle check instead, which
        takes their close-write or, for a finished file, stable size and mtime."""
        sub = PathFilter([Path(folder)], self.settings)
        sub.exclude = self.filter.exclude
        now = time.monotonic()
        for path in sub.walk():
            if not self.filter.wanted(path):
                continue
            if settle:
                with self._lock:
                    self._tracked.setdefault(path, _Tracked(first_seen=now, last_event=now))
            else:
                self.landed(path)

    # --- settle check for files seen without a close -------------------------------------------------

    def _tick_loop(self) -> None:
        while not self._stop.wait(0.1):
            try:
                self._tick()
            except Exception:
                log.exception("settle check failed")

    def _tick(self) -> None:
        self._fall_back()
        now = time.monotonic()
        settle = self.settings.settle_ms / 1000.0
        ready: list[str] = []
        with self._lock:
            for path, t in list(self._tracked.items()):
                try:
                    st = os.stat(path)
                except FileNotFoundError:
                    del self._tracked[path]
                    continue
                except OSError:
                    ready.append(path)  # unreadable: let the worker record why
                    del self._tracked[path]
                    continue
                current = (st.st_size, st.st_mtime_ns)
                if current != t.stat:
                    t.stat, t.stable_since = current, now
                    continue
                quiet = now - max(t.last_event, t.stable_since)
                if (not t.wrote and t.opens == 0 and quiet >= settle) or quiet >= QUIET_FALLBACK_S:
                    ready.append(path)
                    del self._tracked[path]
        for path in ready:
            self._land(path)


def inotify_watches() -> set[tuple[int, int, int]] | None:
    """(major, minor, inode) of every folder this process has an inotify watch on, read from
    /proc/self/fdinfo; None where /proc does not say (not Linux, or no inotify instance yet)."""
    found: set[tuple[int, int, int]] = set()
    seen = False
    try:
        fds = os.listdir("/proc/self/fd")
    except OSError:
        return None
    for fd in fds:
        try:
            if os.readlink(f"/proc/self/fd/{fd}") != "anon_inode:inotify":
                continue
            with open(f"/proc/self/fdinfo/{fd}") as fh:
                lines = fh.read().splitlines()
        except OSError:
            continue
        seen = True
        for line in lines:
            if line.startswith("inotify wd:"):
                fields = dict(part.split(":", 1) for part in line.split()[1:] if ":" in part)
                sdev = int(fields["sdev"], 16)  # the kernel's dev_t: major in the high 12 bits
                found.add((sdev >> 20, sdev & 0xFFFFF, int(fields["ino"], 16)))
    return found if seen else None
