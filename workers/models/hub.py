"""One decision per process tree about the model hub, made in about a second when offline.

Without it, every process of an offline host (the worker, `scan`, `query`, the API's first search) spent
45-50 s in huggingface_hub's retries before falling back. Here: an explicit HF_HUB_OFFLINE is obeyed;
otherwise one quick TCP probe of the hub decides. When it fails, HF_HUB_OFFLINE=1 is set in this
process's environment, so weights already in the cache still load, nothing waits on the network again,
and every process started from this one (`dupwatch run`'s workers) inherits the decision.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
from pathlib import Path

log = logging.getLogger(__name__)

HUB_HOST = "huggingface.co"
PROBE_TIMEOUT_S = 1.5
"""DNS and TCP connect together: a reachable hub answers in well under a second."""

_decided: str | None = None  # None: not yet; "" online; else why offline
_lock = threading.Lock()


def offline_reason() -> str:
    """'' when the hub may be used; else why not. Probes at most once per process (and inherits a
    decision made by a parent through HF_HUB_OFFLINE)."""
    global _decided
    with _lock:
        if _decided is None:
            _decided = _decide()
            if _decided:
                _go_offline()
        return _decided


def _decide() -> str:
    if os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on"):
        return "HF_HUB_OFFLINE is set"
    result: list[str] = []

    def probe() -> None:
        try:
            socket.create_connection((HUB_HOST, 443), timeout=PROBE_TIMEOUT_S).close()
            result.append("")
        except OSError as exc:
            result.append(f"{HUB_HOST} unreachable ({exc})")

    thread = threading.Thread(target=probe, daemon=True)  # getaddrinfo has no timeout of its own
    thread.start()
    thread.join(PROBE_TIMEOUT_S)
    return result[0] if result else f"{HUB_HOST} did not answer within {PROBE_TIMEOUT_S} s"


def _go_offline() -> None:
    os.environ["HF_HUB_OFFLINE"] = "1"
    try:  # huggingface_hub reads the variable once, at import: tell an already imported one too
        from huggingface_hub import constants

        constants.HF_HUB_OFFLINE = True
    except ImportError:
        pass


def weights_cache_dirs(cache_dir: str | None) -> list[Path]:
    """Where open_clip can find a pretrained tag's weights without the network: `model.cache_dir` when set
    (both of its download routes take it), else huggingface_hub's cache and open_clip's own URL cache."""
    if cache_dir:
        return [Path(cache_dir).expanduser()]
    from huggingface_hub import constants  # the constants alone: no torch, a few milliseconds

    return [Path(constants.HF_HUB_CACHE), Path("~/.cache/clip").expanduser()]


def holds_any_file(dirs: list[Path]) -> bool:
    """Whether any of `dirs` holds a file at any depth (stops at the first one found)."""
    return any(f.is_file() for d in dirs if d.is_dir() for f in d.rglob("*"))


def cannot_fetch(name: str, pretrained: str, offline: str) -> str:
    """The reason given when a pretrained tag's weights are not cached and the hub is not used."""
    return f"weights {pretrained!r} for {name} are not in the cache and the model hub is not used ({offline})"


CANNOT_FETCH_FIX = ("fetch them once on this host with internet, or download the checkpoint elsewhere and set "
                    "model.pretrained (DUPWATCH_MODEL__PRETRAINED) to its path; model.name = none silences this")
