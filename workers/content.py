"""Where the picture is inside a frame: the box a copy descriptor should also look at.

A photo pasted into an app screenshot, a meme with caption bands, a letterboxed frame: the copy
descriptor's score for the whole frame is dominated by the frame (on the bench, two different photos in
the same screenshot template scored 43-55 with SSCD, higher than a photo against its own screenshot,
21-40). So the worker also embeds the picture's box, and the owner compares that vector with earlier
files: a pasted picture matches its original, and two pictures in one template no longer match through
the frame they share.

The box is found from colour statistics on a small copy: frames are drawn in a few flat colours
(background, bars, text, letterbox), which cover most of the frame's pixels; the picture is what is
left, taken as the bounding box of its main mass after dropping thin strokes such as text.
"""

from __future__ import annotations

import numpy as np
from PIL import Image

SIDE = 128
"""Long side of the copy the box is found on: the box needs to be right to a few percent only."""

FRAME_COLOURS = 4
"""The most frequent quantised colours that count as the frame (background, bar, text, border)."""

MIN_FRAME_SHARE = 0.15
"""The frame colours must cover at least this share of the image, else there is no frame."""

AREA = (0.08, 0.8)
"""A box outside this share of the frame is no box: too small to be the picture, or the whole image."""


OPENING = 5
"""Side of the square the opening erodes and dilates with: wider than a text stroke at SIDE pixels."""


def _rank(mask: np.ndarray, combine) -> np.ndarray:
    """A square min (`np.logical_and`) or max (`np.logical_or`) filter of side OPENING on a boolean mask,
    edges replicated: what Pillow's MinFilter/MaxFilter give on a 0/255 image, as two separable passes
    (a third of a worker's CPU per image went to Pillow's rank filters before)."""
    r = OPENING // 2
    padded = np.pad(mask, r, mode="edge")
    h, w = mask.shape
    rows = padded[:, 0:w].copy()
    for dx in range(1, OPENING):
        combine(rows, padded[:, dx:dx + w], out=rows)
    out = rows[0:h].copy()
    for dy in range(1, OPENING):
        combine(out, rows[dy:dy + h], out=out)
    return out


def picture_box(image: Image.Image) -> tuple[float, float, float, float] | None:
    """(x0, y0, x1, y1) in normalised coordinates of the picture inside a frame, or None when the image
    is not a picture inside a frame."""
    small = image.convert("RGB")
    small.thumbnail((SIDE, SIDE), Image.Resampling.BILINEAR)
    rgb = np.asarray(small, dtype=np.uint8)
    h, w = rgb.shape[:2]
    if h < 16 or w < 16:
        return None
    q = (rgb >> 4).astype(np.int32)
    code = (q[..., 0] << 8) | (q[..., 1] << 4) | q[..., 2]
    counts = np.bincount(code.ravel(), minlength=4096)
    top = np.argsort(counts)[::-1][:FRAME_COLOURS]
    top = top[counts[top] >= 0.02 * h * w]  # only colours that are really drawn as areas
    frame = np.isin(code, top)
    if frame.mean() < MIN_FRAME_SHARE:
        return None
    # an opening: text strokes and JPEG fringes around flat shapes vanish, a picture's mass stays
    mask = _rank(_rank(~frame, np.logical_and), np.logical_or)
    rows, cols = np.flatnonzero(mask.mean(axis=1) > 0.2), np.flatnonzero(mask.mean(axis=0) > 0.2)
    if len(rows) == 0 or len(cols) == 0:
        return None
    y0, y1, x0, x1 = rows[0], rows[-1] + 1, cols[0], cols[-1] + 1
    area = (y1 - y0) * (x1 - x0) / (h * w)
    if not AREA[0] <= area <= AREA[1]:
        return None
    return x0 / w, y0 / h, x1 / w, y1 / h
