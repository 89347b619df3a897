"""ONNX image-descriptor backend: any exported descriptor file, on onnxruntime (CPU or CUDA).

For hosts that should not carry torch-heavy models, and for copy-detection descriptors such as SSCD, or
CLIP's image tower exported to ONNX. The file says nothing about how it wants its input, so that is
settings: input size, resize policy ('short-side': resize the short side then centre-crop, as CLIP does;
'square': resize straight to size x size), input dtype (some exports take raw uint8 RGB and normalise
inside), mean/std normalisation (empty: none) and layout.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image

from workers.models.base import ModelUnavailable, identity_of
from workers.models.onnx_session import open_session
from workers.settings import ModelSettings


class OnnxEmbedder:
    def __init__(self, settings: ModelSettings):
        path = Path(settings.pretrained).expanduser()
        if not path.is_file():
            raise ModelUnavailable(f"ONNX model {path} does not exist",
                                   "set model.pretrained to the exported .onnx file")

        def tune(options, _on_gpu: bool) -> None:
            if settings.threads:
                options.intra_op_num_threads = settings.threads

        self.session = open_session(path, settings.device, (f"cannot load ONNX model {path}",
                                                            "check the file is an ONNX image model (model.pretrained)"),
                                    tune)
        self.input_name = self.session.get_inputs()[0].name
        self.size = settings.input_size
        self.resize = settings.resize
        self.uint8 = settings.input_dtype == "uint8"
        self.nhwc = settings.layout == "nhwc"
        self.mean = np.asarray(settings.mean, np.float32).reshape(3, 1, 1) if settings.mean else None
        self.std = np.asarray(settings.std, np.float32).reshape(3, 1, 1) if settings.std else None
        self.device = torch.device("cpu")
        self.identity = identity_of(settings)
        self.dim = int(self.embed(self.preprocess(Image.new("RGB", (self.size, self.size)))[None]).shape[-1])

    def preprocess(self, image: Image.Image) -> torch.Tensor:
        """To a [3, size, size] tensor (uint8 or normalised float32), CHW whatever the model's layout."""
        if self.resize == "square":
            image = image.resize((self.size, self.size), Image.Resampling.BICUBIC)
        else:
            short, long = sorted(image.size)
            long = int(self.size * long / short)  # truncation, as torchvision's Resize(int) computes it
            w, h = (self.size, long) if image.width <= image.height else (long, self.size)
            image = image.resize((w, h), Image.Resampling.BICUBIC)
            left, top = round((w - self.size) / 2.0), round((h - self.size) / 2.0)
            image = image.crop((left, top, left + self.size, top + self.size))
        chw = np.asarray(image, dtype=np.uint8).transpose(2, 0, 1)
        if self.uint8:
            return torch.from_numpy(np.ascontiguousarray(chw))
        x = chw.astype(np.float32) / 255.0
        if self.mean is not None:
            x = x - self.mean
        if self.std is not None:
            x = x / self.std
        return torch.from_numpy(x)

    def embed(self, batch: torch.Tensor) -> np.ndarray:
        x = batch.numpy()
        if self.nhwc:
            x = x.transpose(0, 2, 3, 1)
        out = self.session.run(None, {self.input_name: np.ascontiguousarray(x)})[0].astype(np.float32)
        out = out.reshape(out.shape[0], -1)
        return out / np.maximum(np.linalg.norm(out, axis=1, keepdims=True), 1e-12)
