"""The `dupwatch` command line. Kept apart from the logic it calls (as rq keeps its CLI in one module).

Flags mirror settings: `--section-key` sets `section.key`. Only the common ones are flags; every setting
is reachable through the TOML file and `DUPWATCH_*` environment variables.
"""

from __future__ import annotations

from daemon.service.held import hold_hup

hold_hup()  # before the imports below (a second or more): a SIGHUP while `run` starts would end it

import json
import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import click

from daemon import __version__
from daemon.cli.options import common, settings_from
from daemon.cli.webhook import webhook
from daemon.events import KINDS
from daemon.text import dumps, shown


@contextmanager
def _start_errors() -> Iterator[None]:
    """A start-up failure (state dir owned, port taken, model required) is a message, not a traceback."""
    try:
        yield
    except RuntimeError as exc:
        fix = getattr(exc, "fix", None)
        raise click.ClickException(f"{exc}\nfix: {fix}" if fix else str(exc)) from exc


def _existing_state(state_dir: Path) -> None:
    """Readers of a state dir (status, matches) refuse one that does not exist, rather than make it and report
    an empty catalog: a typo in --state-dir must not look like a daemon that saw nothing."""
    if not Path(state_dir).expanduser().is_dir():
        raise click.ClickException(f"no state dir at {state_dir}: nothing has run there (set --state-dir or "
                                   "DUPWATCH_STATE_DIR to the daemon's)")


@click.group()
@click.version_option(__version__, prog_name="dupwatch")
def cli() -> None:
    """Watch folders and flag exact, edited and similar copies of images as they land."""


@cli.command()
@common
@click.argument("roots", nargs=-1, required=True, type=click.Path(file_okay=False))
@click.option("--workers", type=int, help="Worker processes to start (default 1).")
@click.option("--watch-poll", is_flag=True, default=None, help="Poll instead of inotify (network mounts).")
@click.option("--api-host")
@click.option("--api-port", type=int)
def run(roots: tuple[str, ...], **params: Any) -> None:
    """Everything in one process tree: private Redis, watcher, workers, index, API."""
    from daemon.service.runner import run_all

    settings = settings_from(dict(params))
    with _start_errors():
        sys.exit(run_all(settings, [Path(r) for r in roots], reload=lambda: settings_from(dict(params), logs=False)))


@cli.command()
@common
@click.argument("roots", nargs=-1, type=click.Path(file_okay=False))
@click.option("--watch-poll", is_flag=True, default=None)
@click.option("--api-host")
@click.option("--api-port", type=int)
def daemon(roots: tuple[str, ...], **params: Any) -> None:
    """The watcher and index owner, for a fleet: workers run elsewhere against the same Redis.

    ROOTS default to the `watch.roots` setting (how the systemd unit starts it)."""
    from daemon.service.runner import run_daemon

    settings = settings_from(dict(params))
    with _start_errors():
        sys.exit(run_daemon(settings, [Path(r) for r in roots], reload=lambda: settings_from(dict(params), logs=False)))


@cli.command()
@common
@click.option("--name", help="Worker name (default: dupwatch-HOST-PID).")
@click.option("--burst", is_flag=True, help="Exit when the queue is empty.")
def worker(name: str | None, burst: bool, **params: Any) -> None:
    """Take batch jobs from Redis: decode, hash, embed. Start one per GPU or CPU slot."""
    from workers.worker import run_worker

    settings = settings_from(params)
    if not settings.redis.url:
        raise click.ClickException("a worker needs --redis-url (or DUPWATCH_REDIS__URL)")
    with _start_errors():
        run_worker(settings, settings.redis.url, name=name, burst=burst,
                   follow_symlinks=settings.watch.follow_symlinks, roots=settings.watch.roots)


@cli.command()
@common
@click.argument("roots", nargs=-1, type=click.Path(exists=True))
@click.option("--files-from", type=click.File("r"), help="Read paths, one per line ('-' for stdin).")
def scan(roots: tuple[str, ...], files_from, **params: Any) -> None:
    """Process files once, in order; print one JSON line per file."""
    from daemon.cli.scan import run_scan
    from daemon.ingest.walk import walk_roots

    settings = settings_from(params)
    if files_from is not None:
        paths = [line.rstrip("\n") for line in files_from if line.strip()]
    elif roots:
        paths = list(walk_roots([Path(r) for r in roots], settings.watch))
    else:
        raise click.UsageError("give ROOTS or --files-from")
    with _start_errors():
        counts = run_scan(settings, paths, total=len(paths), progress=True)
    click.echo("scan: " + (", ".join(f"{n} {k}" for k, n in sorted(counts.items())) or "nothing"), err=True)


