"""The ONNX descriptor backend gives the same embedding as the torch model it was exported from."""

from __future__ import annotations

import json
import subprocess

import numpy as np
import pytest
import torch
from PIL import Image

from tests.conftest import TINY_MODEL, base_env, dupwatch_cmd
from workers.models.base import ModelUnavailable
from workers.models.loading import load_embedder
from workers.settings import ModelSettings

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def exported(tiny_checkpoint, tmp_path_factory):
    """The tiny checkpoint's image tower, exported to ONNX with a dynamic batch axis."""
    from workers.torch_guard import ensure_torchvision_importable

    ensure_torchvision_importable()
    import open_clip

    model = open_clip.create_model(TINY_MODEL, pretrained=None)
    model.load_state_dict(torch.load(tiny_checkpoint, map_location="cpu"))
    visual = model.visual.eval()
    path = tmp_path_factory.mktemp("onnx") / "tiny-visual.onnx"
    torch.onnx.export(visual, torch.zeros(1, 3, 224, 224), str(path), input_names=["image"],
                      output_names=["embedding"], dynamic_axes={"image": {0: "n"}, "embedding": {0: "n"}},
                      dynamo=False, opset_version=17)
    return path


def test_onnx_and_open_clip_backends_agree(tiny_checkpoint, exported, photos):
    torch_backend = load_embedder(ModelSettings(name=TINY_MODEL, pretrained=str(tiny_checkpoint), device="cpu"))
    onnx_backend = load_embedder(ModelSettings(backend="onnx", name="tiny", pretrained=str(exported)))
    assert onnx_backend.dim == torch_backend.dim
    images = [Image.open(photos[n]).convert("RGB") for n in ("astronaut", "rocket", "coffee")]
    a = torch_backend.embed(torch.stack([torch_backend.preprocess(i) for i in images]))
    b = onnx_backend.embed(torch.stack([onnx_backend.preprocess(i) for i in images]))
    np.testing.assert_allclose(b, a, atol=2e-4)  # same preprocessing (short side + centre crop), same net
    assert onnx_backend.identity == "onnx:tiny:tiny-visual.onnx"


@pytest.fixture(scope="module")
def exported_uint8_nhwc(tiny_checkpoint, tmp_path_factory):
    """The same tower behind a uint8 NHWC input that normalises inside, as SSCD's ONNX exports do."""
    from workers.torch_guard import ensure_torchvision_importable

    ensure_torchvision_importable()
    import open_clip

    model = open_clip.create_model(TINY_MODEL, pretrained=None)
    model.load_state_dict(torch.load(tiny_checkpoint, map_location="cpu"))

    class Uint8Nhwc(torch.nn.Module):
        mean: torch.Tensor  # buffers, registered below
        std: torch.Tensor

        def __init__(self, visual: torch.nn.Module):
            super().__init__()
            self.visual = visual
            self.register_buffer("mean", torch.tensor(open_clip.OPENAI_DATASET_MEAN).reshape(1, 3, 1, 1))
            self.register_buffer("std", torch.tensor(open_clip.OPENAI_DATASET_STD).reshape(1, 3, 1, 1))

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            x = x.permute(0, 3, 1, 2).float() / 255.0
            return self.visual((x - self.mean) / self.std)

    path = tmp_path_factory.mktemp("onnx") / "tiny-u8-nhwc.onnx"
    torch.onnx.export(Uint8Nhwc(model.visual.eval()).eval(), torch.zeros(1, 224, 224, 3, dtype=torch.uint8), str(path),
                      input_names=["image"], output_names=["embedding"],
                      dynamic_axes={"image": {0: "n"}, "embedding": {0: "n"}}, dynamo=False, opset_version=17)
    return path


def test_uint8_nhwc_input_set_through_settings(tiny_checkpoint, exported_uint8_nhwc, photos):
    """input_dtype and layout from the settings: the graph refuses float32 or NCHW, and agrees with torch."""
    torch_backend = load_embedder(ModelSettings(name=TINY_MODEL, pretrained=str(tiny_checkpoint), device="cpu"))
    onnx_backend = load_embedder(ModelSettings(backend="onnx", name="tiny-u8", pretrained=str(exported_uint8_nhwc),
                                               input_dtype="uint8", layout="nhwc", mean=[], std=[]))
    images = [Image.open(photos[n]).convert("RGB") for n in ("astronaut", "rocket", "coffee")]
    pixels = [onnx_backend.preprocess(i) for i in images]
    assert pixels[0].dtype == torch.uint8 and pixels[0].shape == (3, 224, 224)
    a = torch_backend.embed(torch.stack([torch_backend.preprocess(i) for i in images]))
    b = onnx_backend.embed(torch.stack(pixels))
    np.testing.assert_allclose(b, a, atol=2e-4)


def test_square_resize_without_normalisation(exported):
    backend = load_embedder(ModelSettings(backend="onnx", pretrained=str(exported), resize="square", mean=[], std=[]))
    x = backend.preprocess(Image.new("RGB", (640, 320), (255, 0, 0)))
    assert x.shape == (3, 224, 224) and x.dtype == torch.float32 and float(x[0].max()) == 1.0


def test_a_missing_onnx_file_names_the_setting(tmp_path):
    with pytest.raises(ModelUnavailable) as err:
        load_embedder(ModelSettings(backend="onnx", pretrained=str(tmp_path / "no.onnx")))
    assert "model.pretrained" in err.value.fix


def test_scan_runs_on_the_onnx_backend(exported, tmp_path, photos):
    copy = tmp_path / "copy.jpg"
    copy.write_bytes(photos["astronaut"].read_bytes())
    listing = tmp_path / "files.txt"
    listing.write_text(f"{photos['astronaut']}\n{copy}\n{photos['moon']}\n")
    env = base_env(tmp_path / "state", DUPWATCH_MODEL__BACKEND="onnx", DUPWATCH_MODEL__PRETRAINED=str(exported),
                   DUPWATCH_MODEL__NAME="tiny", DUPWATCH_REQUIRE_MODEL="true")
    proc = subprocess.run(dupwatch_cmd() + ["scan", "--files-from", str(listing)], env=env, capture_output=True,
                          text=True, timeout=300, check=False)
    assert proc.returncode == 0, proc.stderr
    assert [json.loads(line)["verdict"] for line in proc.stdout.splitlines()] == ["new", "exact-copy", "new"]
    import sqlite3

    conn = sqlite3.connect(tmp_path / "state" / "catalog.sqlite3")
    models = {r[0] for r in conn.execute("SELECT model FROM files")}
    assert models == {"onnx:tiny:tiny-visual.onnx"}
