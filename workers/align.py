"""Align a copy with its original and explain the edit: what was done, and where the copy was changed.

A match score says *that* two files are copies; a moderator needs to know *what* changed (docs/detection.md,
the `edit` object). This module finds a homography from the original to the copy with SIFT
features, the ratio test and RANSAC (tried on the mirrored copy too, since SIFT is not flip-invariant),
then decomposes it into what a person understands (crop box, rotation, flip, scale, perspective,
padding), and diffs the aligned pixels after a global colour fit to find the altered regions.

The same alignment serves as the geometric verification (its inlier count), so a candidate is aligned
once and the result is kept. It runs in the workers (workers.verify: a verification job, or the threads of a
one-process `scan`), never in the daemon process. Pure numpy + OpenCV + Pillow; it never imports the daemon.
"""

from __future__ import annotations

import math
import os
import threading
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import cv2
import numpy as np
from PIL import Image

from workers import defaults, frames
from workers.content import picture_box
from workers.decode import DecodeError, decode_file
from workers.quality import quality_change

MIN_INLIERS = 15
"""RANSAC inliers below which there is no model: 15 at 512 px rejects 31 of 33
chance hash matches on the benchmark while keeping 96 % of true copies."""
MIN_INLIER_SHARE = 0.03
"""Share of the smaller keypoint set that must be inliers, over MIN_INLIERS: two different text pages
(the test half's documents) align by chance with 15-20 of 1,000 keypoints (1.5-2 %) on strongly
projective fits, while the calibration half's true copies (385 of the 1,035 its replay verifies, re-aligned)
kept at least 4.1 % (a screenshot of a recoloured photo) and 99 % of them over 6.8 %; its one chance fit had
1.5 %. The replay with it lost no true copy (bench/results/calibrate-2026-11-28-s4-verify.txt)."""
RATIO = 0.8  # Lowe's ratio test, as calibrated on the benchmark (docs/detection.md)
SIFT_FEATURES = 1000
CONTRAST_THRESHOLDS = (0.04, 0.02, 0.01, 0.005)  # SIFT's default first, then lower for low-texture pictures
TEXTURED_KEYPOINTS = 300  # fewer keypoints than this at a threshold: try the next one
CONFIDENT_INLIERS = 60  # a plain model this strong is not a mirror: skip the mirrored retry (a third SIFT)
RANSAC_PX = 4.0  # reprojection tolerance at max_side 512 (under 1 % of the side)

DIFF_THRESHOLD = 40  # 0-255, after the colour fit and the neighbourhood tolerance: JPEG q30 stays under it
FIT_SAMPLES = 40_000  # pixels the colour fit uses
MIN_REGION = 0.001  # a component smaller than this share of the copy is noise, not an edit
PADDING_MARGIN = 0.02  # the original inset by more than this in the copy means a canvas was added
NO_CROP = 0.98  # a crop box covering this much of each side of the original is not a crop
PICTURE_MARGIN = 0.03  # normalised: workers.content finds the picture's box on a 128 px copy
PERSPECTIVE_RATIO = 3.0  # the most one corner's scale may exceed another's in a plausible model
PERSPECTIVE_TOLERANCE = 0.02  # corner deviation from the local affine, in copy-normalised units
IDENTICAL_LEVELS = 2.0  # 0-255: mean difference around a point (9x9, 512 px) under which two files are identical there
SNAP_TO_IDENTITY = 0.01  # a same-size model this close to the identity (normalised) is judged at the identity
SHARED_INLIERS = 0.95  # share of the inliers on identical pixels from which they may be a shared frame
SHARED_BLOCK = 16  # px at 512: the blocks the rest of the overlap is judged in
DIFFERENT_LEVELS = 15.0  # 0-255: mean difference after the colour fit over which a block differs
REST_DIFFERS = 0.5  # share of the non-identical blocks that differ from which the pictures are not one picture
PICTURE_DETAIL = 2.0  # 0-255: grey standard deviation of a block that holds a picture (a pattern), not a flat fill
UNCORRELATED = 0.5  # correlation of two blocks' grey levels under which they hold different detail
PICTURE_SHARE = 0.25  # share of the overlap that must differ: less is an overlay (a caption, a logo), not a picture
HELD_INLIERS = 0.8  # share of the inliers inside a framed copy's picture for the match to be embedded there
FEATURE_CACHE_ENTRIES = 64
"""Pictures whose SIFT features are kept (see FeatureCache): about 130 KB each, 8 MB in all."""

_MIRROR = np.array([[-1.0, 0.0, 1.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]])  # x -> 1 - x, normalised