@cli.command()
@common
@click.argument("image", type=click.Path(exists=True, dir_okay=False))
@click.option("--top-k", type=int, default=5, show_default=True)
@click.option("--json", "as_json", is_flag=True)
def query(image: str, top_k: int, as_json: bool, **params: Any) -> None:
    """Top matches for any image among the catalogued files (read-only)."""
    from daemon.views.search import search_image

    settings = settings_from(params)
    with _start_errors():
        try:
            results = search_image(settings, image, top_k)
        except ValueError as exc:  # the image's decode error, as its worker recorded it
            raise click.ClickException(f"cannot search {exc}") from None
    if as_json:
        click.echo(json.dumps(results, indent=2))
        return
    if not results:
        click.echo("no matches")
    for r in results:
        click.echo(f"{r['score']:5.1f}  {r['kind']:<12} {shown(r['path'])}  ({r['signal']})")


@cli.command()
@common
@click.option("--json", "as_json", is_flag=True)
def status(as_json: bool, **params: Any) -> None:
    """Files, verdict counts, errors, queue depths, workers, model."""
    from daemon.views.status import collect, render

    settings = settings_from(params)
    _existing_state(settings.state_dir)
    data = collect(settings)
    click.echo(json.dumps(data, indent=2) if as_json else render(data))


@cli.command()
@common
@click.option("--kind", type=click.Choice(KINDS))
@click.option("--limit", type=int, default=50, show_default=True)
@click.option("--json", "as_json", is_flag=True)
def matches(kind: str | None, limit: int, as_json: bool, **params: Any) -> None:
    """Recent verdicts that found a match (or errors)."""
    from daemon.views.status import recent

    settings = settings_from(params)
    _existing_state(settings.state_dir)
    rows = recent(settings, kind, limit)
    if as_json:
        for r in rows:
            click.echo(json.dumps(r))
        return
    for r in rows:
        mark = "  [marked: not a duplicate]" if r["not_duplicate"] else ""
        summary = f"  ({shown(r['edit']['summary'])})" if r["edit"] else ""
        click.echo(f"{r['kind']:<12} {shown(r['path'])}  {shown(r.get('match') or r.get('reason') or '')}  "
                   f"{'' if r.get('score') is None else round(r['score'])}{summary}{mark}")


@cli.command()
@common
@click.option("--json", "as_json", is_flag=True, help="One JSON document: {\"groups\": [...]}, written as it is read.")
@click.option("--html", "html_file", type=click.Path(dir_okay=False, writable=True),
              help="Write an offline contact sheet (thumbnails embedded): this file holds the first page and "
                   "links to the others, written beside it.")
@click.option("--per-page", type=click.IntRange(1), default=100, show_default=True, help="Groups per HTML page.")
def groups(as_json: bool, html_file: str | None, per_page: int, **params: Any) -> None:
    """Duplicate groups: each original (earliest file) with its copies and what was edited."""
    from daemon.views import groups as duplicate_groups
    from daemon.views.status import read_only_catalog

    settings = settings_from(params)
    conn = read_only_catalog(settings)
    if html_file:
        pages = duplicate_groups.write_html(conn, Path(html_file), per_page, max_pixels=settings.decode.max_pixels,
                                            max_bytes=settings.decode.max_file_bytes)
        click.echo(f"wrote {html_file}: {pages.groups} groups on {pages.pages} page(s)", err=True)
    if as_json:
        click.echo('{"groups": [', nl=False)
        for n, group in enumerate(duplicate_groups.each(conn) if conn is not None else ()):
            click.echo(("," if n else "") + "\n" + dumps(group.to_dict()), nl=False)
        click.echo("\n]}")
    elif not html_file:
        click.echo(duplicate_groups.render_text(duplicate_groups.each(conn) if conn is not None else iter(())))
    if conn is not None:
        conn.close()


cli.add_command(webhook)


def main() -> None:
    # Before torch is first imported (OpenMP reads it once): spinning OpenMP threads would take the cores
    # from the decode threads and from other processes between batches (800x slower small ops, measured).
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    one_blas_thread()
    few_malloc_arenas()
    cli()


def one_blas_thread() -> None:
    """Run numpy's BLAS (OpenBLAS) on the calling thread only. dupwatch parallelises with its own threads
    (decode, verification pool), so BLAS threads add no speed, and theirs spin between calls on cores those
    threads need: an alignment's colour fit (a least-squares fit and a 200 k x 4 product) cost 130-170
    CPU-ms with numpy's default 2 threads and 55 with one, with the same results.
    numpy loaded its BLAS when this module was imported, too late for OPENBLAS_NUM_THREADS."""
    from threadpoolctl import threadpool_limits

    threadpool_limits(1, user_api="blas")


MALLOC_ARENAS = 2
"""glibc malloc arenas the process's threads share (its default: 8 per core, one per thread that allocates)."""


def few_malloc_arenas() -> None:
    """Share MALLOC_ARENAS malloc arenas among all threads (glibc; elsewhere nothing changes). Each decode and
    verification thread otherwise gets an arena of its own, which keeps the freed buffers of its last image
    (SIFT's pyramid at 1024 px, decoded pictures): a scan of 600 small JPEGs peaked at 441 MiB with them and
    403-425 MiB with 2, with 4-6 s of system CPU instead of 20 and the same verdicts. Before any
    thread starts: arenas already made stay."""
    import ctypes

    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (AttributeError, OSError):
        return
    mallopt(-8, MALLOC_ARENAS)  # M_ARENA_MAX
