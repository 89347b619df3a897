"""The HTTP API and the review page, served by uvicorn on a thread inside the daemon process.

Why inside the daemon: the API needs the live in-memory index (search by upload) and the webhook sender's
counters (/metrics), and a second process would have to rebuild the one and could not see the other.

Who touches what:
- Reads (files, matches, thumbnails, metrics, readiness) use their own read-only SQLite connection per
  request. WAL lets them run beside the owner's writes without blocking it or seeing half a verdict.
- The owner's in-memory hash table and usearch index are touched only by the daemon's main loop: they
  take no locks, and usearch may reallocate while adding. So a search extracts the upload's features
  here (the slow part) and hands only the ranking to the main loop through `LoopCalls`.
- The one write, marking a pair "not a duplicate", goes through `LoopCalls` too, so the owner stays the
  single writer in practice as well as in name: a mark commits between two verdict batches, never in
  the middle of one, and every verdict decided after the reply excludes the pair. (Catalog.transaction
  from this thread would also be serialised by the catalog's lock; the queue was chosen because it keeps
  the rule "only the main loop changes what the owner decides from" without exceptions.)

Nothing is ever read from a path the request names: files are addressed by catalog id only, and a
thumbnail is served only for a current, undeleted catalog row inside a watched root whose bytes still
hash to the catalogued sha256 (docs/guarantees.md: nothing is read outside the watched roots).
"""

from __future__ import annotations

import ctypes
import hashlib
import io
import json
import logging
import queue
import secrets
import socket
import sqlite3
import tempfile
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterator
from concurrent.futures import CancelledError, Future
from concurrent.futures import TimeoutError as FutureTimeout
from datetime import UTC, datetime
from importlib.resources import files as package_files
from typing import TYPE_CHECKING, Annotated, Any, TypeVar
from urllib.parse import urlsplit

import redis
import uvicorn
from fastapi import Depends, FastAPI, HTTPException, Query, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import HTMLResponse, JSONResponse, Response
from pydantic import BaseModel
from starlette.middleware.trustedhost import TrustedHostMiddleware

from daemon import __version__, defaults
from daemon.api.metrics import Metrics
from daemon.api.port import DaemonPort
from daemon.events import Kind
from daemon.index.catalog import read_only_connection
from daemon.index.rebuilds import describe
from daemon.text import dumps
from daemon.views import groups as duplicate_groups
from daemon.views.matches import page as matches_page
from daemon.views.search import PROBE_ID, probe_row
from daemon.views.status import redis_status
from workers import queue as q
from workers.decode import DecodeError, check_header, decode_bytes, read_file

if TYPE_CHECKING:
    from workers.pipeline import Pipeline

log = logging.getLogger(__name__)

T = TypeVar("T")

LOOP_CALL_TIMEOUT_S = 30.0
"""How long a request waits for the main loop before answering 503 (the loop is stuck or stopping)."""

LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "::1")
"""Host headers accepted while bound to loopback: anything else is a DNS-rebinding page, not a user."""

THUMBNAIL_CACHE = 512
"""Thumbnails kept in memory (about 10 KB each): a review page of 50 pairs is served from memory."""

SEARCHES_AT_ONCE = 4
"""Searches admitted at a time, upload included; more get 503 and Retry-After. Each holds its upload
(up to api.max_upload_bytes, and copies of it while a form is parsed) until it is answered, so 50
parallel uploads would otherwise hold 50 bodies while they queue for the one search thread."""


class ShuttingDown(Exception):
    """The daemon is stopping: the main loop will run no more calls."""


class LoopCalls:
    """Functions the API threads hand to the daemon's main loop, which runs them between its steps."""

    def __init__(self) -> None:
        self._queue: queue.SimpleQueue[tuple[Callable[[], Any], Future]] = queue.SimpleQueue()
        self._closed = False
        self._lock = threading.Lock()

    def call(self, fn: Callable[[], T], timeout: float = LOOP_CALL_TIMEOUT_S) -> T:
        future: Future = Future()
        with self._lock:
            if self._closed:
                raise ShuttingDown()
            self._queue.put((fn, future))
        try:
            return future.result(timeout)
        except CancelledError:
            raise ShuttingDown() from None

    def run_pending(self) -> None:
        """Called by the main loop on every pass."""
        while True:
            try:
                fn, future = self._queue.get_nowait()
            except queue.Empty:
                return
            if not future.set_running_or_notify_cancel():
                continue
            try:
                future.set_result(fn())
            except Exception as exc:  # noqa: BLE001 - the caller re-raises it in its own thread
                future.set_exception(exc)

    def close(self) -> None:
        """Refuse new calls and cancel waiting ones, so no request hangs on a loop that has ended."""
        with self._lock:
            self._closed = True
        while True:
            try:
                _fn, future = self._queue.get_nowait()
            except queue.Empty:
                return
            future.cancel()


