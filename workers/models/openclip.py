"""open_clip backend: any of open_clip's architectures, from a pretrained tag or a local checkpoint.

`model.pretrained` is either an open_clip tag (fetched once into the cache, then offline) or a path to a
checkpoint file (state_dict .pt/.bin or .safetensors) for hosts without internet. No weights at all is
not an option here: random weights would give meaningless verdicts, so that is a `ModelUnavailable`.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from workers.models.base import ModelUnavailable, identity_of, is_checkpoint_path, resolve_device, resolve_dtype
from workers.models.hub import CANNOT_FETCH_FIX, cannot_fetch, offline_reason
from workers.settings import ModelSettings
from workers.torch_guard import ensure_torchvision_importable

log = logging.getLogger(__name__)


class OpenClipEmbedder:
    def __init__(self, settings: ModelSettings):
        ensure_torchvision_importable()
        import open_clip

        self.device = resolve_device(settings.device)
        self.dtype = resolve_dtype(settings.precision, self.device)
        pretrained = settings.pretrained
        local = Path(pretrained).expanduser()
        is_path = is_checkpoint_path(pretrained)
        if settings.name not in open_clip.list_models():
            raise ModelUnavailable(f"unknown open_clip model {settings.name!r}",
                                   "set model.name to one of `open_clip.list_models()`")
        if is_path and not local.is_file():
            raise ModelUnavailable(f"model checkpoint {local} does not exist",
                                   "set model.pretrained to an existing checkpoint file or an open_clip tag")
        if not is_path and pretrained not in open_clip.list_pretrained_tags_by_model(settings.name):
            raise ModelUnavailable(f"{settings.name} has no pretrained tag {pretrained!r}",
                                   f"use one of {open_clip.list_pretrained_tags_by_model(settings.name)}")
        offline = "" if is_path else offline_reason()
        try:
            model, _, preprocess = open_clip.create_model_and_transforms(
                settings.name, pretrained=str(local) if is_path else pretrained,
                device=self.device, cache_dir=settings.cache_dir)
        except Exception as exc:  # network, hub, corrupt file: all mean "no usable weights"
            if offline:
                raise ModelUnavailable(cannot_fetch(settings.name, pretrained, offline), CANNOT_FETCH_FIX) from exc
            raise ModelUnavailable(
                f"could not load weights {pretrained!r} for {settings.name}: {exc}",
                "download the checkpoint on a host with internet and set model.pretrained "
                "(DUPWATCH_MODEL__PRETRAINED) to its path, or run with --hash-only") from exc
        model.eval()
        if self.dtype != torch.float32:
            model = model.to(self.dtype)
        self.model = model.visual
        self._preprocess = preprocess
        self.identity = identity_of(settings)
        with torch.inference_mode():
            size = getattr(self.model, "image_size", 224)
            size = size if isinstance(size, (tuple, list)) else (size, size)
            probe = torch.zeros(1, 3, *size, device=self.device, dtype=self.dtype)
            self.dim = int(self.model(probe).shape[-1])

    def preprocess(self, image: Image.Image) -> torch.Tensor:
        return self._preprocess(image)

    def embed(self, batch: torch.Tensor) -> np.ndarray:
        with torch.inference_mode():
            x = batch.to(self.device, dtype=self.dtype, non_blocking=True)
            features = self.model(x).float()
            features = torch.nn.functional.normalize(features, dim=-1)
        return features.cpu().numpy().astype(np.float32, copy=False)
