"""Files to features: decode (thread pool) -> sha256 + hashes + embedding, one batch at a time.

The same code serves rq jobs (workers.jobs) and the one-shot `dupwatch scan`, so both give identical
features. Hashes and the embedding come from the same decode: no file is read or decoded twice.

Each decode thread also cuts the hash planes and the model's input tensor from the image it decoded:
Pillow releases the GIL in decode and resize, so this per-image work runs on every core, and the thread
that batches is left with only the batched tensor math (hashes, model).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import TYPE_CHECKING, TypeVar

import numpy as np

from workers import defaults, frames, hashing
from workers.decode import DecodeError, decode_file
from workers.features import Features
from workers.models.base import ImageEmbedder
from workers.models.copy import CopyDescriptor
from workers.settings import DecodeSettings

if TYPE_CHECKING:  # torch is imported only with a model: hash-only never pays for it
    import torch

log = logging.getLogger(__name__)

T = TypeVar("T")


def _inputs(batch: list[T | None]) -> list[T]:
    """A model's inputs for a batch: prepared for every file whenever the model is loaded (an error if not,
    raised inside the caller's try so that the batch degrades to hashes rather than fail)."""
    if any(x is None for x in batch):
        raise ValueError("a file was prepared without this model's input")
    return [x for x in batch if x is not None]


@dataclass
class Prepared:
    """What a decode thread hands to the batching thread for one good file."""

    windows: np.ndarray  # uint8 [len(WINDOWS),32,32] pHash planes
    g98: np.ndarray  # uint8 [8,9] dHash plane
    pixels: torch.Tensor | None  # the semantic model's input [3,H,W], None without one
    copy_inputs: list[np.ndarray] | None  # the copy descriptor's uint8 [H,W,3] inputs, None without one: the
    # file's, then each picture's inside its frame (workers.frames)
    copy_vectors: np.ndarray | None = None  # their [n, dim] vectors once embedded (in the decode thread on a CPU)


def decode_threads(setting: int) -> int:
    """decode.threads, where 0 means one per usable core."""
    if setting:
        return setting
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


