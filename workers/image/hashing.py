"""Perceptual hashes (pHash, dHash) computed in batch, bit-identical to `imagehash`.

The batch math takes numpy arrays or torch tensors alike: numpy on the CPU, so a hash-only worker or
scan never imports torch (about a second of start-up and 300 MB); torch tensors where the model runs
on a GPU, so the hashes are computed there from the same batch.

Why this shape: the grayscale planes are prepared with Pillow exactly as `imagehash` prepares them
(LANCZOS resize of the "L" image), because the resize is where implementations drift; everything after
that (DCT, median, comparisons, bit packing) is batched tensor math that runs wherever the tensors live,
CPU or CUDA.

Hashes are 64-bit, packed row-major with the first bit most significant, so the unsigned value equals
`int(str(imagehash.phash(img)), 16)`. They are held as signed int64 (SQLite's integer type);
`to_unsigned`/`to_signed` convert and `to_hex`/`from_hex` give imagehash's hex strings.

Flips and rotations: `phash_dihedral_batch` hashes the 8 dihedral variants from one DCT, since mirroring
a plane only flips the sign of odd DCT frequencies along that axis and transposing the plane transposes
the DCT. A copy that was mirrored or turned by 90 degrees then has one variant close to the original.

Crops: a crop moves the full-frame pHash 10-30 bits, so each image also gets the hashes of a few
sub-windows (`WINDOWS`), and a cropped copy's full-frame hash lands near the window it kept. pHash only
tolerates a small mismatch between crop and window: about +-0.03 of the side in scale, but only about
0.01 in position (a 2% shift already costs up to 18 bits). So windows catch crops of the geometries they
anticipate, no others: centred crops at four scales 0.05 apart, which hold every centred crop keeping
61-92% of the area within 10 bits, and corner-anchored crops keeping about 80%. Covering corner crops at
a second scale takes 4 more windows (tried: it also brings the unrelated floor from 18 to 16); arbitrary
crops are the embedding's job. Measured on 18 skimage.data photos, crop's full-frame pHash vs the
original's windows, worst / mean bits (full frame alone in brackets):

    area kept   centre          top-left        bottom-right    (tr, bl alike)
    0.90        4/1.2 (22/8)    12/8.1 (20/12)  18/8.9 (18/12)
    0.80        4/0.7 (24/14)   4/1.4 (28/21)   6/1.9 (30/20)
    0.64        4/1.4 (30/22)   30/19 (38/30)   28/20 (38/30)

Unrelated photos: full frame vs the other's windows min 18 bits (5th percentile 22); any window pair
min 16. A threshold near 8-10 bits leaves margin on both sides. An index should also compare a new
file's windows against earlier full-frame hashes, for when the crop arrived first.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import numpy.typing as npt
from PIL import Image

Array = Any  # a numpy array (CPU: no torch import at all) or a torch tensor (any device)

HASH_SIZE = 8  # 64-bit hashes
PHASH_PLANE = HASH_SIZE * 4  # imagehash's highfreq_factor = 4: a 32x32 plane before the DCT

# (left, top, right, bottom) as fractions of width and height; window 0 is the full frame.
WINDOWS: list[tuple[float, float, float, float]] = [
    (0.0, 0.0, 1.0, 1.0),
    (0.03, 0.03, 0.97, 0.97),  # centred, side 0.94 (88% of the area)
    (0.055, 0.055, 0.945, 0.945),  # centred, side 0.89 (79%)
    (0.08, 0.08, 0.92, 0.92),  # centred, side 0.84 (71%)
    (0.105, 0.105, 0.895, 0.895),  # centred, side 0.79 (62%)
    (0.0, 0.0, 0.89, 0.89),  # corner-anchored, side 0.89 (79%)
    (0.11, 0.0, 1.0, 0.89),
    (0.0, 0.11, 0.89, 1.0),
    (0.11, 0.11, 1.0, 1.0),
]

# Column order of `phash_dihedral_batch`: the PIL transpose that, applied to the image, gives that
# column's hash (None = identity).
DIHEDRAL: tuple[Image.Transpose | None, ...] = (
    None,
    Image.Transpose.FLIP_LEFT_RIGHT,
    Image.Transpose.FLIP_TOP_BOTTOM,
    Image.Transpose.ROTATE_180,
    Image.Transpose.TRANSPOSE,
    Image.Transpose.ROTATE_270,
    Image.Transpose.ROTATE_90,
    Image.Transpose.TRANSVERSE,
)
# The same variants as (transpose, flip rows, flip columns), applied in that order to the plane.
# On the DCT, a flip of rows/columns multiplies frequency u/v by (-1)^u / (-1)^v.
_DIHEDRAL_OPS = tuple((t, r, c) for t in (False, True) for r in (False, True) for c in (False, True))

_UINT64_SPAN = 1 << 64
_INT64_MIN = -(1 << 63)


def gray_planes(img: Image.Image) -> tuple[np.ndarray, np.ndarray]:
    """Return (g32 uint8 [32,32], g98 uint8 [8,9]): imagehash's pHash and dHash input planes."""
    gray = img.convert("L")
    g32 = gray.resize((PHASH_PLANE, PHASH_PLANE), Image.Resampling.LANCZOS)
    g98 = gray.resize((HASH_SIZE + 1, HASH_SIZE), Image.Resampling.LANCZOS)
    return np.array(g32), np.array(g98)


