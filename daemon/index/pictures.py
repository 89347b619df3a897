"""The pictures found inside frames (workers.frames), indexed on their own: a later bare copy of a picture
first seen in a screenshot, a meme or a collage finds that framed file, whose whole-file vector is mostly
frame and would not.

Each picture is a key of its own in a usearch index (file id x MAX_PICTURES + its place), so a collage's
four tiles are four keys. The index lives in memory only and is rebuilt from the catalog's `copy_inner`
column at start: only framed files have pictures, a small share of a catalog (a snapshot like the whole-file
vectors' would be the next step where that share is large).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import Any

import numpy as np

from daemon.index.catalog import Catalog, vector_from_sql
from daemon.index.vectors import CONNECTIVITY, EXPANSION_ADD, EXPANSION_SEARCH, Index  # onnxruntime first: see there
from workers.frames import MAX_PICTURES

log = logging.getLogger(__name__)

LOAD_CHUNK = 10_000
"""Framed rows read per statement at start."""


class PictureVectors:
    """Copy-descriptor vectors of framed files' pictures, searchable by any vector of the same model."""

    def __init__(self, identity: str | None, dtype: str):
        self.identity, self.dtype = identity, dtype
        self.index: Index | None = None
        self._keys: dict[int, list[int]] = {}  # file id -> its pictures' keys

    def __len__(self) -> int:
        return len(self.index) if self.index is not None else 0

    def load(self, catalog: Catalog, include_deleted: bool) -> None:
        """Index the pictures of every decided framed row made by this identity (start-up)."""
        if self.identity is None:
            return
        live = "" if include_deleted else " AND files.deleted_at IS NULL"
        after = 0
        while True:
            rows = catalog.query(
                "SELECT files.id, v.copy_inner, v.copy_embedding FROM files JOIN vectors v ON v.file_id = files.id "
                "WHERE files.id > ? AND v.copy_inner IS NOT NULL AND files.state = 'decided' AND files.error IS NULL "
                f"AND files.copy_model = ?{live} ORDER BY files.id LIMIT ?", (after, self.identity, LOAD_CHUNK))
            if not rows:
                break
            for r in rows:
                whole = vector_from_sql(r["copy_embedding"])
                self._add(r["id"], vector_from_sql(r["copy_inner"]).reshape(-1, len(whole)))
            after = rows[-1]["id"]
        if len(self):
            log.info("picture index: %d pictures of framed files", len(self))

    def add(self, row: Any) -> None:
        """Index a decided row's pictures, when it has any and its vectors are this identity's."""
        if row.copy_inner is None or row.copy_embedding is None or row.copy_model != self.identity:
            return
        self._add(row.id, row.copy_inner.reshape(-1, len(row.copy_embedding)))

    def _add(self, file_id: int, pictures: np.ndarray) -> None:
        if file_id in self._keys:
            return
        if self.index is None:
            self.index = Index(ndim=pictures.shape[1], metric="cos", dtype=self.dtype, connectivity=CONNECTIVITY,
                               expansion_add=EXPANSION_ADD, expansion_search=EXPANSION_SEARCH)
        keys = [file_id * MAX_PICTURES + k for k in range(min(len(pictures), MAX_PICTURES))]
        self.index.add(np.asarray(keys, np.uint64), pictures[:len(keys)].astype(np.float32))
        self._keys[file_id] = keys

    def remove(self, file_id: int) -> None:
        keys = self._keys.pop(file_id, None)
        if keys and self.index is not None:
            self.index.remove(np.asarray(keys, np.uint64))

    def search(self, vectors: Iterable[np.ndarray], before_id: int, k: int, excluded: set[int]) -> set[int]:
        """Ids of files EARLIER than `before_id` whose pictures are among the k nearest of any of `vectors`."""
        if self.index is None or not len(self.index):
            return set()
        found = set()
        for vector in vectors:
            result = self.index.search(vector, min(k, len(self.index)))
            found |= {int(key) // MAX_PICTURES for key in result.keys}
        return {i for i in found if i < before_id and i not in excluded}

    def close(self) -> None:
        self.index = None
        self._keys.clear()