class Pipeline:
    """Holds the models (either may be None) and a decode pool for the process's life."""

    def __init__(self, decode: DecodeSettings, embedder: ImageEmbedder | None, copier: CopyDescriptor | None = None,
                 *, follow_symlinks: bool = False):
        self.decode_settings = decode
        self.follow_symlinks = follow_symlinks  # off: no file is read through a symbolic link
        self.embedder = embedder
        self.copier = copier
        self.pool = ThreadPoolExecutor(max_workers=decode_threads(decode.threads), thread_name_prefix="decode")

    def close(self) -> None:
        self.pool.shutdown(wait=False, cancel_futures=True)

    def run(self, items: Sequence[tuple[int, str]]) -> list[Features]:
        """Features for (id, path) items, in the same order. Never raises for a bad file."""
        results = list(self.pool.map(self._prepare_one, items))
        good = [(f, p) for f, p in results if p is not None]
        if good:
            self._hash([f for f, _ in good], [p for _, p in good])
            if self.copier is not None:
                self._copy_embed([f for f, _ in good], [p for _, p in good])
            if self.embedder is not None:
                self._embed([f for f, _ in good], [p for _, p in good])
        return [f for f, _ in results]

    def _prepare_one(self, item: tuple[int, str]) -> tuple[Features, Prepared | None]:
        """Decode one file and cut its planes and model input (runs in a decode thread)."""
        file_id, path = item
        feats = Features(id=file_id, path=path)
        try:
            s = self.decode_settings
            decoded = decode_file(path, size=s.size, max_pixels=s.max_pixels, max_bytes=s.max_file_bytes,
                                  follow_symlinks=self.follow_symlinks, max_full_pixels=s.max_full_pixels)
            windows, g98 = hashing.hash_planes(decoded.image)
            pixels = self.embedder.preprocess(decoded.image) if self.embedder is not None else None
            copy_inputs = copy_vectors = None
            if self.copier is not None:
                copy_inputs = [self.copier.preprocess(decoded.image)]
                copy_inputs += [self.copier.preprocess(frames.crop(decoded.image, box))
                                for box in frames.find(decoded.image)]
                if self.copier.in_decode_threads:
                    copy_vectors = self._copy_vectors_here(path, copy_inputs)
        except DecodeError as exc:
            feats.error = f"{exc.reason}: {exc.detail}"
            return feats, None
        except Exception as exc:  # a decoder bug must cost one file, never the batch
            log.exception("unexpected failure decoding %s", path)
            feats.error = f"decoder-crash: {type(exc).__name__}: {exc}"
            return feats, None
        feats.sha256, feats.pixel_sha = decoded.sha256, decoded.pixel_sha
        feats.width, feats.height, feats.format, feats.size = (decoded.width, decoded.height,
                                                               decoded.format, decoded.size)
        return feats, Prepared(windows, g98, pixels, copy_inputs, copy_vectors)

    def _copy_vectors_here(self, path: str, inputs: list[np.ndarray]) -> np.ndarray | None:
        """One file's copy vectors, in its decode thread: on a CPU each thread runs its own one-thread model call
        while the others decode, so the cores never wait for a whole batch to be decoded, and no batch of
        model inputs is held (the vectors do not depend on what else is in a call: tests/test_detection.py)."""
        assert self.copier is not None
        try:
            return self.copier.embed(inputs)
        except Exception:  # as in _copy_embed: this file keeps its hashes, its verdict degrades rather than fail
            log.exception("copy descriptor failed for %s; continuing without it", path)
            return None

    def _hash(self, feats: list[Features], prepared: list[Prepared]) -> None:
        """Batched hashes: numpy on the CPU; on the model's GPU when there is one (same results)."""
        windows: hashing.Array = np.stack([p.windows for p in prepared])
        g98: hashing.Array = np.stack([p.g98 for p in prepared])
        b, w = windows.shape[:2]
        device = self.embedder.device if self.embedder is not None else None
        on_gpu = device is not None and device.type != "cpu"
        if on_gpu:
            import torch

            windows, g98 = (torch.from_numpy(a).to(device) for a in (windows, g98))
        results = (hashing.phash_batch(windows.reshape(b * w, 32, 32)).reshape(b, w),
                   hashing.phash_dihedral_batch(windows[:, 0]), hashing.dhash_batch(g98),
                   hashing.detail_batch(windows[:, 0]))
        window_hashes, dihedral, dhashes, detail = (r.cpu().numpy() if on_gpu else r for r in results)
        for i, f in enumerate(feats):
            f.phash = int(window_hashes[i, 0])
            f.dhash = int(dhashes[i])
            if detail[i] >= defaults.MIN_HASH_DETAIL:  # else no hash search: its bits are noise
                f.windows = window_hashes[i]
                f.dihedral = dihedral[i]

    def _embed(self, feats: list[Features], prepared: list[Prepared]) -> None:
        import torch

        assert self.embedder is not None
        try:
            batch = torch.stack(_inputs([p.pixels for p in prepared]))
            if self.embedder.device.type == "cuda":  # page-locked: the copy to the GPU runs asynchronously
                batch = batch.pin_memory()
            vectors = self.embedder.embed(batch)
        except Exception:  # an OOM or driver error leaves hashes usable: verdicts degrade, not fail
            log.exception("embedding failed for a batch of %d; continuing with hashes only", len(feats))
            return
        for f, v in zip(feats, vectors, strict=True):
            f.embedding = v
            f.model = self.embedder.identity

    def _copy_embed(self, feats: list[Features], prepared: list[Prepared]) -> None:
        """The copy vectors onto the features: embedded here as one batch (a GPU), or already by the decode
        threads (a CPU). numpy straight into the model (no torch for ONNX)."""
        assert self.copier is not None
        if not self.copier.in_decode_threads:
            try:
                inputs = _inputs([p.copy_inputs for p in prepared])
                vectors = self.copier.embed([a for x in inputs for a in x])
            except Exception:  # as in _embed: hashes stay usable, verdicts degrade rather than fail
                log.exception("copy descriptor failed for a batch of %d; continuing without it", len(feats))
                return
            for p, x, end in zip(prepared, inputs, np.cumsum([len(x) for x in inputs]), strict=True):
                p.copy_vectors = vectors[end - len(x):end]
        for f, p in zip(feats, prepared, strict=True):
            if p.copy_vectors is None:
                continue
            f.copy_embedding = p.copy_vectors[0]
            f.copy_model = self.copier.identity
            if len(p.copy_vectors) > 1:  # the pictures inside its frame, one vector after another
                f.copy_inner = p.copy_vectors[1:].reshape(-1)
