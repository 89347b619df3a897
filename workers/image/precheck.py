"""A cheap second look at a hash match before the geometric verification: the gradient hash of the two
views the match says are one picture.

Why: a hash-only match is verified by SIFT and RANSAC (workers.image.align, about 55 ms a pair on 2 cores).
Chance matches grow with the catalog (about 1e-10 per stored row per verdict at the shipped radii: 0.1 % of
verdicts at 10 M, and real photos cluster more than random hashes), so at scale most verifications are of
unrelated pictures, and each costs the full SIFT pass to reject. The pHash clause that matched names the
geometry (which flip or rotation, which crop or pad window), so both files can be decoded small (JPEG draft
mode), brought into that geometry and compared by a hash pHash does not see: the signs of the horizontal and
vertical gradients on a 16x16 grid (512 bits, mid frequencies, where pHash keeps only the lowest 8x8 DCT
signs). A copy keeps its gradients; an unrelated picture that agrees on the lowest frequencies does not.
Decoding two files at 64 px and comparing costs a few milliseconds.

Only a rejection is final: a pair that passes still goes to the verification, so the precision of the
hash-only path is the verification's, and what this look can cost is recall (a copy whose gradients moved
past GRADIENT_MAX_FRACTION), measured on bench/accuracy.py.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from PIL import Image

from workers import defaults
from workers.image.decode import DecodeError, decode_file
from workers.image.hashing import DIHEDRAL, WINDOWS, hamming

GRID = 16
"""Gradient hash grid: 16x16 cells, 2 x 256 bits."""

DECODE_SIDE = 64
"""Short side the files are decoded at (JPEG draft): the grid needs a few pixels a cell."""

GRADIENT_MAX_FRACTION = 0.30
"""A pair whose gradient hashes differ in more than this share of their bits is not one picture. Unrelated
views sit near 0.5 (bits independent); measured on bench/data/acc's hash matches (see docs/detection.md)
true copies stayed under it."""


@dataclass(frozen=True)
class Geometry:
    """How a hash match relates the two pictures: `kind` 'dihedral' (the copy turned by DIHEDRAL[index]
    is the original), 'crop' (the copy is the original's WINDOWS[index]) or 'pad' (the copy's
    WINDOWS[index] is the original)."""

    kind: str
    index: int


def geometry(signal: str, copy_windows: np.ndarray, copy_dihedral: np.ndarray, original_windows: np.ndarray) -> Geometry:
    """The geometry of a hash match from the pHashes the index compared: the variant or window at the least
    distance for the clause that matched (`signal`, daemon.index.hashindex.SIGNALS)."""
    if signal == "phash-crop":
        return Geometry("crop", 1 + int(np.argmin(hamming(copy_windows[0], original_windows[1:]))))
    if signal == "phash-pad":
        return Geometry("pad", 1 + int(np.argmin(hamming(copy_windows[1:], original_windows[0]))))
    if signal == "phash":
        return Geometry("dihedral", int(np.argmin(hamming(copy_dihedral, original_windows[0]))))
    return Geometry("dihedral", 0)  # dHash and the agreement clause compare the full frames as they are


def gradient_hash(img: Image.Image) -> np.ndarray:
    """bool[2 * GRID * GRID]: the signs of the horizontal and vertical gradients of the grey image."""
    g = np.asarray(img.convert("L").resize((GRID + 1, GRID + 1), Image.Resampling.BOX), dtype=np.int16)
    return np.concatenate([(g[:-1, 1:] > g[:-1, :-1]).ravel(), (g[1:, :-1] > g[:-1, :-1]).ravel()])


def views(copy: Image.Image, original: Image.Image, geo: Geometry) -> tuple[Image.Image, Image.Image]:
    """The two images brought into the geometry the hash match found."""
    if geo.kind == "crop":
        return copy, _window(original, geo.index)
    if geo.kind == "pad":
        return _window(copy, geo.index), original
    transpose = DIHEDRAL[geo.index]
    return (copy if transpose is None else copy.transpose(transpose)), original


def gradient_distance(copy_path: str, original_path: str, geo: Geometry, *, max_pixels: int = defaults.MAX_PIXELS,
                      max_bytes: int = defaults.MAX_FILE_BYTES, follow_symlinks: bool = False) -> float | None:
    """Share of differing gradient bits (0 same, ~0.5 unrelated) of the two files in the match's geometry;
    None when either cannot be read (gone, a symlink, undecodable): no look, the caller goes on without it."""
    images = []
    for path in (copy_path, original_path):
        try:
            images.append(decode_file(path, size=DECODE_SIDE, max_pixels=max_pixels, max_bytes=max_bytes,
                                      follow_symlinks=follow_symlinks).image)
        except DecodeError:
            return None
    a, b = (gradient_hash(v) for v in views(images[0], images[1], geo))
    return float(np.count_nonzero(a != b)) / a.size


def _window(img: Image.Image, index: int) -> Image.Image:
    x0, y0, x1, y1 = WINDOWS[index]
    w, h = img.size
    return img.crop((round(x0 * w), round(y0 * h), max(round(x1 * w), round(x0 * w) + 1),
                     max(round(y1 * h), round(y0 * h) + 1)))
