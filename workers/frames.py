"""Pictures inside frames: the photo in a page or app screenshot, the image between meme caption bands, the
tiles of a collage. Each is described on its own (workers.pipeline embeds its crop), so a screenshot of a
known photo is matched to that photo, and two different pictures in one frame are compared by their pictures,
never by the frame they share.

Why colour statistics on a small plane: frames are drawn by programs in a few flat colours (background,
bars, bubbles, bands, gutters), which cover a large share of the file, while a photo's pixels rarely repeat
one exact colour. So the most frequent quantised colours are the frame; what is left, once thin strokes
(text, icons, JPEG fringes) are opened away, is pictures; each connected, box-shaped part of it is one
picture. About 1 CPU-ms per image at SIDE (bench/frames.py prints the cost).
"""

from __future__ import annotations

import cv2
import numpy as np
from PIL import Image

Box = tuple[float, float, float, float]
"""(x0, y0, x1, y1), normalised to the image: what the `edit` object's `embedded` reports."""

SIDE = 160
"""Long side of the plane the pictures are found on: a collage's gutter (1.6 % of the side) stays 2 px wide."""

BITS = 4
"""Bits per channel colours are compared at: a frame's flat colours stay one colour, JPEG noise and all."""

FRAME_COLOURS = 6
"""The most frequent quantised colours that count as the frame (background, bar, text, border)."""

MIN_COLOUR_SHARE = 0.02
"""A frame colour covers at least this share of the image: a colour drawn as an area, not a photo's mode."""

WIDE_COLOUR_SHARE = 0.05
"""A frequent colour covering at least this share is frame even when it does not reach the file's edge (a
chat's bubbles); a less frequent one is frame only where it lines MIN_EDGE_SHARE of the file's edge."""

MIN_EDGE_SHARE = 0.02
"""See WIDE_COLOUR_SHARE: a bar across the top of a phone screen lines about 2 % of its edge."""

MIN_FRAME_SHARE = 0.1
"""The frame colours must cover at least this share of the image, else it is not a picture inside a frame."""

AREA = (0.04, 0.8)
"""A picture covers this share of the file: smaller is an icon or an avatar, larger is the file itself."""

MIN_FILL = 0.6
"""Share of its box a picture's pixels fill: pictures are rectangles, a frame's scattered leftovers are not."""

MAX_PICTURES = 4
"""Pictures described per file, largest first (a 2 x 2 collage)."""

MIN_BORDER = 0.7
"""Share of the pixels around a picture's box (sides inside the image) that must be frame colours."""

GROW_SHARE = 0.1
"""A line just outside a box with more of the picture than this still belongs to it."""

OPENING = 5
"""Side of the square the opening erodes and dilates with: wider than a text stroke at SIDE pixels."""


