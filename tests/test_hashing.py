"""workers.image.hashing against imagehash on real photos (skimage.data, shipped with scikit-image, offline)."""

from __future__ import annotations

import imagehash
import numpy as np
import pytest
import skimage.data
import torch
from PIL import Image

from workers.image.hashing import (
    DIHEDRAL,
    WINDOWS,
    dhash_batch,
    from_hex,
    gray_planes,
    hamming,
    hash_planes,
    phash_batch,
    phash_dihedral_batch,
    to_hex,
    to_signed,
    to_unsigned,
    window_planes,
)

PHOTOS = ("astronaut", "chelsea", "coffee", "rocket", "camera", "coins", "moon", "clock",
          "stereo_motorcycle", "immunohistochemistry", "page", "grass")

COPY_MAX = 6  # a copy's best hash is at most this far from its original (measured: 0-6)
UNRELATED_MIN = 16  # different photos stay at least this far apart (measured: 16-18)


@pytest.fixture(scope="module")
def photos() -> dict[str, Image.Image]:
    out = {}
    for name in PHOTOS:
        arr = getattr(skimage.data, name)()
        arr = arr[0] if isinstance(arr, tuple) else arr  # stereo_motorcycle: (left, right, disparity)
        out[name] = Image.fromarray(arr).convert("RGB")
    return out


def _g32(images: list[Image.Image]) -> torch.Tensor:
    return torch.from_numpy(np.stack([gray_planes(img)[0] for img in images]))


def _phash(images: list[Image.Image]) -> np.ndarray:
    return phash_batch(_g32(images)).numpy()


def _crop(img: Image.Image, box: tuple[float, float, float, float]) -> Image.Image:
    w, h = img.size
    left, top, right, bottom = box
    return img.crop((round(left * w), round(top * h), round(right * w), round(bottom * h)))


def _off_diagonal_min(d: np.ndarray) -> int:
    return int(d[~np.eye(len(d), dtype=bool)].min())


def test_phash_and_dhash_equal_imagehash(photos: dict[str, Image.Image]) -> None:
    images = list(photos.values())
    g98 = torch.from_numpy(np.stack([gray_planes(img)[1] for img in images]))
    ph, dh = _phash(images), dhash_batch(g98).numpy()
    assert [to_hex(h) for h in ph] == [str(imagehash.phash(img)) for img in images]
    assert [to_hex(h) for h in dh] == [str(imagehash.dhash(img)) for img in images]
    assert [to_unsigned(int(h)) for h in ph] == [int(str(imagehash.phash(img)), 16) for img in images]


def test_dihedral_columns_match_transformed_images(photos: dict[str, Image.Image]) -> None:
    images = list(photos.values())
    dihedral = phash_dihedral_batch(_g32(images)).numpy()
    np.testing.assert_array_equal(dihedral[:, 0], _phash(images))
    for k, op in enumerate(DIHEDRAL[1:], start=1):
        assert op is not None  # only the identity, column 0, is None
        direct = _phash([img.transpose(op) for img in images])
        # Resizing a transposed image is not exactly the transposed resize (measured: 0-2 bits).
        assert hamming(dihedral[:, k], direct).max() <= 4, op


@pytest.mark.parametrize("op", [Image.Transpose.FLIP_LEFT_RIGHT, Image.Transpose.ROTATE_90])
def test_mirrored_or_rotated_copy_matches(photos: dict[str, Image.Image], op: Image.Transpose) -> None:
    images = list(photos.values())
    original = _phash(images)
    copies = phash_dihedral_batch(_g32([img.transpose(op) for img in images])).numpy()
    d = hamming(copies[:, None, :], original[None, :, None]).min(axis=2)  # [copy, original]
    assert np.diag(d).max() <= COPY_MAX
    assert _off_diagonal_min(d) >= UNRELATED_MIN


@pytest.mark.parametrize("anchor", ["centre", "top-left", "bottom-right"])
def test_crop_matches_a_window(photos: dict[str, Image.Image], anchor: str) -> None:
    images = list(photos.values())
    side = 0.8**0.5  # the crop drops 20% of the area
    box = {"centre": ((1 - side) / 2, (1 - side) / 2, (1 + side) / 2, (1 + side) / 2),
           "top-left": (0.0, 0.0, side, side),
           "bottom-right": (1 - side, 1 - side, 1.0, 1.0)}[anchor]
    windows = np.stack([phash_batch(torch.from_numpy(window_planes(img))).numpy() for img in images])
    crops = _phash([_crop(img, box) for img in images])
    d = hamming(crops[:, None, None], windows[None]).min(axis=2)  # [crop, original]
    assert np.diag(d).max() <= COPY_MAX
    assert _off_diagonal_min(d) >= UNRELATED_MIN
    # Without the windows most crops would be missed: the full frame alone is far off.
    assert np.median(hamming(crops, windows[:, 0])) > COPY_MAX


