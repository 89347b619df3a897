"""Which paths dupwatch looks at: one filter for the live watcher, the catch-up scan and `scan DIR`.

Temp names (partial downloads, editors' swap files, dotfiles) are ignored until renamed into place;
excluded folders are pruned so they are never walked or watched; symlinks are not followed unless asked.
"""

from __future__ import annotations

import fnmatch
import logging
import os
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

from daemon.config import WatchSettings
from daemon.text import shown

log = logging.getLogger(__name__)

TEMP_SUFFIXES = (".part", ".partial", ".tmp", ".temp", ".crdownload", ".download", ".swp", "~")
"""Names writers use while a file is incomplete; the final rename is what dupwatch acts on."""


class PathFilter:
    def __init__(self, roots: Sequence[Path], watch: WatchSettings):
        # Resolved once: below a root, paths then name real folders, so a worker can tell a file reached
        # through a symbolic link (workers.image.decode.read_file) from one that is really inside the root.
        self.roots = [Path(os.path.realpath(r)) for r in roots]
        self.include = [g.lower() for g in watch.include]
        self.exclude = watch.exclude
        self.follow_symlinks = watch.follow_symlinks

    def root_of(self, path: str) -> Path | None:
        p = Path(os.path.abspath(path))
        for root in self.roots:
            if p == root or root in p.parents:
                return root
        return None

    def watched(self, real_path: str) -> bool:
        """Whether a real (link-free) path lies inside a root, where it is watched under its own name."""
        return self.root_of(real_path) is not None

    def excluded(self, path: str) -> bool:
        """True for paths under an excluded folder or matching an exclude glob (relative to its root)."""
        root = self.root_of(path)
        if root is None:
            return True
        rel = os.path.relpath(path, root)
        parts = Path(rel).parts
        for pattern in self.exclude:
            if fnmatch.fnmatch(rel, pattern) or any(fnmatch.fnmatch(part, pattern) for part in parts):
                return True
        return any(part.startswith(".") for part in parts)

    def wanted(self, path: str) -> bool:
        """A file dupwatch should give a verdict: inside a root, included, not temp, not excluded."""
        name = os.path.basename(path)
        if name.startswith(".") or name.lower().endswith(TEMP_SUFFIXES):
            return False
        if not any(fnmatch.fnmatch(name.lower(), g) for g in self.include):
            return False
        return not self.excluded(path)

    def walk(self) -> Iterator[str]:
        """Every wanted path under the roots, pruning excluded folders."""
        for root in self.roots:
            for dirpath, dirnames, filenames in walk_folders(root, self.follow_symlinks, self.watched):
                dirnames[:] = sorted(d for d in dirnames if not self.excluded(os.path.join(dirpath, d)))
                for name in sorted(filenames):
                    path = os.path.join(dirpath, name)
                    if not self.follow_symlinks and os.path.islink(path):
                        skipped_link(path)
                        continue
                    if self.wanted(path):
                        yield path


def walk_folders(top: str | Path, follow_symlinks: bool,
                 watched: Callable[[str], bool] = lambda path: False) -> Iterator[tuple[str, list[str], list[str]]]:
    """os.walk, and with `follow_symlinks`: a linked folder whose real path is `watched` (inside a root) is
    not followed, since it is walked under its own name (a link to it would catalogue its files twice, each
    a copy of itself, and `loop -> .` would be walked again to the kernel's 40-link limit); each real folder
    outside is walked once (a loop among them ends). Each refused link is said once."""
    seen: set[tuple[int, int]] = set()
    for dirpath, dirnames, filenames in os.walk(top, followlinks=follow_symlinks):
        if follow_symlinks:
            try:
                st = os.stat(dirpath)
            except OSError:
                dirnames[:] = []
                continue
            if (st.st_dev, st.st_ino) in seen:
                _refuse(dirpath)
                dirnames[:] = []
                continue
            seen.add((st.st_dev, st.st_ino))
            linked = [d for d in dirnames if os.path.islink(os.path.join(dirpath, d))
                      and watched(os.path.realpath(os.path.join(dirpath, d)))]
            for d in linked:
                _refuse(os.path.join(dirpath, d))
            dirnames[:] = [d for d in dirnames if d not in linked]
        yield dirpath, dirnames, filenames


_refused: set[str] = set()
_skipped: set[str] = set()


def skipped_link(path: str) -> None:
    """Say once that a symbolic link is not followed (and gets no verdict): its target may lie outside the
    roots, which are all dupwatch reads."""
    if path not in _skipped:
        _skipped.add(path)
        log.info("skipping %s: a symbolic link (watch.follow_symlinks is off)", shown(path))


def _refuse(link: str) -> None:
    if link not in _refused:
        _refused.add(link)
        log.error("symbolic link %s leads to %s, a folder already watched (a symlink loop, or a second name for "
                  "it): not followed", shown(link), shown(os.path.realpath(link)))


def walk_roots(roots: Sequence[Path], watch: WatchSettings) -> Iterator[str]:
    return PathFilter(roots, watch).walk()