class NameSafeJSON(JSONResponse):
    """JSON that carries any file name: Starlette's encoder fails on the surrogate escapes of a name that
    is not UTF-8 (daemon.text), which would turn a listing that includes one such file into a 500."""

    def render(self, content: Any) -> bytes:
        return dumps(content, allow_nan=False, separators=(",", ":")).encode("utf-8")


class NotDuplicate(BaseModel):
    """A pair the reviewer says is not a duplicate: `file` was flagged as a copy of `match`."""

    file: int
    match: int


class ApiServer:
    """uvicorn on its own thread, bound before start() returns so a taken port fails the daemon's start."""

    def __init__(self, daemon: DaemonPort):
        self.daemon = daemon
        self.calls = LoopCalls()
        settings = daemon.settings.api
        # Its own client with short timeouts: /readyz must answer "Redis down" quickly, not after 30 s.
        self.redis = q.connect(daemon.redis_url, timeout_s=2)
        self.metrics = Metrics(daemon, self.read_catalog, self.redis)
        daemon.add_sink(self.metrics.observe)
        self._thumbs: OrderedDict[tuple, bytes] = OrderedDict()
        self._thumbs_lock = threading.Lock()
        self._search_lock = threading.Lock()
        self.search_slots = threading.BoundedSemaphore(SEARCHES_AT_ONCE)
        self._pipeline: Pipeline | None = None
        self.app = create_app(self)
        self.server = uvicorn.Server(uvicorn.Config(
            self.app, host=settings.host, port=settings.port, log_config=None, access_log=False, lifespan="off",
            timeout_graceful_shutdown=5))
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        host, port = self.daemon.settings.api.host, self.daemon.settings.api.port
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        api = self.daemon.settings.api
        if host not in LOOPBACK_HOSTS and not api.token and not api.allow_no_token:
            raise RuntimeError(f"api.host = {host} is not loopback and api.token is unset: anyone who can reach "
                               "it would read the catalog and its thumbnails. Set api.token (env DUPWATCH_API__TOKEN), "
                               "or api.allow_no_token = true to serve it open on purpose")
        try:
            sock = socket.create_server((host, port), family=family)
        except OSError as exc:
            raise RuntimeError(f"API cannot listen on {host}:{port} ({exc.strerror}): set api.port, or "
                               "api.enabled = false") from exc
        self._thread = threading.Thread(target=self.server.run, kwargs={"sockets": [sock]}, name="api",
                                        daemon=True)
        self._thread.start()
        deadline = time.monotonic() + 10
        while not self.server.started and self._thread.is_alive() and time.monotonic() < deadline:
            time.sleep(0.01)
        if not self.server.started:
            raise RuntimeError(f"API on {host}:{port} did not start")
        auth = "bearer token required" if self.daemon.settings.api.token else "no token"
        log.info("API and review page on http://%s:%d/ (%s)", host if family == socket.AF_INET else f"[{host}]",
                 port, auth)
        if host not in LOOPBACK_HOSTS and not self.daemon.settings.api.token:
            log.warning("the API listens on %s without api.token (api.allow_no_token): anyone who can reach it "
                        "can read the catalog and see thumbnails", host)

    def stop(self) -> None:
        self.calls.close()
        self.server.should_exit = True
        if self._thread is not None:
            self._thread.join(10)
        if self._pipeline is not None:
            self._pipeline.close()
        self.redis.close()

    # --- helpers the routes share ------------------------------------------------------------------

    def read_catalog(self) -> sqlite3.Connection:
        """A read-only connection: the API can never write the catalog by accident."""
        return read_only_connection(self.daemon.catalog_path)

    def on_loop(self, fn: Callable[[], T]) -> T:
        try:
            return self.calls.call(fn)
        except ShuttingDown:
            raise HTTPException(503, "dupwatch is shutting down") from None
        except FutureTimeout:
            raise HTTPException(503, "the daemon's main loop did not answer in time; try again") from None

    def thumbnail(self, row: sqlite3.Row, px: int) -> bytes:
        """A JPEG of a catalogued file, checked against its catalogued sha256 before it is served."""
        if row["state"] != "decided" or row["sha256"] is None:
            raise HTTPException(404, "no image for this file (not decided yet, or an error verdict)")
        if not row["current"] or row["deleted_at"] is not None:
            raise HTTPException(404, "this file was deleted or replaced since it was catalogued")
        if not self.daemon.in_watched_root(row["path"]):
            raise HTTPException(404, "this file is no longer inside a watched root")
        key = (row["id"], px, row["sha256"])
        with self._thumbs_lock:
            if key in self._thumbs:
                self._thumbs.move_to_end(key)
                return self._thumbs[key]
        decode = self.daemon.settings.decode
        try:
            data = read_file(row["path"], decode.max_file_bytes,
                             follow_symlinks=self.daemon.settings.watch.follow_symlinks)
            if hashlib.sha256(data).hexdigest() != row["sha256"]:
                raise HTTPException(404, "the file changed on disk since it was catalogued")
            image = decode_bytes(data, size=px, max_pixels=decode.max_pixels,
                                 max_full_pixels=decode.max_full_pixels).image
        except DecodeError as exc:
            raise HTTPException(404, f"cannot read this file now: {exc.reason}") from None
        image.thumbnail((px, px))
        out = io.BytesIO()
        image.save(out, "JPEG", quality=85)
        jpeg = out.getvalue()
        with self._thumbs_lock:
            self._thumbs[key] = jpeg
            while len(self._thumbs) > THUMBNAIL_CACHE:
                self._thumbs.popitem(last=False)
        return jpeg

    def search(self, data: bytes, top_k: int) -> dict[str, Any]:
        """Features here (decode, hashes, embedding: the slow part), ranking on the main loop."""
        with self._search_lock:  # one search at a time: each is CPU-bound, and the pipeline is shared
            pipeline = self._search_pipeline()
            try:
                with tempfile.NamedTemporaryFile(prefix="dupwatch-search-") as tmp:
                    tmp.write(data)
                    tmp.flush()
                    feats = pipeline.run([(PROBE_ID, tmp.name)])[0]  # the decode files get (JPEG draft)
            finally:
                release_memory()
        if feats.error:
            raise HTTPException(422, f"not a usable image: {feats.error}")
        probe = probe_row(feats)
        results = self.on_loop(lambda: self.daemon.rank(probe, top_k))
        for r in results:
            r["thumbnail"] = f"/api/v1/files/{r['id']}/thumbnail"
        return {"results": results, "signals": self.on_loop(lambda: self.daemon.signals(probe))}

    def _search_pipeline(self) -> Pipeline:
        """Load the model on the first search, not at start: most daemons are never searched."""
        if self._pipeline is None:
            from workers.models.loading import load_models
            from workers.pipeline import Pipeline

            embedder, copier, _status = load_models(self.daemon.settings)
            one_thread = self.daemon.settings.decode.model_copy(update={"threads": 1})
            self._pipeline = Pipeline(one_thread, embedder, copier, follow_symlinks=True)  # only its own temp files
        return self._pipeline