WINDOW_SOURCE = 128
"""Side of the grey square the sub-windows are cut from. Cutting 8 windows from the decoded image cost
~6 ms per photo; from this intermediate, ~0.5 ms, and the window hashes moved 0.2-0.35 bits on average
(max 4) on camera JPEGs. The full frame (window 0) is still cut from the decoded image: it must equal
imagehash bit for bit."""


def window_planes(img: Image.Image) -> np.ndarray:
    """Return uint8 [len(WINDOWS),32,32]: the pHash plane of each window; plane 0 equals gray_planes' g32.

    Each window is cut with Pillow's resize box, close to cropping and then resizing, so a crop's
    full-frame plane and the matching window's plane come out nearly equal. An "L" image is used as it
    is, so a caller that already has the grey image does not pay for a second conversion.
    """
    gray = img if img.mode == "L" else img.convert("L")
    side = WINDOW_SOURCE
    source = gray.resize((side, side), Image.Resampling.BILINEAR, reducing_gap=2.0)
    planes = [gray.resize((PHASH_PLANE, PHASH_PLANE), Image.Resampling.LANCZOS)]
    planes += [source.resize((PHASH_PLANE, PHASH_PLANE), Image.Resampling.LANCZOS,
                             box=(x0 * side, y0 * side, x1 * side, y1 * side))
               for x0, y0, x1, y1 in WINDOWS[1:]]
    return np.stack([np.asarray(p) for p in planes])


def hash_planes(img: Image.Image) -> tuple[np.ndarray, np.ndarray]:
    """Every plane the pipeline hashes: (window_planes [len(WINDOWS),32,32], g98 [8,9]).

    One grey conversion and one resize per plane: the full-frame pHash plane is window 0, not computed a
    second time as gray_planes would. Values equal gray_planes'/window_planes' exactly (same Pillow
    calls on the same grey image). Pillow releases the GIL in these resizes, so decode threads can run
    this beside the decode instead of leaving it to the one thread that batches.
    """
    gray = img.convert("L")
    g98 = gray.resize((HASH_SIZE + 1, HASH_SIZE), Image.Resampling.LANCZOS)
    return window_planes(gray), np.asarray(g98)


def phash_batch(g32: Array) -> Array:
    """[B,32,32] planes -> [B] int64 pHashes, equal to imagehash.phash."""
    return _pack(_median_bits(_dct_low(g32)))


def phash_dihedral_batch(g32: Array) -> Array:
    """[B,32,32] planes -> [B,8] int64: the pHash of each DIHEDRAL variant, column 0 = identity."""
    low = _dct_low(g32)
    sign = 1.0 - 2.0 * (_like(low, range(HASH_SIZE)) % 2)  # (-1)^k
    variants = []
    for transpose, flip_rows, flip_cols in _DIHEDRAL_OPS:
        d = low.swapaxes(1, 2) if transpose else low
        if flip_rows:
            d = d * sign[:, None]
        if flip_cols:
            d = d * sign[None, :]
        variants.append(d)
    stacked = _stack(variants, axis=1)  # [B,8,n,n]
    return _pack(_median_bits(stacked.reshape(-1, HASH_SIZE, HASH_SIZE))).reshape(-1, len(_DIHEDRAL_OPS))


def detail_batch(g32: Array) -> Array:
    """[B,32,32] planes -> [B] float: how firmly the plane's pHash bits are decided.

    A pHash bit says whether one of the 64 low DCT coefficients is above their median; the median
    absolute deviation of those coefficients is the typical margin a bit is decided by. JPEG noise moves a
    coefficient of this unnormalised DCT by about 64 (grey levels of noise x 4 x 32 x 0.5), so on a star
    field (a black plane with a few bright points: 1-73) or a smooth gradient (one or two coefficients
    and noise: 11-49) most bits are noise, and unrelated images of that kind match at distance 0-8. Real
    photos measure 218 or more (bench/data/acc, 2,851 files). See MIN_HASH_DETAIL in workers/defaults.py.
    """
    low = _dct_low(g32)
    flat = low.reshape(low.shape[0], -1)
    spread = (flat - _median(flat)[:, None]).abs() if _is_torch(flat) else np.abs(flat - _median(flat)[:, None])
    return _median(spread)


