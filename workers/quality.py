"""Quality edits between an aligned copy and its original: blurred or sharpened.

A blurred copy has the original's geometry and colours, so the alignment finds nothing to say about it and
used to call it "no visible change". What a blur or a sharpening changes is the fine detail: the copy's
Laplacian energy against the (aligned, colour-fitted) original's, measured where the original has detail
(flat sky or a plain frame would dilute the ratio towards 1). Resampling the original onto the copy's
pixels softens it a little, so the thresholds are asymmetric (bench/explain.py measures them).
"""

from __future__ import annotations

import cv2
import numpy as np

BLURRED = 0.72
"""Energy ratio (copy / original) under which the copy is blurred: on 14 calibration-half pictures the
bench's blurs (radius 1.5-4 px at 1024 px) measured 0.19-0.78 (13 under 0.51), JPEG q30 0.86-1.04, half-size
copies 0.84-1.52, brightness changes 0.65-1.06 (one clipped darkening under this)."""
SHARPENED = 1.6
"""Energy ratio over which the copy is sharpened: an unsharp mask (radius 2, 150 %) measured 1.15-2.02 (11
of 14 over this), half-size copies up to 1.52 (at their own size they are sharper than the original
resampled onto them)."""
MAGNIFIED = 1.15
"""Scale of the original onto the copy's pixels over which the copy's extra detail is its own resolution (a
bare picture matched to the small one in a screenshot), not a sharpening."""
DETAIL_SHARE = 0.5
"""The share of the overlap, by the original's local detail, that the ratio is measured on (its busiest)."""


def quality_change(copy: np.ndarray, fitted: np.ndarray, valid: np.ndarray, magnified: float = 1.0) -> list[str]:
    """'blurred' or 'sharpened' (or nothing) for a prepared copy and the colour-fitted original warped onto it
    (RGB uint8 arrays of one shape); `valid`: the pixels the original covers; `magnified`: the scale it was
    warped at (over MAGNIFIED the original was enlarged, and a copy with more pixels is no sharpening)."""
    if valid.sum() < 1000:
        return []
    mine, theirs = (np.abs(cv2.Laplacian(cv2.cvtColor(a, cv2.COLOR_RGB2GRAY), cv2.CV_32F)) for a in (copy, fitted))
    local = cv2.blur(theirs, (9, 9))
    busy = valid & (local >= np.percentile(local[valid], 100 * (1 - DETAIL_SHARE)))
    reference = float(theirs[busy].mean())
    if reference < 1.0:  # no detail to lose or gain: a flat picture
        return []
    ratio = float(mine[busy].mean()) / reference
    if ratio < BLURRED:
        return ["blurred"]
    if ratio > SHARPENED and magnified <= MAGNIFIED:
        return ["sharpened"]
    return []