@dataclass(frozen=True)
class Alignment:
    """An accepted geometric model between a copy and its original, and the edit it explains."""

    inliers: int  # RANSAC inliers of the accepted model (0: pixel-exact, no features needed)
    matrix: list[list[float]]  # 3x3: the ORIGINAL's normalised (0-1) coords -> the COPY's normalised coords
    edit: dict[str, Any]  # the `edit` object (docs/detection.md), JSON-safe
    overlap: float = 1.0  # the larger of: the copy's share the original fills, the original's share the copy shows
    on_picture: int | None = None  # inliers inside the picture of a framed file (workers.content); None: = inliers


Points = np.ndarray  # float32 [n, 2]: keypoint positions in pixels of the prepared array
Descriptors = np.ndarray  # float32 [n, 128]


class FeatureCache:
    """SIFT features of recently aligned pictures, by content digest and working size.

    SIFT is about two thirds of an alignment, and one original is aligned with each of its copies: a
    backfill of a folder of crops and resizes re-matched one original up to 6 times in 1,000 files, and
    a later copy is often matched to an earlier copy. The key is the file's sha256, so a replaced file
    can never be served another content's features. OpenCV's SIFT descriptors are whole numbers in
    0..255 (it rounds them to bytes internally), so they are kept as uint8 and restored exactly.
    Shared by the verification threads: the lock guards the table, never the SIFT pass."""

    def __init__(self, entries: int = FEATURE_CACHE_ENTRIES):
        self.entries = entries
        self._table: OrderedDict[tuple[str, int], tuple[Points, np.ndarray | None]] = OrderedDict()
        self._lock = threading.Lock()

    def features(self, rgb: np.ndarray, digest: str | None, max_side: int) -> tuple[Points, Descriptors | None]:
        """The features of `rgb` (the prepared picture whose file has `digest`; None: not cached)."""
        if digest is None:
            return _features(rgb)
        key = (digest, max_side)
        with self._lock:
            hit = self._table.get(key)
            if hit is not None:
                self._table.move_to_end(key)
        if hit is None:
            points, desc = _features(rgb)
            hit = (points, None if desc is None else desc.astype(np.uint8))
            with self._lock:
                self._table[key] = hit
                while len(self._table) > self.entries:
                    self._table.popitem(last=False)
        return hit[0], None if hit[1] is None else hit[1].astype(np.float32)

    def __len__(self) -> int:
        return len(self._table)


FEATURES = FeatureCache()
"""The process's cache: the verifications a worker (or a one-process `scan`) runs share it."""


def align(copy: Image.Image, original: Image.Image, *, max_side: int = 512,
          digests: tuple[str | None, str | None] = (None, None), cache: FeatureCache = FEATURES) -> Alignment | None:
    """Align `copy` with `original`; None when no model with MIN_INLIERS inliers is found. `digests` (the
    files' sha256, when known) let `cache` reuse a picture's features from an earlier alignment."""
    c, o = _prepare(copy, max_side), _prepare(original, max_side)
    if c.shape == o.shape and np.array_equal(c, o):
        return Alignment(0, np.eye(3).tolist(), identity_edit())
    found = _find_model(c, o, lambda rgb, which: cache.features(rgb, digests[which], max_side))
    if found is None:
        return None
    inliers, matrix, points, sources = found
    warped, inside = _warp(c, o, matrix)
    valid = cv2.erode(inside, np.ones((5, 5), np.uint8)) > 0  # resampled edges are not edits
    fitted, colour = _fit_colour(c, warped, valid)
    pixels = _scale_matrix(c.shape) @ matrix @ np.linalg.inv(_scale_matrix(o.shape))  # prepared px -> px
    magnified = math.sqrt(abs(np.linalg.det(_jacobian(pixels, (o.shape[1] / 2, o.shape[0] / 2)))))
    edit = explain(c, fitted, colour, valid, inside, matrix, copy.size, original.size, magnified)
    filled, shown = _shares(matrix)
    support = _on_picture(points, copy) & _on_picture(sources, original)
    if c.shape == o.shape and np.abs(matrix - np.eye(3)).max() < SNAP_TO_IDENTITY:
        # one template at one size is pixel-aligned at the identity, which RANSAC's model misses by a
        # fraction of a pixel (scale 0.999 moved 17-22 % of an app frame's inliers off identical pixels)
        everywhere = np.ones(c.shape[:2], bool)
        support &= ~_on_shared_frame(c, o, _fit_colour(c, o, everywhere)[0], everywhere, points)
    else:
        support &= ~_on_shared_frame(c, warped, fitted, valid, points)
    if (box := _holding_picture(points, copy)) is not None:  # the visible picture, also when the match was
        edit = {**edit, "embedded": box}  # cropped to fill it (a feed's square): its box in the frame
        edit["summary"] = summary(edit)
    return Alignment(inliers, matrix.tolist(), edit, overlap=round(max(filled, shown), 4),
                     on_picture=int(support.sum()))