def release_memory() -> None:
    """Hand the memory a search freed back to the OS. A big upload's decode frees hundreds of MB, but
    glibc keeps freed blocks in its heaps (the daemon's RSS stayed at its peak for good); malloc_trim
    returns them. Elsewhere than glibc: nothing to do."""
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


def _authorised(request: Request) -> None:
    """Bearer token check, read per request so a SIGHUP that changes api.token applies at once."""
    token = request.app.state.api.daemon.settings.api.token
    if not token:
        return
    scheme, _, given = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not secrets.compare_digest(given.encode(), token.get_secret_value().encode()):
        raise HTTPException(401, "a valid bearer token is required (api.token)",
                            headers={"WWW-Authenticate": "Bearer"})


def _catalog(request: Request) -> Iterator[sqlite3.Connection]:
    conn = request.app.state.api.read_catalog()
    try:
        yield conn
    finally:
        conn.close()


Auth = Depends(_authorised)
DB = Annotated[sqlite3.Connection, Depends(_catalog)]


def create_app(api: ApiServer) -> FastAPI:
    daemon = api.daemon
    app = FastAPI(title="dupwatch", version=__version__, docs_url=None, redoc_url=None,
                  openapi_url="/api/v1/openapi.json", default_response_class=NameSafeJSON)
    if daemon.settings.api.host in LOOPBACK_HOSTS:
        app.add_middleware(TrustedHostMiddleware, allowed_hosts=["127.0.0.1", "localhost", "[::1]"])
    review_page = package_files("daemon.api").joinpath("review.html").read_text(encoding="utf-8")

    app.state.api = api

    # --- open: liveness and the page shell (it holds no data; its requests carry the token) ----------

    @app.get("/healthz")
    def healthz() -> dict[str, Any]:
        """The process is alive and serving HTTP; "degraded" (still 200: it is waiting, and recovers by
        itself, so a liveness probe must not restart it) while Redis is down or the disk is full."""
        degraded = daemon.degraded()
        return {"status": "degraded" if degraded else "ok", "degraded": degraded, "version": __version__,
                "uptime_s": round(time.time() - daemon.started_at, 1)}

    @app.get("/", response_class=HTMLResponse)
    def review() -> HTMLResponse:
        return HTMLResponse(review_page, headers={"Cache-Control": "no-store"})

    # --- behind the token ----------------------------------------------------------------------------

    @app.get("/readyz", dependencies=[Auth])
    def readyz(db: DB) -> Response:
        """Ready: Redis answers, the model is loaded in a worker (or hash-only by choice), index open."""
        checks: dict[str, dict[str, Any]] = {}
        try:
            live = redis_status(api.redis, daemon.settings)
            checks["redis"] = {"ok": True, "detail": "ok, " + ", ".join(f"{k} {v}" for k, v in live["queues"].items())}
            checks["copy_model"] = _copy_model_check(live)
            checks["model"] = _model_check(live)
        except redis.RedisError as exc:
            checks["redis"] = {"ok": False, "detail": f"unreachable: {exc}"}
            checks["copy_model"] = {"ok": False, "detail": "unknown: workers report through Redis"}
            checks["model"] = {"ok": False, "detail": "unknown: workers report through Redis"}
        pending = db.execute("SELECT count(*) FROM files WHERE state != 'decided'").fetchone()[0]
        index = daemon.index_state()
        checks["index"] = ({"ok": False, "detail": "stopping"} if index.stopping else
                           {"ok": True, "detail": f"{index.hashed} hashed, {index.copy_vectors} copy vectors, "
                                                  f"{index.vectors} semantic vectors, {pending} "
                                                  f"pending{'' if index.catchup_done else ', catch-up scan running'}"
                                                  + (f"; partial: {describe(list(index.rebuilding))}"
                                                     if index.rebuilding else "")})
        degraded = daemon.degraded()
        if degraded:  # waiting (Redis down, disk full): not ready, and why
            waits = "; ".join(f"{reason}: {detail}" for reason, detail in degraded.items())
            checks["index"] = {"ok": False, "detail": f"degraded: {waits}"}
        ready = all(c["ok"] for c in checks.values())
        return JSONResponse({"ready": ready, "checks": checks}, 200 if ready else 503)

    @app.get("/metrics", dependencies=[Auth])
    def metrics() -> Response:
        from prometheus_client import CONTENT_TYPE_LATEST

        return Response(api.metrics.render(), media_type=CONTENT_TYPE_LATEST)

    @app.get("/api/v1/files/{file_id:int}", dependencies=[Auth])
    def get_file(file_id: int, db: DB) -> dict[str, Any]:
        row = _row(db, file_id)
        match = _row(db, row["match_id"]) if row["match_id"] is not None else None
        dismissed = db.execute("SELECT a, b FROM not_duplicates WHERE a = ? OR b = ?", (file_id, file_id))
        return {**_file(row), "match": _file(match) if match is not None else None, "edit": _edit(row),
                "not_duplicate_of": sorted(r["b"] if r["a"] == file_id else r["a"] for r in dismissed)}

    @app.get("/api/v1/files/{file_id:int}/thumbnail", dependencies=[Auth])
    def get_thumbnail(file_id: int, db: DB,
                      size: Annotated[int, Query(ge=32, le=1024)] = defaults.API_THUMBNAIL_PX) -> Response:
        jpeg = api.thumbnail(_row(db, file_id), size)
        return Response(jpeg, media_type="image/jpeg", headers={"Cache-Control": "private, max-age=300"})

    @app.get("/api/v1/matches", dependencies=[Auth])
    def get_matches(db: DB, kind: Kind | None = None,
                    since: datetime | None = None, limit: Annotated[int, Query(ge=1, le=1000)] = 50,
                    include_dismissed: bool = False, cursor: str | None = None) -> dict[str, Any]:
        """Recent verdicts that found a match (or, with kind=error, failures), newest first, `limit` a page;
        `next` is the cursor of the page after it (None on the last; daemon.views.matches)."""
        try:
            rows, after = matches_page(db, kind, None if since is None else
                                       (since if since.tzinfo else since.replace(tzinfo=UTC)).timestamp(),
                                       include_dismissed, cursor, limit)
        except ValueError:
            raise HTTPException(400, "cursor: use the `next` of the page before") from None
        out = []
        for r in rows:
            match = _row(db, r["match_id"]) if r["match_id"] is not None else None
            out.append({"id": r["id"], "kind": r["verdict"], "score": r["score"],
                        "hash_distance": r["hash_distance"], "signal": r["signal"], "reason": r["error"],
                        "detected_at": r["detected_at"], "decided_at": r["decided_at"],
                        "file": _file(r), "match": _file(match) if match is not None else None,
                        "edit": _edit(r), "not_duplicate": bool(r["dismissed"])})
        return {"matches": out, "next": after}

    @app.get("/api/v1/groups", dependencies=[Auth])
    def get_groups(db: DB, limit: Annotated[int, Query(ge=1, le=1000)] = 50,
                   cursor: Annotated[int, Query(ge=0)] = 0) -> dict[str, Any]:
        """Duplicate groups (daemon.views.groups): each earliest file with its copies and their edit summaries,
        `limit` a page; `next` is the cursor of the page after it (None on the last)."""
        found = duplicate_groups.page(db, cursor, limit)
        return {"groups": [g.to_dict() for g in found],
                "next": found[-1].original.id if len(found) == limit else None}

    @app.post("/api/v1/search", dependencies=[Auth])
    async def search(request: Request, top_k: Annotated[int, Query(ge=1, le=100)] = 5) -> dict[str, Any]:
        """Upload an image (multipart field `file`, or the raw bytes as the body with an image/* content
        type); nothing is stored. A request from a page of another origin is refused: without a token, any
        web page open in the user's browser could otherwise post to it (a multipart form needs no preflight)."""
        _same_origin(request)
        if not api.search_slots.acquire(blocking=False):
            await _discard(request, daemon.settings.api.max_upload_bytes)
            raise HTTPException(503, f"{SEARCHES_AT_ONCE} searches are running; try again",
                                headers={"Retry-After": "1"})
        try:
            data = await _upload(request, daemon.settings.api.max_upload_bytes)
            decode = daemon.settings.decode
            try:  # from the header, before the decode: no reduced decode for PNG and most formats
                check_header(data, max_pixels=decode.max_pixels, max_full_pixels=decode.max_full_pixels)
            except DecodeError as exc:
                raise HTTPException(413, f"image too large: {exc.detail}") from None
            return await run_in_threadpool(api.search, data, top_k)
        finally:
            api.search_slots.release()

    @app.post("/api/v1/not-duplicates", dependencies=[Auth])
    def not_duplicate(pair: NotDuplicate, db: DB) -> dict[str, Any]:
        """Never flag this pair again: hidden from matches and excluded from every later verdict."""
        if pair.file == pair.match:
            raise HTTPException(422, "a file cannot be a duplicate of itself")
        for file_id in (pair.file, pair.match):
            _row(db, file_id)
        later, earlier = max(pair.file, pair.match), min(pair.file, pair.match)
        now = time.time()

        api.on_loop(lambda: daemon.mark_not_duplicate(later, earlier, now))
        log.info("marked files %d and %d as not duplicates", later, earlier)
        return {"file": pair.file, "match": pair.match, "marked_at": now}

    return app


