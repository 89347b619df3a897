"""`dupwatch scan`: one-shot processing of files in a given order, as if they arrived in that order.

Runs the worker pipeline in-process (no Redis needed) against the same catalog and index the daemon
uses, so a scan is also a backfill. Output is one JSON object per input file, in input order, on stdout
(the contract in docs/api.md); progress goes to stderr.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from typing import TextIO

from daemon import __version__
from daemon.config import Settings
from daemon.events import VerdictEvent
from daemon.index.catalog import Catalog
from daemon.index.owner import IndexOwner, event_for
from daemon.notify import outbox
from daemon.notify.sinks import CommandSink, EventLog
from daemon.state import StateDir
from daemon.text import dumps
from workers.models.loading import load_models
from workers.pipeline import Pipeline


def scan_record(event: VerdictEvent) -> dict:
    best = event.best
    return {"path": event.file.path, "verdict": event.kind, "match": best.file.path if best else None,
            "score": best.score if best else None, "hash_distance": best.hash_distance if best else None,
            "reason": event.reason, "edit": best.edit if best else None}


def run_scan(settings: Settings, paths: Iterable[str], out: TextIO = sys.stdout, total: int | None = None,
             progress: bool = False) -> dict[str, int]:
    """Process `paths` in order; write one JSON line per path. Returns verdict counts."""
    state = StateDir(settings.state_dir)
    state.acquire()
    catalog = Catalog(state.catalog)
    with catalog.checked():
        catalog.conn.executescript(outbox.SCHEMA)
        owner = IndexOwner(settings, catalog)
    embedder, copier, _status = load_models(settings)
    pipeline = Pipeline(settings.decode, embedder, copier, follow_symlinks=settings.watch.follow_symlinks)
    counts: dict[str, int] = {}
    bar = _progress(total) if progress else None
    commands = CommandSink(settings.commands)
    ahead = ThreadPoolExecutor(max_workers=1, thread_name_prefix="scan-ahead")
    try:
        _finish_leftovers(settings, catalog, owner, pipeline, [EventLog(state.events), commands])
        previous: tuple[list[int], int, Future] | None = None
        previous_paths: set[str] = set()
        for batch in _batches(paths, settings.model.batch_size):
            batch = [os.path.abspath(p) for p in batch]
            if previous is not None and not previous_paths.isdisjoint(batch):
                # a path listed again lands after its earlier listing is decided, as without the overlap
                _finish(owner, catalog, *previous, out, counts, bar)
                previous = None
            ids, todo = _register(owner, catalog, batch)
            # This batch decodes (and runs its models) in the background while the previous one is decided:
            # its rows are pending, so the previous batch's verdicts cannot see them, and each file's features
            # depend on nothing but the file.
            running = ahead.submit(pipeline.run, todo)
            if previous is not None:
                _finish(owner, catalog, *previous, out, counts, bar)
            previous, previous_paths = (ids, len(todo), running), set(batch)
        if previous is not None:
            _finish(owner, catalog, *previous, out, counts, bar)
        owner.save()
    finally:
        ahead.shutdown(wait=True, cancel_futures=True)
        if bar is not None:
            bar.close()
        commands.close()
        pipeline.close()
        catalog.close()
        state.release()
    return counts


def _register(owner: IndexOwner, catalog: Catalog, batch: list[str]) -> tuple[list[int], list[tuple[int, str]]]:
    """Land a batch (absolute paths) in the catalog: every path's row id, and the (id, path) of those to process."""
    ids: list[int] = []
    todo: list[tuple[int, str]] = []
    landed = [(path, *_stat(path)) for path in batch]
    for (path, _size, _mtime), new_id in zip(landed, owner.register_many(landed), strict=True):
        if new_id is None:  # this exact version was already decided: report it as it stands
            row = catalog.by_path(path)
            assert row is not None  # register() just found its current row
            ids.append(row.id)
        else:
            ids.append(new_id)
            todo.append((new_id, path))
    return ids, todo


def _finish(owner: IndexOwner, catalog: Catalog, ids: list[int], processed: int, running: Future, out: TextIO,
            counts: dict[str, int], bar) -> None:
    """Store a batch's features, decide it, and write its lines in input order."""
    owner.accept(running.result())
    decided = {e.file.id: e for e in owner.decide_ready(limit=processed + 1_000_000)}
    for file_id in ids:
        event = decided.get(file_id)
        if event is None:  # decided earlier: its verdict as the catalog holds it
            row = catalog.get(file_id)
            assert row is not None  # registered above, and rows are never removed
            event = event_for(row, catalog)
        counts[event.kind] = counts.get(event.kind, 0) + 1
        out.write(dumps(scan_record(event)) + "\n")
    out.flush()
    if bar is not None:
        bar.update(len(ids))


def _finish_leftovers(settings: Settings, catalog: Catalog, owner: IndexOwner, pipeline: Pipeline,
                      sinks: list) -> None:
    """Decide the files a stopped daemon left undecided, as the daemon would have: their verdicts go to
    the event log, the commands and the webhook outbox (sent at the daemon's next start), since whoever dropped them in a watched root expects those alerts. The scan's own
    files are a backfill and only print their lines."""
    undecided = catalog.query("SELECT count(*) AS n FROM files WHERE state != 'decided'")[0]["n"]
    if not undecided:
        return
    leftover = [(r.id, r.path) for r in catalog.pending()]
    for start in range(0, len(leftover), settings.model.batch_size):
        owner.accept(pipeline.run(leftover[start:start + settings.model.batch_size]))
    owner.sinks, owner.on_commit = sinks, _outbox_hook(settings)
    try:
        owner.decide_ready(limit=undecided)
    finally:
        owner.sinks, owner.on_commit = [], None


def _outbox_hook(settings: Settings):
    """The daemon's outbox hook (Daemon._outbox): the verdict's webhook rows commit with the verdict."""
    return lambda conn, event: outbox.enqueue(conn, settings.webhooks, event, __version__)


def _stat(path: str) -> tuple[int | None, int | None]:
    try:
        st = os.stat(path)
        return st.st_size, st.st_mtime_ns
    except OSError:
        return None, None  # the worker will record why (vanished, unreadable) as an error verdict


def _batches(paths: Iterable[str], size: int) -> Iterator[list[str]]:
    batch: list[str] = []
    for p in paths:
        batch.append(p)
        if len(batch) >= size:
            yield batch
            batch = []
    if batch:
        yield batch


def _progress(total: int | None):
    from tqdm import tqdm

    return tqdm(total=total, unit="img", file=sys.stderr, disable=not sys.stderr.isatty())