def align_files(copy_path: str, original_path: str, *, max_side: int = 512,
                max_pixels: int = defaults.MAX_PIXELS, max_bytes: int = defaults.MAX_FILE_BYTES,
                follow_symlinks: bool = False) -> Alignment | None:
    """Re-read both files with the workers' safe decoder and align them; None if either is gone, unreadable
    or (unless `follow_symlinks`, the watcher's setting) reached through a symlink: the caller then decides
    without a verification (a missing file is no evidence)."""
    images, digests = [], []
    for path in (copy_path, original_path):
        if not follow_symlinks and os.path.islink(path):
            return None
        try:
            decoded = decode_file(path, size=max_side, max_pixels=max_pixels, max_bytes=max_bytes,
                                  follow_symlinks=follow_symlinks)
        except DecodeError:
            return None
        images.append(decoded.image)
        digests.append(decoded.sha256)
    return align(images[0], images[1], max_side=max_side, digests=(digests[0], digests[1]))


def identity_edit() -> dict[str, Any]:
    """The edit of a pixel-exact copy: nothing changed."""
    return {"crop": None, "rotation": 0.0, "flip": None, "scale": 1.0, "perspective": False,
            "padding": False, "colour": [], "quality": [], "altered": [], "altered_fraction": 0.0,
            "embedded": None, "summary": "identical pixels"}


# ---- geometry --------------------------------------------------------------------------------

def _prepare(image: Image.Image, max_side: int) -> np.ndarray:
    """RGB uint8 array with the long side at most max_side (features and diffs at a bounded cost)."""
    rgb = image.convert("RGB")
    scale = max_side / max(rgb.size)
    if scale < 1:
        rgb = rgb.resize((max(1, round(rgb.width * scale)), max(1, round(rgb.height * scale))),
                         Image.Resampling.BILINEAR, reducing_gap=2.0)
    return np.asarray(rgb)


def _features(rgb: np.ndarray) -> tuple[Points, Descriptors | None]:
    """SIFT on locally equalised gray: a dark or hazy photo otherwise yields too few keypoints to align
    (a night wallpaper gave 1 alignment in 20 copies), and equalising both sides keeps them comparable.
    A picture still short of TEXTURED_KEYPOINTS (a bokeh background, an overcast sky: 6 to 44 keypoints
    at SIFT's default) is detected again at lower contrast thresholds, so that its faint detail aligns
    too; a textured photo keeps the default's strong keypoints. Each side picks its own threshold: the
    descriptors do not depend on it, so a sharp original still matches its blurred copy.
    Keypoints as an array of their positions: all the model needs, and cheap to keep (FeatureCache)."""
    clahe = cv2.createCLAHE(clipLimit=2.0, tileGridSize=(8, 8))  # one per call: safe across threads
    gray = clahe.apply(cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY))
    for threshold in CONTRAST_THRESHOLDS:
        keys, desc = cv2.SIFT.create(nfeatures=SIFT_FEATURES, contrastThreshold=threshold).detectAndCompute(
            gray, None)
        if len(keys) >= TEXTURED_KEYPOINTS:
            break
    return np.array([k.pt for k in keys], np.float32).reshape(-1, 2), desc


def _scale_matrix(shape: tuple[int, ...]) -> np.ndarray:
    """Normalised (0-1) coords -> pixel coords of an array of this shape."""
    return np.diag([float(shape[1]), float(shape[0]), 1.0])


def _find_model(c: np.ndarray, o: np.ndarray, features: Callable[[np.ndarray, int], tuple[Points, Descriptors | None]]
                ) -> tuple[int, np.ndarray, np.ndarray, np.ndarray] | None:
    """The better of the plain and mirrored homographies, original -> copy in normalised coords, with its
    inliers' positions in the copy and in the original (normalised). `features(rgb, which)` gives SIFT
    features of the copy (which 0) or the original (1); the mirrored copy's are computed here (not cached:
    a mirror is tried only when the plain model is weak)."""
    keys_o, desc_o = features(o, 1)
    if desc_o is None or len(keys_o) < MIN_INLIERS:
        return None
    best: tuple[int, np.ndarray, np.ndarray, np.ndarray] | None = None
    for mirrored in (False, True):
        if mirrored and best is not None and best[0] >= CONFIDENT_INLIERS and np.linalg.det(best[1][:2, :2]) > 0:
            break  # a strong, unreflected plain model is no mirror: skip the third SIFT pass
        copy = c[:, ::-1].copy() if mirrored else c
        keys_c, desc_c = _features(copy) if mirrored else features(copy, 0)
        if desc_c is None or len(keys_c) < MIN_INLIERS:
            continue
        pairs = cv2.BFMatcher(cv2.NORM_L2).knnMatch(desc_o, desc_c, k=2)
        good = [p[0] for p in pairs if len(p) == 2 and p[0].distance < RATIO * p[1].distance]
        if len(good) < MIN_INLIERS:
            continue
        src = keys_o[[m.queryIdx for m in good]]
        dst = keys_c[[m.trainIdx for m in good]]
        homography, mask = cv2.findHomography(src, dst, cv2.RANSAC, RANSAC_PX, maxIters=2000)
        if homography is None:
            continue
        inliers = int(mask.sum())
        if inliers < max(MIN_INLIERS, MIN_INLIER_SHARE * min(len(keys_o), len(keys_c))):
            continue  # too few of what the pictures offer: a chance fit of common shapes (letters, stars)
        if best is not None and inliers <= best[0]:
            continue
        normalised = np.linalg.inv(_scale_matrix(c.shape)) @ homography @ _scale_matrix(o.shape)
        points = dst[mask.ravel() > 0] / (c.shape[1], c.shape[0])
        sources = src[mask.ravel() > 0] / (o.shape[1], o.shape[0])
        if mirrored:
            normalised = _MIRROR @ normalised
            points[:, 0] = 1.0 - points[:, 0]
        best = (inliers, normalised / normalised[2, 2], points, sources)
    if best is None or not _plausible(best[1]):
        return None
    return best