def dhash_batch(g98: Array) -> Array:
    """[B,8,9] planes -> [B] int64 dHashes as imagehash.dhash: is each pixel brighter than its left."""
    return _pack(g98[:, :, 1:] > g98[:, :, :-1])


def hamming(a: npt.ArrayLike, b: npt.ArrayLike) -> np.ndarray:
    """Bit distance between int64 hashes, broadcasting; uint8 result.

    Reinterpreted as uint64 first: np.bitwise_count counts the bits of |x|, wrong for negative int64.
    """
    x = np.bitwise_xor(np.asarray(a, dtype=np.int64), np.asarray(b, dtype=np.int64))
    return np.bitwise_count(x.view(np.uint64))


def to_unsigned(h: int) -> int:
    """Signed int64 (as stored) -> the unsigned 64-bit value imagehash's hex string encodes.

    int() first: a numpy int64 would overflow in the modulo.
    """
    return int(h) % _UINT64_SPAN


def to_signed(h: int) -> int:
    """Unsigned 64-bit value -> signed int64, the storage form (SQLite INTEGER, torch/numpy int64)."""
    return (int(h) - _INT64_MIN) % _UINT64_SPAN + _INT64_MIN


def to_hex(h: int) -> str:
    """The 16-digit hex string str(imagehash.ImageHash) gives for this hash (signed or unsigned input)."""
    return f"{to_unsigned(h):016x}"


def from_hex(s: str) -> int:
    """imagehash's hex string -> signed int64 hash."""
    return to_signed(int(s, 16))


def _is_torch(x: Array) -> bool:
    return type(x).__module__.startswith("torch")


def _like(x: Array, values, dtype=None) -> Array:
    """A constant in x's array library, on x's device, with x's dtype unless told otherwise."""
    if _is_torch(x):
        import torch

        return torch.tensor(list(values), dtype=dtype or x.dtype, device=x.device)
    return np.asarray(list(values), dtype=dtype or x.dtype)


def _stack(arrays: list[Array], axis: int) -> Array:
    if _is_torch(arrays[0]):
        import torch

        return torch.stack(arrays, dim=axis)
    return np.stack(arrays, axis=axis)


def _dct_low(g32: Array) -> Array:
    """[B,32,32] -> [B,8,8] low-frequency block of scipy.fftpack's unnormalised 2-D DCT-II.

    Only the 8 needed rows of the DCT matrix are used: D = C[:8] X C[:8]^T. float64 so that
    coefficients near the median split as scipy's do; float32 (MPS) agreed on all 500 planes measured.
    """
    if _is_torch(g32):
        import torch

        x = g32.to(torch.float32 if g32.device.type == "mps" else torch.float64)  # MPS has no float64
    else:
        x = np.asarray(g32, dtype=np.float64)
    k = _like(x, range(HASH_SIZE))[:, None]
    m = _like(x, range(PHASH_PLANE))[None, :]
    angle = (k * (2.0 * m + 1.0)) * (np.pi / (2.0 * PHASH_PLANE))
    c = 2.0 * (angle.cos() if _is_torch(angle) else np.cos(angle))  # [8,32]
    return c @ x @ c.T


def _median_bits(coeffs: Array) -> Array:
    """[N,8,8] -> [N,8,8] bool: coeff > median, the median as numpy takes it (mean of the middle two)."""
    return coeffs > _median(coeffs.reshape(coeffs.shape[0], -1))[:, None, None]


def _median(flat: Array) -> Array:
    """[N,K] -> [N]: the median of each row as numpy takes it (mean of the middle two for even K)."""
    ordered = flat.sort(dim=1).values if _is_torch(flat) else np.sort(flat, axis=1)
    half = flat.shape[1] // 2
    return (ordered[:, half - 1] + ordered[:, half]) / 2.0


def _pack(bits: Array) -> Array:
    """[N,8,8] bool -> [N] int64, row-major, first bit most significant.

    The top bit weighs -2^63, so the sum of distinct powers is the two's-complement value with no
    overflow: the signed reinterpretation of imagehash's unsigned value.
    """
    n_bits = HASH_SIZE * HASH_SIZE
    weights = [1 << (n_bits - 1 - i) for i in range(n_bits)]
    weights[0] = _INT64_MIN
    flat = bits.reshape(bits.shape[0], -1)
    if _is_torch(flat):
        import torch

        return (flat.to(torch.int64) * _like(flat, weights, dtype=torch.int64)).sum(dim=1)
    return (flat.astype(np.int64) * np.asarray(weights, dtype=np.int64)).sum(axis=1)
