"""The `Features` record: what a worker learns about one file, and its wire form. Part of the job contract.

`FEATURE_FIELDS` is the one list of what a worker reports per file: the catalog's feature columns, the owner's
`accept` and the wire format all read it, so a new feature is added here and nowhere else.
"""

from __future__ import annotations

import base64
from dataclasses import dataclass, fields
from typing import Any

import numpy as np


@dataclass
class Features:
    """What a worker learns about one file. `error` set means nothing else is."""

    id: int
    path: str
    sha256: str | None = None
    pixel_sha: str | None = None
    phash: int | None = None
    dhash: int | None = None
    windows: np.ndarray | None = None  # int64 pHashes of sub-windows; [0] is the full frame
    dihedral: np.ndarray | None = None  # int64 pHashes of the 8 flips/rotations; [0] is identity
    width: int | None = None
    height: int | None = None
    format: str | None = None
    size: int | None = None
    embedding: np.ndarray | None = None  # the semantic model's vector (open_clip): `similar`
    model: str | None = None
    copy_embedding: np.ndarray | None = None  # the copy descriptor's vector (SSCD): edited-copy
    copy_model: str | None = None
    copy_inner: np.ndarray | None = None  # the same, of each picture inside a frame (workers.frames), concatenated
    error: str | None = None

    def stored(self) -> dict[str, Any]:
        """The feature fields that are set, as the catalog stores them."""
        return {k: v for k in FEATURE_FIELDS if (v := getattr(self, k)) is not None}

    def to_json(self) -> dict[str, Any]:
        """JSON-safe form for Redis (rq's JSON serializer world: nothing is ever unpickled)."""
        out: dict[str, Any] = {"id": self.id, "path": self.path, **self.stored()}
        for key in _HASH_ARRAYS:
            if key in out:
                out[key] = [int(x) for x in out[key]]
        for key in _VECTORS:
            if key in out:
                out[key] = base64.b64encode(out[key].astype(np.float32).tobytes()).decode()
        return out

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Features:
        """The record from its wire form. Keys this version does not know (a newer worker) are dropped."""
        known = {k: v for k, v in data.items() if k in _ALL_FIELDS}
        for key in _HASH_ARRAYS:
            if key in known:
                known[key] = np.asarray(known[key], dtype=np.int64)
        for key in _VECTORS:
            if key in known:
                known[key] = np.frombuffer(base64.b64decode(known[key]), dtype=np.float32)
        return cls(**known)


_ALL_FIELDS = frozenset(f.name for f in fields(Features))
_HASH_ARRAYS = ("windows", "dihedral")
_VECTORS = ("embedding", "copy_embedding", "copy_inner")  # float32, base64 on the wire

FEATURE_FIELDS: tuple[str, ...] = tuple(f.name for f in fields(Features) if f.name not in ("id", "path"))
"""Every per-file feature a worker reports (all but the file's identity)."""