def _on_picture(points: np.ndarray, image: Image.Image) -> np.ndarray:
    """Which points (normalised) lie on the picture of a framed image (workers.content.picture_box, with a
    margin for its coarse box); all of them when the image is not a picture inside a frame. Two different
    photos in one screenshot template align on the frame they share, with hundreds of inliers on its bars
    and text lines, none on the pictures."""
    box = picture_box(image)
    if box is None:
        return np.ones(len(points), bool)
    x0, y0, x1, y1 = box
    m = PICTURE_MARGIN
    return ((points[:, 0] >= x0 - m) & (points[:, 0] <= x1 + m) & (points[:, 1] >= y0 - m)
            & (points[:, 1] <= y1 + m))


def _holding_picture(points: np.ndarray, image: Image.Image) -> list[float] | None:
    """The box of the picture inside a framed image (workers.frames) that holds nearly all the inliers
    (HELD_INLIERS): where a match shown inside a page sits, also when it was cropped to fit. A copy that is
    the picture itself spreads its inliers over the whole file, beyond any box found in it."""
    best, share = None, HELD_INLIERS
    m = PICTURE_MARGIN
    for box in frames.find(image):
        x0, y0, x1, y1 = box
        held = float(((points[:, 0] >= x0 - m) & (points[:, 0] <= x1 + m) & (points[:, 1] >= y0 - m)
                      & (points[:, 1] <= y1 + m)).mean()) if len(points) else 0.0
        if held >= share:
            best, share = [round(v, 4) for v in box], held
    return best


def _shares(matrix: np.ndarray) -> tuple[float, float]:
    """(share of the copy the original's frame fills, share of the original the copy's frame shows).
    A copy has one of them near 1 (a crop shows part of the original and is filled by it; a pad or a paste
    shows all of it); two shots of one scene panned apart share a strip of each frame (bursts)."""
    square = np.array([[0, 0], [1, 0], [1, 1], [0, 1]], float)
    filled = _area(_intersection(_project(matrix, square)))
    shown = _area(_intersection(_project(np.linalg.inv(matrix), square)))
    return min(1.0, filled), min(1.0, shown)


def _area(polygon: np.ndarray) -> float:
    """Shoelace area of a polygon (normalised units: the unit square is 1)."""
    if len(polygon) < 3:
        return 0.0
    x, y = polygon[:, 0], polygon[:, 1]
    return float(abs(np.dot(x, np.roll(y, -1)) - np.dot(y, np.roll(x, -1))) / 2)


def _plausible(matrix: np.ndarray) -> bool:
    """Reject degenerate fits, which RANSAC returns on repetitive texture and on the faint keypoints of
    flat pictures: collapsed or exploded (the original shown at under a tenth of its side, where it has
    no 15 keypoints left at 512 px, or a hundredth of it blown up), or so oblique that one corner of the
    original is drawn at over PERSPECTIVE_RATIO times the scale of another (a chance fit of a sky to a
    lamp had 125; the bench's perspective edits, corners moved by up to 15 %, stay under 2)."""
    if not np.isfinite(matrix).all():
        return False
    det = abs(np.linalg.det(_jacobian(matrix, (0.5, 0.5))))
    depth = np.array([[0, 0, 1], [1, 0, 1], [1, 1, 1], [0, 1, 1]], float) @ matrix[2]  # w at the corners
    return 1e-2 < det < 1e2 and bool((depth > 0).all()) and depth.max() < PERSPECTIVE_RATIO * depth.min()


def _project(matrix: np.ndarray, points: np.ndarray) -> np.ndarray:
    ones = np.ones((len(points), 1))
    mapped = np.hstack([points, ones]) @ matrix.T
    return mapped[:, :2] / mapped[:, 2:3]


def _jacobian(matrix: np.ndarray, at: tuple[float, float]) -> np.ndarray:
    """The local linear part of a homography at a point (finite differences)."""
    eps = 1e-4
    x, y = at
    p = _project(matrix, np.array([[x, y], [x + eps, y], [x, y + eps]]))
    return np.column_stack([(p[1] - p[0]) / eps, (p[2] - p[0]) / eps])