def _model_check(live: dict[str, Any]) -> dict[str, Any]:
    """The semantic model. Missing weights do not make the service unready (copies are still found), but
    the detail says plainly that there are no `similar` verdicts, and how to get them."""
    model = live["model"]
    loaded = sorted({w.get("model", "") for w in live["workers"] if w.get("state") == "loaded"})
    if model["state"] == "loaded":
        return {"ok": True, "detail": f"model {', '.join(loaded)} loaded in {len(live['workers'])} worker(s)"}
    if model["state"] in ("hash-only", "off"):
        return {"ok": True, "detail": f"no 'similar' verdicts by choice ({model['state']})"}
    if model["state"] == "unavailable":
        return {"ok": True, "detail": f"NO 'similar' VERDICTS: semantic model unavailable: {model.get('reason')}. "
                                      f"Fix: {model.get('fix')}", "fix": model.get("fix")}
    return {"ok": False, "detail": "no worker has registered yet (start `dupwatch worker`, or wait)"}


def _copy_model_check(live: dict[str, Any]) -> dict[str, Any]:
    """The copy descriptor: missing means hash-only copy detection against the configuration: not ready."""
    copy = live["copy_model"]
    loaded = sorted({w.get("copy_model", "") for w in live["workers"] if w.get("copy_state") == "loaded"})
    if copy["state"] == "loaded":
        return {"ok": True, "detail": f"copy descriptor {', '.join(loaded)} loaded"}
    if copy["state"] == "off":
        return {"ok": True, "detail": "hash-only copies by choice"}
    if copy["state"] == "unavailable":
        return {"ok": False, "detail": f"copy descriptor unavailable, copies by HASH-ONLY: {copy.get('reason')}. "
                                       f"Fix: {copy.get('fix')}", "fix": copy.get("fix")}
    return {"ok": False, "detail": "no worker has registered yet (start `dupwatch worker`, or wait)"}


