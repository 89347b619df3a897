"""Turn filesystem events into "this file has landed, completely" — once per version of a file.

A file has landed when (a) a writer closes it after writing (inotify close-write), (b) it is renamed into
place (the destination of a move: a temp name becoming a final one), or (c) it appears with no write at
all (a same-filesystem `mv` from outside gives only `created`) and its size and mtime stay still for
`settle_ms` while nobody holds it open. Polling (network mounts, or a folder whose inotify watch the
kernel refused) sees only created/deleted, so there every file goes through the settle check.

Two ways inotify loses events, and what is done about each:
- The kernel's event queue overflows (more than fs.inotify.max_queued_events waiting: a burst of files
  while the reader is busy). watchdog 7.1 then rebuilds its watches but tells no handler; its only trace
  is a WARNING log record, which `_OverflowAlarm` turns into `overflowed()`: logged with its cause,
  counted, and the owner rescans the roots at once.
- A folder without a watch. watchdog adds watches for a new folder and what is below it when the
  folder's own event is read, so a check run when that event reaches us can find folders that
  `mkdir -p` created a moment later and whose events are still queued: a race, not a refusal. Such
  folders are checked again a little later; only if the kernel, asked directly, refuses a watch
  (ENOSPC: fs.inotify.max_user_watches) is that folder's subtree, and only it, polled.
"""

from __future__ import annotations

import ctypes
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
    DirDeletedEvent,
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
from daemon.ingest.walk import PathFilter, skipped_link, walk_folders
from daemon.text import shown

log = logging.getLogger(__name__)

QUIET_FALLBACK_S = 60.0
"""A file written but never seen closed (events dropped) lands after this long without events."""

INOTIFY_HINT = ("the kernel refused an inotify watch (fs.inotify.max_user_watches is too low). Raise it: "
                "`sudo sysctl fs.inotify.max_user_watches=1048576` (persist in /etc/sysctl.d/). "
                "Falling back to polling for %s")

OVERFLOW_HINT = ("inotify's event queue overflowed (more than fs.inotify.max_queued_events = %s events were "
                 "waiting): events were lost; rescanning the watched roots now. If bursts are usual, raise it: "
                 "`sudo sysctl fs.inotify.max_queued_events=1048576`")

ROOT_CHECK_S = 1.0
"""How often each watched root is checked to still be the folder that is watched."""

RECHECK_S = (0.5, 1.0, 2.0, 4.0)
"""When a folder found without a watch is looked at again (seconds after it was found): watchdog adds
the watch once it reads the folder's creation event, which can trail the check by a moment."""