def _geometry(matrix: np.ndarray, copy_size: tuple[int, int], original_size: tuple[int, int]) -> dict[str, Any]:
    """Crop box, rotation, flip, scale, perspective and padding of a normalised homography."""
    to_copy_px = np.diag([copy_size[0], copy_size[1], 1.0])
    from_orig_px = np.diag([1 / original_size[0], 1 / original_size[1], 1.0])
    pixel = to_copy_px @ matrix @ from_orig_px  # original pixels -> copy pixels, square pixels both
    square = np.array([[0, 0], [1, 0], [1, 1], [0, 1]], float)
    inverse = np.linalg.inv(matrix)
    visible = _intersection(_project(inverse, square))
    centre = tuple(visible.mean(axis=0)) if len(visible) else (0.5, 0.5)
    jacobian = _jacobian(pixel, (centre[0] * original_size[0], centre[1] * original_size[1]))
    flipped = np.linalg.det(jacobian) < 0
    unflipped = jacobian @ np.diag([-1.0, 1.0]) if flipped else jacobian
    # PIL's rotate(angle) turns the picture counter-clockwise on screen; with y pointing down, the
    # image of the x axis is (cos a, -sin a).
    rotation = math.degrees(math.atan2(-unflipped[1, 0], unflipped[0, 0]))
    flip = None
    if flipped:
        flip = "horizontal"
        if abs(rotation) > 135:  # a vertical flip is a horizontal one turned by 180 degrees
            flip, rotation = "vertical", rotation - math.copysign(180.0, rotation)
    scale = math.sqrt(abs(np.linalg.det(jacobian)))
    crop = _box(visible) if len(visible) else None
    if crop is not None and crop[2] - crop[0] >= NO_CROP and crop[3] - crop[1] >= NO_CROP:
        crop = None
    return {"crop": crop, "rotation": round(rotation, 2), "flip": flip, "scale": round(scale, 4),
            "perspective": _is_perspective(matrix, visible), "padding": _padding(matrix)}


def _intersection(polygon: np.ndarray) -> np.ndarray:
    """`polygon` clipped to the unit square (Sutherland-Hodgman): exact also when edges coincide, where
    a general convex-convex intersection degenerates (an uncropped copy maps the square onto itself)."""
    points = [tuple(p) for p in polygon]
    for axis, keep_low in ((0, True), (0, False), (1, True), (1, False)):
        inside = (lambda p, a=axis: p[a] >= 0.0) if keep_low else (lambda p, a=axis: p[a] <= 1.0)
        bound = 0.0 if keep_low else 1.0
        clipped = []
        for i, current in enumerate(points):
            previous = points[i - 1]
            if inside(current) != inside(previous):
                t = (bound - previous[axis]) / (current[axis] - previous[axis])
                clipped.append(tuple(previous[k] + t * (current[k] - previous[k]) for k in range(2)))
            if inside(current):
                clipped.append(current)
        points = clipped
        if not points:
            return np.empty((0, 2))
    return np.array(points, float)


def _box(points: np.ndarray) -> list[float]:
    low, high = np.clip(points.min(axis=0), 0, 1), np.clip(points.max(axis=0), 0, 1)
    return [round(float(v), 4) for v in (low[0], low[1], high[0], high[1])]


def _is_perspective(matrix: np.ndarray, visible: np.ndarray) -> bool:
    """True when the visible part's corners land measurably off the best local affine map."""
    if len(visible) < 3:
        return False
    centre = visible.mean(axis=0)
    affine = _jacobian(matrix, tuple(centre))
    offset = _project(matrix, centre[None])[0]
    exact = _project(matrix, visible)
    approx = (visible - centre) @ affine.T + offset
    return bool(np.abs(exact - approx).max() > PERSPECTIVE_TOLERANCE)


def _padding(matrix: np.ndarray) -> list[float] | bool:
    """Where the original sits in the copy when a canvas was added around it (meme bands, borders,
    screenshot frames), else False."""
    square = np.array([[0, 0], [1, 0], [1, 1], [0, 1]], float)
    placed = _project(matrix, square)
    low, high = placed.min(axis=0), placed.max(axis=0)
    if (low > PADDING_MARGIN).any() or (high < 1 - PADDING_MARGIN).any():
        return _box(placed)
    return False


# ---- pixels ----------------------------------------------------------------------------------

