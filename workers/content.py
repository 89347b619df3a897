"""Where the pictures are inside a frame, as one box: the part of a framed file that can support a copy.

Two different photos in one screenshot template align on the frame they share; inliers outside this box are
no support (workers.align). The pictures themselves are found by workers.frames; a collage's tiles count
together, so inliers on any of its pictures are support.
"""

from __future__ import annotations

from PIL import Image

from workers import frames


def picture_box(image: Image.Image) -> frames.Box | None:
    """(x0, y0, x1, y1) in normalised coordinates around every picture inside a frame, or None when the image
    is not pictures inside a frame."""
    found = frames.find(image)
    if not found:
        return None
    return (min(b[0] for b in found), min(b[1] for b in found), max(b[2] for b in found), max(b[3] for b in found))
