"""SSCD (or any uint8-NHWC copy descriptor) on onnxruntime, fed numpy batches: no torch on this path.

Threads: on a CPU each decode thread of a worker embeds the file it decoded (Pipeline), so the session runs
one call per decode thread at once, each on its caller's thread (`copy_model.threads` 0 means 1 intra-op
thread here): decoding and the model overlap on every core, and a call holds one file's buffers. On 2 cores
that took 127 CPU-ms per image against 153 for calls of 8 images on 2 intra-op threads, with the same
vectors to the bit (2026-11-27). On a GPU the batch goes in one call and the CPU-side ops get one thread per
usable core. Always one inter-op thread (SSCD's graph is a single chain) and no spin-waiting: spinning
threads stole the cores from the decode threads and from other processes on a shared 2-core host.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from workers import defaults
from workers.models.copy import cut, run_batches
from workers.models.onnx_session import open_session
from workers.settings import CopyModelSettings


def usable_cores() -> int:
    import os

    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


class OnnxCopyDescriptor:
    def __init__(self, path: Path, settings: CopyModelSettings, identity: str):
        def tune(options, on_gpu: bool) -> None:
            import onnxruntime as ort

            options.intra_op_num_threads = settings.threads or (usable_cores() if on_gpu else 1)
            options.inter_op_num_threads = 1
            options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
            options.add_session_config_entry("session.intra_op.allow_spinning", "0")

        self.session = open_session(path, settings.device, (
            f"cannot load copy descriptor {path}", "set copy_model.name to sscd or to an ONNX file taking uint8 NHWC RGB"),
            tune)
        self.input_name = self.session.get_inputs()[0].name
        self.size, self.resize = settings.input_size, settings.resize
        self.identity = identity
        self.device = "cuda" if self.session.get_providers()[0] == "CUDAExecutionProvider" else "cpu"
        self.in_decode_threads = self.device == "cpu"
        self.dim = int(self.embed([self.preprocess(Image.new("RGB", (64, 64)))]).shape[1])

    def preprocess(self, image: Image.Image) -> np.ndarray:
        return cut(image, self.size, self.resize)

    def embed(self, batch: list[np.ndarray]) -> np.ndarray:
        chunk = defaults.COPY_CPU_CHUNK if self.device == "cpu" else None  # bounded buffers on a CPU
        return run_batches(batch, lambda x: self.session.run(None, {self.input_name: x})[0], chunk)