SQLITE_MAX_ID = (1 << 63) - 1
"""The largest id SQLite can hold: a bigger one in a URL or body names no file (and would overflow the driver)."""


def _row(db: sqlite3.Connection, file_id: int) -> sqlite3.Row:
    if not 0 <= file_id <= SQLITE_MAX_ID:
        raise HTTPException(404, f"no file {file_id} in the catalog")
    row = db.execute("SELECT * FROM files WHERE id = ?", (file_id,)).fetchone()
    if row is None:
        raise HTTPException(404, f"no file {file_id} in the catalog")
    return row


def _file(row: sqlite3.Row) -> dict[str, Any]:
    """The public view of a catalog row: no hashes or embeddings, which are internal and large."""
    return {"id": row["id"], "path": row["path"], "size": row["size"], "width": row["width"],
            "height": row["height"], "format": row["format"], "sha256": row["sha256"], "state": row["state"],
            "verdict": row["verdict"], "score": row["score"], "hash_distance": row["hash_distance"],
            "signal": row["signal"], "reason": row["error"], "detected_at": row["detected_at"],
            "decided_at": row["decided_at"], "current": bool(row["current"]), "deleted_at": row["deleted_at"],
            "thumbnail": f"/api/v1/files/{row['id']}/thumbnail"}


