"""Verification of candidate pairs: the second job kind, and its wire form.

The index owner decides; it never decodes. When a file's evidence is not conclusive, or an edited copy needs
its `edit` explained, the owner asks for the alignment of the file with its candidates (`VerifyRequest`) and
waits for the answer (`Verified`) in arrival order. The daemon sends the request to a worker as an rq job
(`workers.jobs.verify_pairs`, result on the results stream); a one-process command (`dupwatch scan`) runs the
same `verify` in threads of its own (`LocalVerifier`). Either way the answer is computed here, by the workers'
code, and reaches the owner as the same record.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from typing import Any

from workers import defaults
from workers.image.align import Alignment, align_files
from workers.image.precheck import GRADIENT_MAX_FRACTION, Geometry, gradient_distance

log = logging.getLogger(__name__)

Aligner = Callable[..., Alignment | None]


@dataclass(frozen=True)
class VerifyRequest:
    """Align the file (`path`, catalog id `file_id`) with each candidate (id, path). `look`: (candidate id,
    geometry) of a hash-only match, whose gradients must agree before SIFT runs for it (workers.image.precheck).
    `version`: what identifies the file's content (size, mtime): part of the job id, so the same question about
    the same files is one job however often it is asked, and a changed file is a new question.
    `follow_symlinks`: the watcher's setting, so verification reads exactly what ingestion may read."""

    file_id: int
    path: str
    candidates: tuple[tuple[int, str], ...]
    look: tuple[int, Geometry] | None = None
    version: tuple[int | None, int | None] = (None, None)
    follow_symlinks: bool = False

    def to_json(self) -> dict[str, Any]:
        look = None if self.look is None else [self.look[0], self.look[1].kind, self.look[1].index]
        return {"file_id": self.file_id, "path": self.path, "candidates": [list(c) for c in self.candidates],
                "look": look, "version": list(self.version), "follow_symlinks": self.follow_symlinks}

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> VerifyRequest:
        look = d.get("look")
        return cls(int(d["file_id"]), str(d["path"]), tuple((int(i), str(p)) for i, p in d["candidates"]),
                   None if look is None else (int(look[0]), Geometry(str(look[1]), int(look[2]))),
                   (d["version"][0], d["version"][1]) if d.get("version") else (None, None),
                   bool(d.get("follow_symlinks", False)))

    def job_id(self) -> str:
        """Deterministic: the same request (same file, version, candidates, look) is one job."""
        digest = hashlib.sha1(json.dumps(self.to_json(), sort_keys=True).encode()).hexdigest()
        return f"verify-{self.file_id}-{digest}"


@dataclass(frozen=True)
class Verified:
    """The answer: an Alignment (None: no model found, not a copy) per candidate that was verified. A candidate
    absent from `alignments` was not verified (its file or the file itself gone or unreadable, or the aligner
    failed): the owner decides it on the scores alone. `looked_away`: candidates the gradient look rejected."""

    alignments: dict[int, Alignment | None] = field(default_factory=dict)
    looked_away: int = 0

    def to_json(self) -> dict[str, Any]:
        return {"alignments": [[i, None if a is None else asdict(a)] for i, a in self.alignments.items()],
                "looked_away": self.looked_away}

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> Verified:
        return cls({int(i): None if a is None else Alignment(**a) for i, a in d["alignments"]},
                   int(d.get("looked_away", 0)))


def verify(request: VerifyRequest, *, max_pixels: int = defaults.MAX_PIXELS,
           max_bytes: int = defaults.MAX_FILE_BYTES, aligner: Aligner = align_files) -> Verified:
    """Align the request's file with each candidate. A pair whose file is gone is left out, so the decision is
    made without a verification rather than against one. The look turns away a hash-only match whose gradients
    disagree at a few ms, instead of the ~55 ms a SIFT pass costs."""
    out: dict[int, Alignment | None] = {}
    looked_away = 0
    path = request.path
    for file_id, other in request.candidates:
        if not (os.path.isfile(path) and os.path.isfile(other)):
            continue
        if request.look is not None and request.look[0] == file_id:
            distance = gradient_distance(path, other, request.look[1], max_pixels=max_pixels, max_bytes=max_bytes,
                                         follow_symlinks=request.follow_symlinks)
            if distance is not None and distance > GRADIENT_MAX_FRACTION:
                looked_away += 1
                out[file_id] = None
                continue
        try:
            out[file_id] = aligner(path, other, max_pixels=max_pixels, max_bytes=max_bytes,
                                   follow_symlinks=request.follow_symlinks)
        except Exception as exc:  # noqa: BLE001 - a decoder or OpenCV error costs this pair its verification
            log.warning("verification of %s against %s failed: %s", path, other, exc)
    return Verified(out, looked_away)


class LocalVerifier:
    """Verification in this process's threads, for one-process commands (`dupwatch scan`, `query`) and tests:
    the same `verify` a worker runs. `aligner` is the pair function (workers.image.align.align_files)."""

    def __init__(self, max_pixels: int = defaults.MAX_PIXELS, max_bytes: int = defaults.MAX_FILE_BYTES,
                 aligner: Aligner = align_files):
        self.max_pixels, self.max_bytes, self.aligner = max_pixels, max_bytes, aligner
        self._pool: ThreadPoolExecutor | None = None

    def submit(self, request: VerifyRequest) -> Future[Verified]:
        if self._pool is None:
            self._pool = ThreadPoolExecutor(max_workers=max(1, min(4, os.cpu_count() or 1)),
                                            thread_name_prefix="verify")
        return self._pool.submit(lambda: verify(request, max_pixels=self.max_pixels, max_bytes=self.max_bytes,
                                                aligner=self.aligner))

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
