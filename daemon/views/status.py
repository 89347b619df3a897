"""`dupwatch status` and `dupwatch matches`: read-only views of the catalog and the queues.

Safe to run beside a live daemon: SQLite WAL lets readers in while the owner writes, and nothing here
writes.
"""

from __future__ import annotations

import json
import sqlite3
from typing import Any

from daemon.config import Settings
from daemon.events import MATCH_KINDS
from daemon.index.catalog import read_only_connection
from daemon.index.rebuilds import describe, rebuilding
from daemon.state import StateDir
from workers import queue as q


def read_only_catalog(settings: Settings) -> sqlite3.Connection | None:
    path = StateDir(settings.state_dir, create=False).catalog
    if not path.exists():
        return None
    return read_only_connection(path)


def redis_url_for(settings: Settings) -> str | None:
    """The configured Redis, or the private one `run` keeps in the state dir (if it is up)."""
    if settings.redis.url:
        return settings.redis.url
    sock = StateDir(settings.state_dir, create=False).redis_socket
    return f"unix://{sock}" if sock.exists() else None


def collect(settings: Settings) -> dict[str, Any]:
    """The `status --json` contract: files, verdicts, pending, errors, queues, workers, model (the semantic
    one: `similar` verdicts), and copy_model (the copy descriptor: edited copies)."""
    out: dict[str, Any] = {"files": 0, "verdicts": {}, "pending": 0, "errors": {}, "queues": {},
                           "workers": [], "model": {"configured": settings.model.name,
                                                    "pretrained": settings.model.pretrained,
                                                    "hash_only": settings.hash_only},
                           "copy_model": {"configured": settings.copy_model.name, "hash_only": settings.hash_only}}
    conn = read_only_catalog(settings)
    if conn is not None:
        with conn:
            out.update(catalog_counts(conn))
        conn.close()
    out["rebuilding"] = rebuilding(settings.state_dir)
    url = redis_url_for(settings)
    if url is None:
        out["redis"] = "not running"
        return out
    try:
        live = redis_status(q.connect(url), settings)
    except Exception as exc:  # noqa: BLE001 - status must answer even when Redis is down
        out["redis"] = f"unreachable: {exc}"
        return out
    out["model"].update(live.pop("model"))
    out["copy_model"].update(live.pop("copy_model"))
    out.update(live)
    return out


def catalog_counts(conn: sqlite3.Connection) -> dict[str, Any]:
    """files, pending, verdicts by kind and errors by reason code: shared with the API's /metrics."""
    return {
        "files": conn.execute("SELECT count(*) FROM files").fetchone()[0],
        "pending": conn.execute("SELECT count(*) FROM files WHERE state != 'decided'").fetchone()[0],
        "verdicts": {r[0]: r[1] for r in conn.execute(
            "SELECT verdict, count(*) FROM files WHERE state = 'decided' GROUP BY verdict")},
        "errors": {r[0]: r[1] for r in conn.execute(
            "SELECT substr(error, 1, instr(error || ':', ':') - 1), count(*) FROM files "
            "WHERE verdict = 'error' GROUP BY 1")},
    }


def redis_status(conn_r, settings: Settings) -> dict[str, Any]:
    """Queues, workers and the model state the workers report: the live half of `status`, shared with the
    API's /readyz and /metrics so all three say the same. Raises if Redis cannot be reached."""
    queue = q.ingest_queue(conn_r, settings.queue.job_timeout_s)
    out: dict[str, Any] = {"queues": {q.INGEST_QUEUE: len(queue), q.VERIFY_QUEUE: len(q.verify_queue(conn_r)),
                                       "results": conn_r.xlen(q.RESULTS_STREAM)},
                           "workers": [], "model": {}}
    for key in conn_r.scan_iter(match=q.WORKER_KEY.format(name="*")):
        info = {k.decode(): v.decode() for k, v in conn_r.hgetall(key).items()}
        info["name"] = key.decode().split(":", 2)[2]
        out["workers"].append(info)
    out["model"] = _role_state(out["workers"], "")
    out["copy_model"] = _role_state(out["workers"], "copy_")
    out["redis"] = "ok"
    return out


def _role_state(workers: list[dict[str, str]], prefix: str) -> dict[str, Any]:
    """One model's state across the workers' records (prefix '' = semantic, 'copy_' = copy descriptor):
    loaded if any worker loaded it, else unavailable (with the reason and fix) if any lacks it."""
    states = {w.get(prefix + "state") for w in workers}
    out: dict[str, Any] = {"state": "loaded" if "loaded" in states else "unavailable" if "unavailable" in states
                           else next(iter(sorted(s for s in states if s)), "no workers")}
    unavailable = [w for w in workers if w.get(prefix + "state") == "unavailable"]
    if unavailable:
        out["reason"] = unavailable[0].get(prefix + "reason")
        out["fix"] = unavailable[0].get(prefix + "fix")
    return out


def render(data: dict[str, Any]) -> str:
    lines = [f"files      {data['files']}  (pending {data['pending']})",
             "verdicts   " + (", ".join(f"{k} {v}" for k, v in sorted(data["verdicts"].items())) or "-")]
    if data["errors"]:
        lines.append("errors     " + ", ".join(f"{k} {v}" for k, v in sorted(data["errors"].items())))
    lines.append("queues     " + (", ".join(f"{k} {v}" for k, v in data["queues"].items()) or data.get("redis", "")))
    lines.append(f"workers    {len(data['workers'])}")
    if data.get("rebuilding"):
        lines.append(f"partial    {describe(data['rebuilding'])}")
    copy = data.get("copy_model", {})
    lines.append(f"copies     {copy.get('configured')}: {copy.get('state', '?')}")
    if copy.get("state") == "unavailable":
        lines.append(f"           HASH-ONLY copies (crops, rotations, overlays missed) because: {copy.get('reason')}")
        lines.append(f"           fix: {copy.get('fix')}")
    model = data["model"]
    lines.append(f"similar    {model.get('configured')} ({model.get('pretrained')}): {model.get('state', '?')}")
    if model.get("state") == "unavailable":
        lines.append(f"           NO 'similar' VERDICTS because: {model.get('reason')}")
        lines.append(f"           fix: {model.get('fix')}")
    return "\n".join(lines)


def recent(settings: Settings, kind: str | None, limit: int) -> list[dict[str, Any]]:
    conn = read_only_catalog(settings)
    if conn is None:
        return []
    args: list[Any] = [kind] if kind else list(MATCH_KINDS)
    where = f"f.verdict IN ({','.join('?' * len(args))})"
    rows = conn.execute(
        "SELECT f.id, f.path, f.verdict, f.score, f.hash_distance, f.signal, f.error, f.decided_at, f.edit, "
        "m.path AS match, EXISTS (SELECT 1 FROM not_duplicates n WHERE (n.a = f.id AND n.b = f.match_id)"
        " OR (n.a = f.match_id AND n.b = f.id)) AS not_duplicate "
        f"FROM files f LEFT JOIN files m ON m.id = f.match_id WHERE {where} ORDER BY f.decided_at DESC LIMIT ?",
        [*args, limit]).fetchall()
    conn.close()
    return [{"id": r["id"], "path": r["path"], "kind": r["verdict"], "match": r["match"], "score": r["score"],
             "hash_distance": r["hash_distance"], "signal": r["signal"], "reason": r["error"],
             "decided_at": r["decided_at"], "edit": json.loads(r["edit"]) if r["edit"] else None,
             "not_duplicate": bool(r["not_duplicate"])} for r in rows]
