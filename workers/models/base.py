"""The one interface every embedding backend implements, and the loader that picks one.

Workers see only `ImageEmbedder`: preprocess a decoded PIL image into a tensor on the CPU, then embed a
stacked batch into L2-normalised float32 vectors. `identity` names the exact weights, so the catalog never
mixes vectors from two models in one index.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Protocol

import numpy as np
from PIL import Image

if TYPE_CHECKING:  # torch is imported only when a model is loaded: hash-only never pays for it
    import torch

from workers.settings import ModelSettings, WorkerSettings


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


def load_embedder(settings: ModelSettings) -> ImageEmbedder:
    """Load the configured backend once per process (workers keep it for their whole life)."""
    if settings.backend == "onnx":
        from workers.models.onnx import OnnxEmbedder

        return OnnxEmbedder(settings)
    from workers.models.openclip import OpenClipEmbedder

    return OpenClipEmbedder(settings)


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


def refuse_unreachable_tag(settings: ModelSettings) -> None:
    """Raise ModelUnavailable, before torch is imported, when open_clip would certainly fail to get a
    pretrained tag's weights: the hub is not used and no weight cache holds a single file.

    open_clip finds that out only after importing torch and building the model with random weights (about
    900 MB peak RSS and 7 CPU-s for ViT-B-32 on 2 cores), which an offline host running SSCD alone paid
    at every start for nothing. Any cached file at all, a local checkpoint path, or a schema name
    ('hf-hub:', 'local-dir:') leaves the decision to open_clip, so whatever loads still loads.
    """
    from workers.models.hub import CANNOT_FETCH_FIX, cannot_fetch, holds_any_file, offline_reason, weights_cache_dirs

    if settings.backend != "open_clip" or ":" in settings.name or is_checkpoint_path(settings.pretrained):
        return
    offline = offline_reason()
    if offline and not holds_any_file(weights_cache_dirs(settings.cache_dir)):
        raise ModelUnavailable(cannot_fetch(settings.name, settings.pretrained, offline), CANNOT_FETCH_FIX)


def load_model(settings: WorkerSettings) -> tuple[ImageEmbedder | None, dict[str, str]]:
    """The semantic model a process will use, or None, with a status record for `status`/readyz.

    Switched off by choice (`hash_only`, model.name = "none") is quiet. Missing weights are loud: no
    `similar` verdicts, said with the setting that fixes it, and a hard error with `require_model`.
    """
    import logging

    log = logging.getLogger("dupwatch.model")
    if settings.hash_only:
        return None, {"state": "hash-only", "reason": "hash_only is set", "model": ""}
    if settings.model.name == "none":
        return None, {"state": "off", "reason": "model.name is none", "model": ""}
    try:
        refuse_unreachable_tag(settings.model)
        set_threads(settings.model.threads)
        embedder = load_embedder(settings.model)
    except ModelUnavailable as exc:
        if settings.require_model:
            raise
        log.error("=" * 72)
        log.error("SEMANTIC MODEL UNAVAILABLE: no 'similar' verdicts (copies are still found)")
        log.error("reason: %s", exc)
        log.error("fix: %s (or set require_model to make this fatal)", exc.fix)
        log.error("=" * 72)
        return None, {"state": "unavailable", "reason": str(exc), "fix": exc.fix, "model": settings.model.name}
    return embedder, {"state": "loaded", "model": embedder.identity, "device": str(embedder.device),
                      "dim": str(embedder.dim)}


def load_models(settings) -> tuple[ImageEmbedder | None, Any, dict[str, str]]:
    """Both models of a process (semantic, copy descriptor), each possibly None, and one status record."""
    from workers.models.copy import load_copy_model

    copier, copy_status = load_copy_model(settings)
    embedder, status = load_model(settings)
    return embedder, copier, {**status, **copy_status}