def _warp(c: np.ndarray, o: np.ndarray, matrix: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The original warped onto the copy's pixels by an accepted model, and the mask (255) it covers."""
    homography = _scale_matrix(c.shape) @ matrix @ np.linalg.inv(_scale_matrix(o.shape))
    size = (c.shape[1], c.shape[0])
    warped = cv2.warpPerspective(o, homography, size, flags=cv2.INTER_LINEAR)
    inside = cv2.warpPerspective(np.full(o.shape[:2], 255, np.uint8), homography, size, flags=cv2.INTER_NEAREST)
    return warped, inside


def explain(c: np.ndarray, fitted: np.ndarray, colour: list[str], valid: np.ndarray, inside: np.ndarray,
            matrix: np.ndarray, copy_size: tuple[int, int], original_size: tuple[int, int],
            magnified: float = 1.0) -> dict[str, Any]:
    """The whole `edit` object for a prepared copy, the colour-fitted warped original and an accepted model;
    `magnified`: the scale the prepared original is warped onto the copy's prepared pixels at."""
    edit = _geometry(matrix, copy_size, original_size)
    added = _added_content(c, inside == 0)
    changed = _changed(c, fitted, valid) | added
    boxes, fraction = _regions(changed)
    # the original placed whole on a canvas that holds content (a page, a chat, caption bands): its box (a
    # bare copy of a part of a framed match shows that part with more around it, which is no frame)
    embedded = edit["padding"] if edit["padding"] and edit["crop"] is None and added.any() else None
    edit.update(colour=colour, quality=quality_change(c, fitted, valid, magnified), altered=boxes, altered_fraction=fraction,
                embedded=embedded)
    edit["summary"] = summary(edit)
    return edit


def _on_shared_frame(c: np.ndarray, warped: np.ndarray, fitted: np.ndarray, valid: np.ndarray,
                     points: np.ndarray) -> np.ndarray:
    """Which inliers (copy-normalised) lie on a frame the two files share, rather than on a shared picture.

    Two different photos pasted into one page, app or watermark template align on the template: its
    inliers sit on pixels the two files have identically (the same bars and words, drawn by the same
    program), while the rest of the overlap, the two pictures, differs. A real copy's inliers sit on
    its picture, which an edit and a resampling leave close but not identical; and where a copy does
    share identical pixels with its original (two screenshots of one photo), the rest agrees too. So
    when nearly all inliers sit on identical pixels and most of the rest of the overlap differs, those
    inliers are a shared frame and no support (workers.content's picture box catches most frames from
    one image alone; this catches the ones its colour statistics miss, such as the page template)."""
    none = np.zeros(len(points), bool)
    raw = _channel_max(np.abs(c.astype(np.int16) - warped.astype(np.int16))).astype(np.float32)
    local = cv2.blur(raw, (9, 9))
    height, width = raw.shape
    at = np.clip((points * (width, height)).astype(int), 0, (width - 1, height - 1))
    identical = local[at[:, 1], at[:, 0]] <= IDENTICAL_LEVELS
    if not len(points) or identical.mean() < SHARED_INLIERS:
        return none
    side = SHARED_BLOCK
    h, w = (height // side) * side, (width // side) * side

    def blocks(a: np.ndarray) -> np.ndarray:
        return a[:h, :w].reshape(h // side, side, w // side, side).mean(axis=(1, 3))

    fit = cv2.GaussianBlur(_channel_max(np.abs(c.astype(np.int16) - fitted.astype(np.int16))).astype(np.float32),
                           (5, 5), 0)
    covered = blocks(valid.astype(np.float32)) > 0.9
    rest = covered & (blocks(raw) > IDENTICAL_LEVELS)  # the overlap the files do not share pixel for pixel
    mine, theirs = (cv2.cvtColor(a, cv2.COLOR_RGB2GRAY).astype(np.float32) for a in (c, fitted))
    spread, spread_theirs = (np.sqrt(np.maximum(blocks(g * g) - blocks(g) ** 2, 0)) for g in (mine, theirs))
    textured = (spread >= PICTURE_DETAIL) & (spread_theirs >= PICTURE_DETAIL)
    correlation = (blocks(mine * theirs) - blocks(mine) * blocks(theirs)) / np.maximum(spread * spread_theirs, 1e-3)
    # a block differs in its levels, or, where both files have detail, in its pattern: two dark, blurred
    # pictures differ by under DIFFERENT_LEVELS in half their blocks, but their detail does not correlate
    differs = covered & ((blocks(fit) > DIFFERENT_LEVELS) | (rest & textured & (correlation < UNCORRELATED)))
    if differs.sum() < PICTURE_SHARE * covered.sum() or differs.sum() < REST_DIFFERS * rest.sum():
        return none  # the rest agrees (one picture), or what differs is too small to be a picture (an overlay)
    if (spread[differs] >= PICTURE_DETAIL).mean() < 0.5:
        return none  # what differs is flat in the copy: a block or band laid over the picture, not a picture
    return identical


def _fit_colour(c: np.ndarray, warped: np.ndarray, valid: np.ndarray) -> tuple[np.ndarray, list[str]]:
    """Map the warped original through the global colour change the copy shows (a 3x3 + bias linear
    fit, then a per-colour-bin correction for non-linear changes such as HSV hue rotations and
    clipping), each fitted robustly so overlays do not pull it; and name the change."""
    where = np.flatnonzero(valid)
    where = where[::max(1, len(where) // FIT_SAMPLES)]  # a sample fits a global change as well as every pixel
    src = warped.reshape(-1, 3)[where].astype(np.float32)
    dst = c.reshape(-1, 3)[where].astype(np.float32)
    if len(src) < 100:
        return warped, []
    design = np.hstack([src, np.ones((len(src), 1), np.float32)])
    keep = np.ones(len(src), bool)
    for _ in range(2):  # refit without the pixels that do not follow the global change (overlays)
        coefficients, *_ = np.linalg.lstsq(design[keep], dst[keep], rcond=None)
        residual = _channel_max(np.abs(design @ coefficients - dst))
        keep = residual < max(20.0, float(np.percentile(residual, 80)))
    linear = design @ coefficients
    pixels = warped.reshape(-1, 3)
    full_bins = _colour_bins(pixels)
    bins = full_bins[where]
    correction = np.zeros((512, 3), np.float32)
    counts = np.bincount(bins[keep], minlength=512).astype(np.float32)
    for channel in range(3):
        sums = np.bincount(bins[keep], weights=(dst - linear)[keep, channel], minlength=512)
        correction[:, channel] = np.where(counts > 0, sums / np.maximum(counts, 1), 0)
    full_design = np.ones((len(pixels), 4), np.float32)  # filled in place: hstack's values, one copy fewer
    full_design[:, :3] = pixels
    mapped = full_design @ coefficients
    mapped += np.take(correction, full_bins, axis=0)  # indexing's rows at a quarter of its cost
    fitted = np.clip(mapped, 0, 255).reshape(warped.shape).astype(np.uint8)
    return fitted, _name_colour(src[keep], dst[keep])


def _channel_max(a: np.ndarray) -> np.ndarray:
    """The largest of each pixel's 3 channels (the last axis), by two elementwise maxima: the same values
    as a.max(axis=-1), which numpy reduces pixel by pixel at about 20 times the cost."""
    return np.maximum(np.maximum(a[..., 0], a[..., 1]), a[..., 2])


def _channel_min(a: np.ndarray) -> np.ndarray:
    """The smallest of each pixel's 3 channels: see _channel_max."""
    return np.minimum(np.minimum(a[..., 0], a[..., 1]), a[..., 2])


def _colour_bins(rgb: np.ndarray) -> np.ndarray:
    """The 8 x 8 x 8 colour bin of each uint8 RGB row, by shifts (an integer matrix product cost 20 ms)."""
    bins = rgb >> 5
    return (bins[:, 0].astype(np.int32) << 6) | (bins[:, 1].astype(np.int32) << 3) | bins[:, 2]


def _name_colour(src: np.ndarray, dst: np.ndarray) -> list[str]:
    """Name the global colour change between matching pixels of the original and the copy."""
    names = []
    weights = np.array([0.299, 0.587, 0.114], np.float32)
    luma_src, luma_dst = float((src @ weights).mean()), float((dst @ weights).mean())
    chroma_src = float((_channel_max(src) - _channel_min(src)).mean())
    chroma_dst = float((_channel_max(dst) - _channel_min(dst)).mean())
    if chroma_dst < 3 and chroma_src > 10:
        names.append("grayscale")
    elif chroma_src > 10 and luma_src > 5 and luma_dst > 5:
        # saturation relative to brightness, so a darker copy is not also called desaturated
        ratio = (chroma_dst / luma_dst) / (chroma_src / luma_src)
        if not 0.7 < ratio < 1.4:
            names.append("saturation")
    if "grayscale" not in names and _hue_shift(src, dst) > 20:
        names.append("hue shift")
    if luma_src > 5 and not 0.85 < luma_dst / luma_src < 1.15:
        names.append("brightness")
    return names


def _hue_shift(src: np.ndarray, dst: np.ndarray) -> float:
    """Mean hue difference in degrees over pixels with colour in both (circular, saturation weighted)."""
    hsv_src = cv2.cvtColor(src.astype(np.uint8)[None], cv2.COLOR_RGB2HSV_FULL)[0].astype(np.float32)
    hsv_dst = cv2.cvtColor(dst.astype(np.uint8)[None], cv2.COLOR_RGB2HSV_FULL)[0].astype(np.float32)
    weight = np.minimum(hsv_src[:, 1], hsv_dst[:, 1]) * (np.minimum(hsv_src[:, 2], hsv_dst[:, 2]) > 30)
    if weight.sum() < 1e-3 * 255 * len(src):
        return 0.0
    delta = (hsv_dst[:, 0] - hsv_src[:, 0]) / 256 * 2 * np.pi
    mean = math.atan2(float((weight * np.sin(delta)).sum()), float((weight * np.cos(delta)).sum()))
    return abs(math.degrees(mean))


def _changed(c: np.ndarray, fitted: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """Pixels of the copy outside the range of the colour-fitted original's 5x5 neighbourhood:
    tolerant of sub-pixel misalignment, blur and resampling, not of new content."""
    kernel = np.ones((5, 5), np.uint8)
    smooth_c = cv2.GaussianBlur(c, (3, 3), 0).astype(np.int16)
    smooth_f = cv2.GaussianBlur(fitted, (3, 3), 0)
    high = cv2.dilate(smooth_f, kernel).astype(np.int16)
    low = cv2.erode(smooth_f, kernel).astype(np.int16)
    excess = _channel_max(np.maximum(smooth_c - high, low - smooth_c))
    return (excess > DIFF_THRESHOLD) & valid


def _added_content(c: np.ndarray, outside: np.ndarray) -> np.ndarray:
    """The parts of the copy outside the original that hold content (a caption in a meme band, a
    screenshot's interface) rather than a plain fill (borders, the corners a rotation exposes)."""
    if outside.mean() < MIN_REGION:
        return np.zeros(outside.shape, bool)
    count, labels = cv2.connectedComponents(outside.astype(np.uint8))
    gray = cv2.cvtColor(c, cv2.COLOR_RGB2GRAY)
    edges = cv2.morphologyEx(gray, cv2.MORPH_GRADIENT, np.ones((3, 3), np.uint8)) > 40
    edges &= cv2.erode(outside.astype(np.uint8), np.ones((9, 9), np.uint8)) > 0  # not the picture's rim
    content = np.zeros(outside.shape, bool)
    for label in range(1, count):
        part = labels == label
        if edges[part].mean() > 0.002:
            content |= part
    return content


def _regions(changed: np.ndarray) -> tuple[list[list[float]], float]:
    """Boxes (copy-normalised) of the connected altered regions, and the altered share of the copy."""
    mask = cv2.morphologyEx(changed.astype(np.uint8), cv2.MORPH_OPEN, np.ones((3, 3), np.uint8))
    side = max(3, round(max(mask.shape) / 40))
    mask = cv2.morphologyEx(mask, cv2.MORPH_CLOSE, np.ones((side, side), np.uint8))
    _, _, stats, _ = cv2.connectedComponentsWithStats(mask)
    height, width = mask.shape
    boxes, area = [], 0
    for label in np.argsort(-stats[1:, cv2.CC_STAT_AREA]) + 1:
        x, y, w, h, pixels = stats[label]
        if pixels < MIN_REGION * height * width:
            continue
        area += pixels
        boxes.append([round(x / width, 4), round(y / height, 4), round((x + w) / width, 4),
                      round((y + h) / height, 4)])
    return boxes, round(area / (height * width), 4)


# ---- words -----------------------------------------------------------------------------------

def summary(edit: dict[str, Any]) -> str:
    """One line a moderator reads: 'cropped to 62 %, mirrored, 2 regions altered (8 %), largest at the top'."""
    parts = []
    if edit["crop"]:
        x0, y0, x1, y1 = edit["crop"]
        parts.append(f"cropped to {round((x1 - x0) * (y1 - y0) * 100)} %")
    if abs(edit["rotation"]) >= 1:
        way = "counter-clockwise" if edit["rotation"] > 0 else "clockwise"
        parts.append(f"rotated {abs(edit['rotation']):.0f}° {way}")
    if edit["flip"] == "horizontal":
        parts.append("mirrored")
    elif edit["flip"] == "vertical":
        parts.append("flipped upside down")
    if edit["perspective"]:
        parts.append("perspective changed")
    if not 0.9 <= edit["scale"] <= 1.1:
        parts.append(f"resized to {edit['scale'] * 100:.0f} %")
    if edit["embedded"]:
        parts.append("shown inside a larger page")
    elif edit["padding"]:
        parts.append("placed on a larger canvas")
    parts += [{"hue shift": "hue shifted"}.get(name, name + " changed" if name != "grayscale" else name)
              for name in edit["colour"]]
    parts += edit["quality"]
    if edit["altered"]:
        n = len(edit["altered"])
        where = _where(edit["altered"][0])
        regions = "1 region" if n == 1 else f"{n} regions"
        parts.append(f"{regions} altered ({edit['altered_fraction'] * 100:.0f} %), largest at the {where}")
    return ", ".join(parts) if parts else "no visible change"


def _where(box: list[float]) -> str:
    """'top left', 'bottom', 'centre'...: where a box's centre lies in thirds of the image."""
    cx, cy = (box[0] + box[2]) / 2, (box[1] + box[3]) / 2
    row = "top" if cy < 1 / 3 else "bottom" if cy > 2 / 3 else ""
    column = "left" if cx < 1 / 3 else "right" if cx > 2 / 3 else ""
    return " ".join(p for p in (row, column) if p) or "centre"
