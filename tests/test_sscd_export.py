"""The packaged int8 SSCD graph, rebuilt as a float TorchScript file, describes images as the ONNX graph does.

GPU hosts without onnxruntime's CUDA build run SSCD through this file (bench/gpu.py measured it on an H100);
if the rebuild dropped a ReLU, a weight's scale or the GeM pooling, its vectors would drift from the ONNX
model's, and its copy scores (calibrated on the ONNX model) would be wrong.
"""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from workers.models.copy import resolve_path
from workers.models.loading import load_copy_model
from workers.models.sscd_export import export
from workers.models.sscd_onnx import OnnxCopyDescriptor
from workers.settings import CopyModelSettings, WorkerSettings

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    return export("sscd", tmp_path_factory.mktemp("sscd") / "sscd-from-onnx.torchscript.pt")


def test_rebuilt_sscd_agrees_with_the_int8_graph(exported, photos):
    names = ("astronaut", "rocket", "coffee", "chelsea")
    images = [Image.open(photos[n]).convert("RGB") for n in names]
    onnx = OnnxCopyDescriptor(resolve_path("sscd"), CopyModelSettings(), "onnx")
    torch_model, status = load_copy_model(WorkerSettings.model_validate(
        {"copy_model": {"name": str(exported), "device": "cpu"}}))
    assert torch_model is not None, status
    assert status["copy_state"] == "loaded" and "torchscript" in torch_model.identity
    a = onnx.embed([onnx.preprocess(i) for i in images])
    b = torch_model.embed([torch_model.preprocess(i) for i in images])
    assert b.shape == a.shape == (len(names), 512)
    same = (a * b).sum(axis=1)
    assert same.min() >= 0.95, dict(zip(names, same.round(3), strict=True))  # int8 vs float: noise only
    # different photos stay apart, as in the ONNX model: a rebuilt network that maps everything to one
    # direction would pass the first check on its own
    off = b @ b.T - np.eye(len(names))
    assert off.max() < 0.5, off.round(2)
    assert np.abs((a @ a.T) - (b @ b.T)).max() < 0.05


def test_an_edited_copy_scores_as_with_the_onnx_graph(exported, photos):
    """A crop with a caption band: the copy score both models give it differs by quantization noise."""
    original = Image.open(photos["astronaut"]).convert("RGB")
    w, h = original.size
    copy = original.crop((int(w * 0.1), int(h * 0.05), int(w * 0.85), int(h * 0.9)))
    band = Image.new("RGB", (copy.width, copy.height // 6), (250, 250, 250))
    copy.paste(band, (0, 0))
    onnx = OnnxCopyDescriptor(resolve_path("sscd"), CopyModelSettings(), "onnx")
    torch_model, _ = load_copy_model(WorkerSettings.model_validate(
        {"copy_model": {"name": str(exported), "device": "cpu"}}))
    assert torch_model is not None
    scores = []
    for model in (onnx, torch_model):
        v = model.embed([model.preprocess(original), model.preprocess(copy)])
        scores.append(float(v[0] @ v[1]))
    assert abs(scores[0] - scores[1]) < 0.05, scores