def test_window_zero_is_the_full_frame(photos: dict[str, Image.Image]) -> None:
    img = photos["coffee"]
    planes = window_planes(img)
    assert planes.shape == (len(WINDOWS), 32, 32) and planes.dtype == np.uint8
    np.testing.assert_array_equal(planes[0], gray_planes(img)[0])


def test_hash_planes_are_the_reference_planes(photos: dict[str, Image.Image]) -> None:
    """The pipeline's one-conversion planes equal the reference ones, so its hashes equal imagehash's."""
    for img in photos.values():
        windows, g98 = hash_planes(img)
        np.testing.assert_array_equal(windows, window_planes(img))
        np.testing.assert_array_equal(g98, gray_planes(img)[1])
        assert to_hex(phash_batch(torch.from_numpy(windows[:1]))[0]) == str(imagehash.phash(img))
        assert to_hex(dhash_batch(torch.from_numpy(g98[None]))[0]) == str(imagehash.dhash(img))


def test_hamming_and_hex_round_trip() -> None:
    rng = np.random.default_rng(0)
    a = rng.integers(np.iinfo(np.int64).min, np.iinfo(np.int64).max, size=50, dtype=np.int64)
    b = rng.integers(np.iinfo(np.int64).min, np.iinfo(np.int64).max, size=50, dtype=np.int64)
    expected = [(to_unsigned(int(x)) ^ to_unsigned(int(y))).bit_count() for x, y in zip(a, b)]
    assert hamming(a, b).tolist() == expected
    assert hamming(a[:, None], b[None, :]).shape == (50, 50)
    assert int(hamming(np.int64(0), np.int64(-1))) == 64  # bitwise_count alone would say 1
    for h in a.tolist():
        assert from_hex(to_hex(h)) == h
        assert to_signed(to_unsigned(h)) == h
    assert from_hex("8000000000000000") == -(2**63)
    assert to_hex(-1) == "ffffffffffffffff"
    assert to_hex(1) == "0000000000000001"


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
def test_cuda_equals_cpu(photos: dict[str, Image.Image]) -> None:
    g32 = _g32(list(photos.values()))
    np.testing.assert_array_equal(phash_dihedral_batch(g32.cuda()).cpu().numpy(),
                                  phash_dihedral_batch(g32).numpy())


def test_numpy_and_torch_batches_agree_bit_for_bit(photos):
    """The CPU path (numpy, no torch import) and the GPU-capable path (torch tensors) are one algorithm."""
    images = [photos[name] for name in PHOTOS[:6]]
    windows = np.stack([window_planes(img) for img in images])
    g98 = np.stack([gray_planes(img)[1] for img in images])
    flat = windows.reshape(-1, 32, 32)
    np.testing.assert_array_equal(phash_batch(flat), phash_batch(torch.from_numpy(flat)).numpy())
    np.testing.assert_array_equal(phash_dihedral_batch(windows[:, 0]),
                                  phash_dihedral_batch(torch.from_numpy(windows[:, 0])).numpy())
    np.testing.assert_array_equal(dhash_batch(g98), dhash_batch(torch.from_numpy(g98)).numpy())


def test_hash_only_work_never_imports_torch(tmp_path, photos):
    """A hash-only worker or scan must not pay torch's start-up (about a second and 300 MB)."""
    import subprocess
    import sys

    img = tmp_path / "a.png"
    photos[PHOTOS[0]].save(img)
    code = ("import sys; from daemon.config import Settings; from workers.settings import DecodeSettings; "
            "from workers.models.loading import load_model; from workers.pipeline import Pipeline; "
            "import daemon.cli.scan, daemon.index.owner; "
            "e, _ = load_model(Settings(hash_only=True)); p = Pipeline(DecodeSettings(), e); "
            f"f = p.run([(1, {str(img)!r})])[0]; assert f.error is None and f.phash is not None; "
            "print('torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=False)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "False"