def find(image: Image.Image) -> list[Box]:
    """The pictures inside a frame, largest first; empty when the image is not pictures inside a frame."""
    small = image.convert("RGB")
    small.thumbnail((SIDE, SIDE), Image.Resampling.BILINEAR)
    rgb = np.asarray(small, dtype=np.uint8)
    h, w = rgb.shape[:2]
    if h < 16 or w < 16:
        return []
    q = (rgb >> (8 - BITS)).astype(np.int32)
    code = (q[..., 0] << (2 * BITS)) | (q[..., 1] << BITS) | q[..., 2]
    counts = np.bincount(code.ravel(), minlength=1 << (3 * BITS))
    top = np.argsort(counts)[::-1][:FRAME_COLOURS]
    top = top[counts[top] >= MIN_COLOUR_SHARE * h * w]
    # a frame's colours reach the file's edge or cover much of it; a flat sky inside a collage tile does neither
    ring = np.concatenate([code[0], code[-1], code[:, 0], code[:, -1]])
    on_edge = np.bincount(ring, minlength=1 << (3 * BITS))[top] >= MIN_EDGE_SHARE * len(ring)
    top = top[on_edge | (counts[top] >= WIDE_COLOUR_SHARE * h * w)]
    frame = np.isin(code, top)
    if frame.mean() < MIN_FRAME_SHARE:
        return []
    kernel = np.ones((OPENING, OPENING), np.uint8)
    mask = cv2.morphologyEx((~frame).astype(np.uint8), cv2.MORPH_OPEN, kernel)
    _, _, stats, _ = cv2.connectedComponentsWithStats(mask, connectivity=4)
    boxes: list[tuple[int, int, int, int]] = []
    for label in np.argsort(-stats[1:, cv2.CC_STAT_AREA]) + 1:
        x, y, bw, bh, pixels = (int(v) for v in stats[label])
        if pixels < MIN_FILL * bw * bh or bw * bh < AREA[0] * h * w:
            continue
        box = _grow(mask, x, y, x + bw, y + bh)
        if any(_overlap(box, seen) for seen in boxes):
            continue  # a part of a picture already found (a white wall cut it in two)
        x0, y0, x1, y1 = box
        edges = (x0 == 0, y0 == 0, x1 == w, y1 == h)  # left, top, right, bottom
        if sum(edges) > 2 or (sum(edges) == 2 and edges[0] != edges[2]):
            continue  # in a corner of the file, or along three sides: a part of a photo, not one placed in it
        if AREA[0] <= (x1 - x0) * (y1 - y0) / (h * w) <= AREA[1] and _framed(frame, *box):
            boxes.append(box)
    return [(x0 / w, y0 / h, x1 / w, y1 / h) for x0, y0, x1, y1 in boxes[:MAX_PICTURES]]


def _grow(mask: np.ndarray, x0: int, y0: int, x1: int, y1: int) -> tuple[int, int, int, int]:
    """The box grown side by side while the line just outside it still crosses the picture: a photo's own
    flat patches in frame colours (a white wall by the edge) cut it short, the frame's rows do not."""
    h, w = mask.shape
    grew = True
    while grew:
        grew = False
        if y0 > 0 and mask[y0 - 1, x0:x1].mean() > GROW_SHARE:
            y0, grew = y0 - 1, True
        if y1 < h and mask[y1, x0:x1].mean() > GROW_SHARE:
            y1, grew = y1 + 1, True
        if x0 > 0 and mask[y0:y1, x0 - 1].mean() > GROW_SHARE:
            x0, grew = x0 - 1, True
        if x1 < w and mask[y0:y1, x1].mean() > GROW_SHARE:
            x1, grew = x1 + 1, True
    return x0, y0, x1, y1


def _overlap(a: tuple[int, int, int, int], b: tuple[int, int, int, int]) -> bool:
    """Whether two boxes share more than half of the smaller one."""
    inter = max(0, min(a[2], b[2]) - max(a[0], b[0])) * max(0, min(a[3], b[3]) - max(a[1], b[1]))
    return inter > 0.5 * min((a[2] - a[0]) * (a[3] - a[1]), (b[2] - b[0]) * (b[3] - b[1]))


def _framed(frame: np.ndarray, x0: int, y0: int, x1: int, y1: int) -> bool:
    """Whether the box's edges inside the image run along the frame: a picture placed by a program has a
    straight border of frame colour around it, while a bright patch of a photo (a sky, a white wall) left
    out of its flat colours does not. The pixels just outside each side not on the image's edge count."""
    h, w = frame.shape
    ring = [frame[y0 - 1, x0:x1] if y0 > 0 else None, frame[y1, x0:x1] if y1 < h else None,
            frame[y0:y1, x0 - 1] if x0 > 0 else None, frame[y0:y1, x1] if x1 < w else None]
    sides = [side for side in ring if side is not None]
    return bool(sides) and float(np.concatenate(sides).mean()) >= MIN_BORDER


def crop(image: Image.Image, box: Box) -> Image.Image:
    """The picture in `box` (normalised) cut out of the image."""
    w, h = image.size
    return image.crop((round(box[0] * w), round(box[1] * h), round(box[2] * w), round(box[3] * h)))
