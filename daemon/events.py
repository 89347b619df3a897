"""Verdict events: pure data shared by the CLI, the event log, the API and webhooks.

Kept free of I/O so every sink renders the same object. The event id is derived from the file (its
catalog id and content digest), never from a processing attempt, so re-processing a file re-creates the
same id and receivers can de-duplicate on it.
"""

from __future__ import annotations

import hashlib
from dataclasses import asdict, dataclass, field
from typing import Any, Literal, get_args

Kind = Literal["new", "exact-copy", "edited-copy", "similar", "error"]
"""Verdict kinds: a stable contract (CLI, log, API, webhooks, settings). Extend, never rename."""

KINDS: tuple[Kind, ...] = get_args(Kind)

MATCH_KINDS: tuple[Kind, ...] = tuple(k for k in KINDS if k not in ("new", "error"))
"""The kinds that point to an earlier file (what sinks are sent by default)."""

SCHEMA_VERSION = 1


@dataclass(frozen=True)
class FileInfo:
    """What the catalog knows of one file at the time of its verdict."""

    id: int
    path: str
    size: int | None = None
    sha256: str | None = None
    width: int | None = None
    height: int | None = None


@dataclass(frozen=True)
class Match:
    """An earlier file the new one resembles, and by which signal."""

    file: FileInfo
    kind: str
    score: float
    hash_distance: int | None = None
    signal: str = ""  # e.g. "sha256", "phash", "dhash", "clip"
    edit: dict[str, Any] | None = None  # what was done to the earlier file (workers.image.align), for copies


@dataclass(frozen=True)
class VerdictEvent:
    """One verdict for one landed file. Exactly one per file, whatever happens in between."""

    kind: str
    file: FileInfo
    detected_at: float  # unix seconds, when the file was first seen landed
    decided_at: float
    matches: tuple[Match, ...] = ()
    reason: str | None = None  # for kind == "error"
    version: str = field(default="")

    @property
    def event_id(self) -> str:
        digest = hashlib.sha256(f"{self.file.id}:{self.file.path}:{self.file.sha256}"
                                .encode("utf-8", "surrogateescape")).hexdigest()  # any file name
        return f"evt_{digest[:24]}"

    @property
    def best(self) -> Match | None:
        return self.matches[0] if self.matches else None

    def to_dict(self) -> dict[str, Any]:
        """The stable, versioned payload (documented in docs/webhooks.md)."""
        return {
            "schema": SCHEMA_VERSION,
            "id": self.event_id,
            "type": f"file.{self.kind}",
            "kind": self.kind,
            "detected_at": self.detected_at,
            "decided_at": self.decided_at,
            "file": asdict(self.file),
            "matches": [
                {**asdict(m.file), "kind": m.kind, "score": m.score, "hash_distance": m.hash_distance,
                 "signal": m.signal, "edit": m.edit}
                for m in self.matches
            ],
            "reason": self.reason,
            "dupwatch_version": self.version,
        }
