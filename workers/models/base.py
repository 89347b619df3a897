"""The one interface every embedding backend implements, and the helpers the backends share.

Workers see only `ImageEmbedder`: preprocess a decoded PIL image into a tensor on the CPU, then embed a
stacked batch into L2-normalised float32 vectors. `identity` names the exact weights, so the catalog never
mixes vectors from two models in one index.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol

import numpy as np
from PIL import Image

if TYPE_CHECKING:  # torch is imported only when a model is loaded: hash-only never pays for it
    import torch

from workers.settings import ModelSettings


class ModelUnavailable(RuntimeError):
    """The configured model cannot be loaded. `fix` tells the user which setting resolves it."""

    def __init__(self, message: str, fix: str):
        super().__init__(message)
        self.fix = fix


class ImageEmbedder(Protocol):
    identity: str  # e.g. "open_clip:ViT-B-32:laion2b_s34b_b79k"
    dim: int
    device: torch.device

    def preprocess(self, image: Image.Image) -> torch.Tensor:
        """One RGB image to a CPU tensor [3, H, W] ready to stack into a batch."""

    def embed(self, batch: torch.Tensor) -> np.ndarray:
        """[B, 3, H, W] CPU tensor to [B, dim] float32, each row L2-normalised."""


def is_checkpoint_path(pretrained: str) -> bool:
    """A local checkpoint file rather than an open_clip pretrained tag."""
    return "/" in pretrained or pretrained.endswith((".pt", ".pth", ".bin", ".safetensors"))


def identity_of(settings: ModelSettings) -> str:
    """The name under which this model's vectors are stored: vectors of two models never mix."""
    from pathlib import Path

    tag = Path(settings.pretrained).name if is_checkpoint_path(settings.pretrained) else settings.pretrained
    return f"{settings.backend}:{settings.name}:{tag}"


def set_threads(threads: int) -> None:
    """Give torch a deliberate thread count (0: one per core); decode threads need cores too."""
    import os

    import torch

    torch.set_num_threads(threads or max(1, os.cpu_count() or 1))


def resolve_device(name: str) -> torch.device:
    import torch

    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def resolve_dtype(precision: str, device: torch.device) -> torch.dtype:
    """'auto' is fp16 on CUDA and fp32 on CPU: bf16 on CPUs without AMX is slower than fp32."""
    import torch

    if precision == "auto":
        return torch.float16 if device.type == "cuda" else torch.float32
    return {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}[precision]
