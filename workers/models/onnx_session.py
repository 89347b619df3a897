"""The one way dupwatch opens an ONNX file on onnxruntime, for the semantic and the copy backends alike."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from workers.models.base import ModelUnavailable


def open_session(path: Path, device: str, unloadable: tuple[str, str],
                 tune: Callable[[Any, bool], None]) -> Any:
    """An `onnxruntime.InferenceSession` of `path`: on onnxruntime's CUDA provider when `device` asks for it
    (`auto`, `cuda`, `cuda:N`) and onnxruntime's CUDA build is installed, else on the CPU. `tune(options, on_gpu)`
    sets the session's threads. `unloadable` is the (problem, fix) a file that does not load is reported with.
    ModelUnavailable when onnxruntime is missing or the file does not load, so a worker says why and goes on."""
    try:
        import onnxruntime as ort
    except ImportError as exc:
        raise ModelUnavailable("onnxruntime is not installed", "pip install onnxruntime") from exc
    providers: list[str | tuple[str, dict[str, int]]] = ["CPUExecutionProvider"]
    wants_gpu = device == "auto" or device.startswith("cuda")
    if wants_gpu and "CUDAExecutionProvider" in ort.get_available_providers():
        _, _, index = device.partition(":")
        providers.insert(0, ("CUDAExecutionProvider", {"device_id": int(index) if index.isdigit() else 0}))
    options = ort.SessionOptions()
    tune(options, len(providers) > 1)
    try:
        return ort.InferenceSession(str(path), sess_options=options, providers=providers)
    except Exception as exc:  # onnxruntime raises its own exception types for bad files
        problem, fix = unloadable
        raise ModelUnavailable(f"{problem}: {exc}", fix) from exc