class _OverflowAlarm(logging.Handler):
    """watchdog 7.1 handles IN_Q_OVERFLOW inside its reader thread (it rebuilds its watches) and passes
    no event to handlers: the WARNING it logs is the one sign that events were lost."""

    MESSAGE = "Inotify queue overflowed; filesystem events were lost"

    def __init__(self, on_overflow: Callable[[], None]):
        super().__init__(logging.WARNING)
        self.on_overflow = on_overflow

    def emit(self, record: logging.LogRecord) -> None:
        if record.getMessage().startswith(self.MESSAGE):
            self.on_overflow()


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
                 moved: Callable[[str, str], bool], deleted: Callable[[str], None],
                 deleted_tree: Callable[[str], None] = lambda folder: None,
                 overflowed: Callable[[], None] = lambda: None,
                 roots_missing: Callable[[list[Path]], None] = lambda roots: None):
        self.filter = filt
        self.settings = watch
        self.landed, self.on_move, self.on_delete = landed, moved, deleted
        self.on_delete_tree, self.on_overflow, self.on_roots_missing = deleted_tree, overflowed, roots_missing
        self._roots: dict[Path, tuple[int, int] | None] = {}  # root -> (st_dev, st_ino) of the folder watched
        self._observer_of: dict[Path, BaseObserver] = {}  # root -> the observer watching it
        self.missing_roots: list[Path] = []
        self._roots_checked = 0.0
        self._tracked: dict[str, _Tracked] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self.observers: list = []
        self.polled_roots: list[Path] = []  # roots or sub-folders watched by polling
        self._inotify: dict[Path, BaseObserver] = {}  # root -> its inotify observer
        self._flat: dict[Path, BaseObserver] = {}  # folder watched without its sub-folders -> its observer
        self._suspects: dict[str, tuple[float, int]] = {}  # unwatched folder -> (found at, checks done)
        self.overflows = 0  # inotify queue overflows seen (metrics)
        self._alarm = _OverflowAlarm(self._overflowed)
        self._ticker = threading.Thread(target=self._tick_loop, name="settle", daemon=True)

    # --- lifecycle -----------------------------------------------------------------------------------

    def start(self) -> None:
        source = logging.getLogger("watchdog.observers.inotify_c")
        if source.getEffectiveLevel() > logging.WARNING:  # log_level = "ERROR" must not hide an overflow
            source.setLevel(logging.WARNING)
        source.addHandler(self._alarm)
        for root in self.filter.roots:
            root.mkdir(parents=True, exist_ok=True)
            self._watch(root)
        self._ticker.start()

    def _watch(self, root: Path) -> None:
        self._roots[root] = _identity(root)
        if self.settings.poll:
            self._observer_of[root] = self._poll(root)
            return
        observer = Observer()
        observer.start()  # started first: schedule() then starts each watch itself and raises per watch
        poller = self._watch_tree(observer, root)
        if poller is not None:  # the root's own watch was refused: nothing was scheduled on `observer`
            observer.stop()
            observer.join(1)
            self._observer_of[root] = poller
            return
        self.observers.append(observer)
        self._inotify[root] = self._observer_of[root] = observer
        self._suspect(str(root))

    def _watch_tree(self, observer: BaseObserver, folder: Path) -> BaseObserver | None:
        """Give `folder` and what is below it inotify watches on `observer`, polling only what the kernel
        refuses; returns the polling observer when `folder`'s own watch was refused. watchdog 7.1.0 skips
        a refused sub-folder (found later by `_suspect`); 7.1.1 and later give up the whole tree (and
        release its watches) when any folder in it is refused: then `folder` is watched alone and each
        sub-folder as its own tree, down to the folders refused. A move between two such trees reads as
        a delete and a create: the file is landed again, not lost."""
        follow = self.settings.follow_symlinks
        try:
            observer.schedule(self, str(folder), recursive=True, follow_symlink=follow)
            return None
        except OSError as exc:
            if exc.errno not in (errno.ENOSPC, errno.EMFILE):
                raise
        try:
            observer.schedule(self, str(folder), recursive=False, follow_symlink=follow)
        except OSError as exc:
            if exc.errno not in (errno.ENOSPC, errno.EMFILE):
                raise
            log.error(INOTIFY_HINT, folder)
            return self._poll(folder)
        with self._lock:
            self._flat[folder] = observer
        try:
            with os.scandir(folder) as it:
                subfolders = sorted(e.path for e in it if e.is_dir(follow_symlinks=follow))
        except OSError:
            return None  # gone meanwhile
        for sub in subfolders:  # one made from now on is found by `_suspect` and watched by `_recheck`
            self._watch_tree(observer, Path(sub))
        return None

    def _check_roots(self) -> None:
        """A root deleted, moved away or unmounted takes its watch with it, silently: nothing would land there
        again. Said loudly while it lasts (`roots_missing`: the daemon's health); when a folder is back under
        the root's name it is watched afresh and the owner rescans (`overflowed`) for what landed meanwhile."""
        missing, back = [], []
        for root, watched in self._roots.items():
            now = _identity(root)
            if now is not None and now == watched and root not in self.missing_roots:
                continue  # a root seen missing is back even under its old inode: a folder made again reuses it
            if now is not None and os.path.isdir(root):
                back.append(root)
            else:
                missing.append(root)
        for root in back:
            self._unwatch(root)
            self._watch(root)
            log.warning("watched root %s is there again: watching it and catching up", shown(str(root)))
        for root in missing:
            if root not in self.missing_roots:
                log.error("watched root %s is gone (deleted, moved away or unmounted): nothing there gets a verdict "
                          "until a folder is back under that name", shown(str(root)))
        if missing != self.missing_roots or back:
            self.missing_roots = missing
            self.on_roots_missing(missing)
        if back:
            self.on_overflow()

    def _unwatch(self, root: Path) -> None:
        old = self._observer_of.pop(root)
        self._inotify.pop(root, None)
        if root in self.polled_roots:
            self.polled_roots.remove(root)
        self.observers.remove(old)
        with self._lock:
            self._flat = {folder: o for folder, o in self._flat.items() if o is not old}
        old.stop()
        old.join(1)

    def _suspect(self, folder: str) -> None:
        """Note the folders at or below `folder` that have no inotify watch now, to be checked again:
        watchdog skips a folder refused after its watch has started, and 7.1.0 one refused at start, without
        raising; /proc/self/fdinfo lists the watches this process holds."""
        watched = inotify_watches()
        if watched is None:
            return  # no /proc to ask: trust watchdog
        now = time.monotonic()
        for dirpath, dirnames, _ in walk_folders(folder, self.settings.follow_symlinks, self.filter.watched):
            if self._polled(dirpath):
                dirnames[:] = []
                continue
            try:
                st = os.stat(dirpath)
            except OSError:
                continue  # gone meanwhile
            if (os.major(st.st_dev), os.minor(st.st_dev), st.st_ino) not in watched:
                with self._lock:
                    self._suspects.setdefault(dirpath, (now, 0))
                dirnames[:] = []  # its sub-folders are judged with it
            elif not self.settings.follow_symlinks:
                dirnames[:] = [d for d in dirnames if not os.path.islink(os.path.join(dirpath, d))]

    def _recheck(self) -> None:
        """Look again at folders found without a watch: watched by now (a race), gone, below a folder
        watched alone (watch it now: watchdog will not), refused by the kernel (poll that subtree), or
        still waiting (check again later, then poll it anyway)."""
        now = time.monotonic()
        with self._lock:
            due = [(f, n) for f, (found, n) in self._suspects.items() if now - found >= RECHECK_S[n]]
        if not due:
            return
        watched = inotify_watches() or set()
        for folder, checks in due:
            try:
                st = os.stat(folder)
            except OSError:
                st = None
            key = None if st is None else (os.major(st.st_dev), os.minor(st.st_dev), st.st_ino)
            refused = key is not None and key not in watched and kernel_refuses_watch(folder)
            with self._lock:
                if key is None or key in watched:
                    del self._suspects[folder]  # gone, or watchdog caught up: it was a race
                    continue
                observer = self._flat.get(Path(folder).parent)  # no watchdog watch comes below such a folder
                if not refused and observer is None and checks + 1 < len(RECHECK_S):
                    self._suspects[folder] = (self._suspects[folder][0], checks + 1)
                    continue
                del self._suspects[folder]
            if observer is not None:
                self._watch_tree(observer, Path(folder))
            else:
                if refused:
                    log.error(INOTIFY_HINT, folder)
                else:
                    log.warning("no inotify watch on %s after %.0f s although the kernel allows one; polling it",
                                shown(folder), RECHECK_S[-1])
                self._poll(Path(folder))
            self._land_tree(folder, settle=True)  # what arrived there unseen meanwhile

    def _polled(self, path: str) -> bool:
        p = Path(path)
        return any(p == folder or folder in p.parents for folder in self.polled_roots)

    def _overflowed(self) -> None:
        """Called on watchdog's reader thread: count, say why, and let the owner rescan."""
        self.overflows += 1
        try:
            with open("/proc/sys/fs/inotify/max_queued_events") as fh:
                limit = fh.read().strip()
        except OSError:
            limit = "?"
        log.error(OVERFLOW_HINT, limit)
        self.on_overflow()

    def settle(self, path: str) -> None:
        """Land `path` through the settle check (a file found by a rescan may still be being written)."""
        now = time.monotonic()
        with self._lock:
            self._tracked.setdefault(path, _Tracked(first_seen=now, last_event=now))

    def _poll(self, root: Path) -> BaseObserver:
        observer = PollingObserver(timeout=self.settings.poll_interval_s)
        observer.schedule(self, str(root), recursive=True)
        observer.start()
        self.observers.append(observer)
        self.polled_roots.append(root)
        return observer

    def stop(self) -> None:
        logging.getLogger("watchdog.observers.inotify_c").removeHandler(self._alarm)
        self._stop.set()
        observers = list(self.observers)
        for observer in observers:
            observer.stop()
        for observer in observers:
            observer.join(5)
        if self._ticker.is_alive():
            self._ticker.join(5)

    # --- events --------------------------------------------------------------------------------------

    def dispatch(self, event: FileSystemEvent) -> None:
        try:
            self._handle(event)
        except Exception:  # one odd event must never kill the observer thread
            log.exception("error handling %r", event)

    def _canonical(self, path: str) -> str:
        """With `follow_symlinks`, a path through a linked folder that is inside a root, named as that folder:
        watchdog names a folder reached twice (`loop -> .`) by the last name it found for it."""
        if not self.settings.follow_symlinks:
            return path
        folder = os.path.dirname(path)
        real = os.path.realpath(folder)
        return os.path.join(real, os.path.basename(path)) if real != folder and self.filter.watched(real) else path

    def _handle(self, event: FileSystemEvent) -> None:
        src = self._canonical(os.fsdecode(event.src_path))
        if isinstance(event, FileMovedEvent):
            dest = self._canonical(os.fsdecode(event.dest_path))
            with self._lock:
                tracked = self._tracked.pop(src, None)
            src_in, dest_in = self.filter.wanted(src), self.filter.wanted(dest)
            if dest_in and not (src_in and self.on_move(src, dest)):
                if tracked is not None:  # moved in from outside (a `created` only), or still being written:
                    with self._lock:      # the settle check goes on under the new name
                        self._tracked[dest] = tracked
                elif os.path.lexists(dest):  # (gone: moved on again, and that later move's event lands it)
                    self._land(dest)  # a temp name renamed into place, or a name the catalog never had
            elif src_in and not dest_in:
                self.on_delete(src)
            return
        if isinstance(event, DirDeletedEvent):  # removed, or moved out of the roots (an unpaired move)
            self.on_delete_tree(src)
            return
        if isinstance(event, DirMovedEvent | DirCreatedEvent):
            target = self._canonical(os.fsdecode(event.dest_path)) if isinstance(event, DirMovedEvent) else src
            if self.filter.root_of(target) in self._inotify:
                self._suspect(target)  # the settle thread checks again whether the kernel refused it
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
                    t.wrote = not self._polled(src)  # polling sees no close
                elif isinstance(event, FileOpenedEvent):
                    t.opens += 1
                elif isinstance(event, FileClosedNoWriteEvent):
                    t.opens = max(0, t.opens - 1)

    def _land(self, path: str) -> None:
        if not self.settings.follow_symlinks and os.path.islink(path):
            skipped_link(path)  # its target may lie outside the roots
            return
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
        self._recheck()
        now = time.monotonic()
        if now - self._roots_checked >= ROOT_CHECK_S:
            self._roots_checked = now
            self._check_roots()
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


def _identity(folder: Path) -> tuple[int, int] | None:
    """(st_dev, st_ino) of a folder, None when there is none under that name."""
    try:
        st = os.stat(folder)
    except OSError:
        return None
    return (st.st_dev, st.st_ino)


def kernel_refuses_watch(folder: str) -> bool:
    """Ask the kernel directly whether it would give `folder` an inotify watch (on a fresh instance,
    released at once): True only when it refuses for lack of watches (ENOSPC)."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        fd = libc.inotify_init1(os.O_CLOEXEC)
    except (OSError, AttributeError):
        return False
    if fd < 0:
        return ctypes.get_errno() == errno.ENOSPC
    try:
        wd = libc.inotify_add_watch(fd, os.fsencode(folder), 0x100)  # IN_CREATE
        return wd < 0 and ctypes.get_errno() == errno.ENOSPC
    finally:
        os.close(fd)


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