def _edit(row: sqlite3.Row) -> dict[str, Any] | None:
    """The copy's edit explanation as stored by the index owner (JSON text in the catalog)."""
    return json.loads(row["edit"]) if row["edit"] else None


def _same_origin(request: Request) -> None:
    """Refuse (403) a request whose Origin is not this API's own address, and (415) a body that is neither a
    multipart form nor an image (image/*, or application/octet-stream): a raw body of a 'simple' type
    (text/plain, a urlencoded form) is what a foreign page can send without asking the browser first."""
    origin = request.headers.get("origin")
    if origin is not None and urlsplit(origin).netloc.lower() != request.headers.get("host", "").lower():
        raise HTTPException(403, f"a search from another origin ({origin}) is refused")
    kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if kind not in ("multipart/form-data", "application/octet-stream") and not kind.startswith("image/"):
        raise HTTPException(415, "send an image: multipart field 'file', or the raw bytes with an image/* (or "
                                 "application/octet-stream) Content-Type")


async def _upload(request: Request, limit: int) -> bytes:
    """The uploaded image, refusing (413) a request body over `limit` bytes before it is all read."""
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise HTTPException(413, f"upload over api.max_upload_bytes ({limit} bytes)")
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > limit:
            raise HTTPException(413, f"upload over api.max_upload_bytes ({limit} bytes)")
    if request.headers.get("content-type", "").startswith("multipart/form-data"):
        form = await Request(request.scope, _replay(bytes(body))).form()
        upload = form.get("file")
        if upload is None or isinstance(upload, str):
            raise HTTPException(422, "multipart upload needs a file field named 'file'")
        return await upload.read()
    if not body:
        raise HTTPException(422, "send an image: multipart field 'file', or the raw bytes as the body")
    return bytes(body)


async def _discard(request: Request, limit: int) -> None:
    """Read and drop an upload that will not be served: answering before the body is read makes the
    server close the connection under a client still sending, which sees a reset instead of the 503."""
    seen = 0
    async for chunk in request.stream():
        seen += len(chunk)
        if seen > limit:
            return


def _replay(body: bytes) -> Callable[[], Any]:
    """An ASGI receive() that hands back a body already read, so the form parser can run on it."""
    sent = False

    async def receive() -> dict[str, Any]:
        nonlocal sent
        if sent:
            return {"type": "http.disconnect"}
        sent = True
        return {"type": "http.request", "body": body, "more_body": False}

    return receive
