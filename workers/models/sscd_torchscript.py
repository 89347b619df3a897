"""Meta's original SSCD TorchScript files (`sscd_disc_mixup.torchscript.pt`, ...) from a local path.

For hosts that downloaded them from Meta: the fp32 originals, on a GPU when there is one. These graphs
take ImageNet-normalised float NCHW, so the normalisation the ONNX graphs do inside happens here. The
only copy-descriptor backend that imports torch.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from workers.models.base import ModelUnavailable, resolve_device, resolve_dtype
from workers.models.copy import cut, run_batches
from workers.settings import CopyModelSettings

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class TorchScriptCopyDescriptor:
    def __init__(self, path: Path, settings: CopyModelSettings, identity: str):
        import torch

        if settings.threads:
            torch.set_num_threads(settings.threads)
        self.torch_device = resolve_device(settings.device)
        try:
            self.model = torch.jit.load(str(path), map_location=self.torch_device).eval()
        except Exception as exc:  # a truncated download or a file that is not TorchScript
            raise ModelUnavailable(f"cannot load TorchScript copy descriptor {path}: {exc}",
                                   "set copy_model.name to Meta's sscd_*.torchscript.pt file or to sscd") from exc
        self.dtype = resolve_dtype(settings.precision, self.torch_device)  # fp16 halves a GPU's memory per batch
        self.model = self.model.to(self.dtype)
        shape = (1, 3, 1, 1)
        self.mean = torch.tensor(IMAGENET_MEAN, device=self.torch_device).view(shape) * 255.0
        self.std = torch.tensor(IMAGENET_STD, device=self.torch_device).view(shape) * 255.0
        self.size, self.resize = settings.input_size, settings.resize
        self.identity = identity
        self.device = str(self.torch_device)
        self.in_decode_threads = False  # torch runs a batch on its own thread pool, CPU or GPU
        self.dim = int(self.embed([self.preprocess(Image.new("RGB", (64, 64)))]).shape[1])

    def preprocess(self, image: Image.Image) -> np.ndarray:
        return cut(image, self.size, self.resize)

    def embed(self, batch: list[np.ndarray]) -> np.ndarray:
        return run_batches(batch, self._forward)

    def _forward(self, nhwc: np.ndarray) -> np.ndarray:
        import torch

        with torch.inference_mode():
            x = torch.from_numpy(nhwc).to(self.torch_device).permute(0, 3, 1, 2).float()
            return self.model(((x - self.mean) / self.std).to(self.dtype)).float().cpu().numpy()
