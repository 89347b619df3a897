"""The model path: open_clip weights from a local checkpoint (as on an air-gapped host), the hash-only
fallback when weights cannot be had, and the torchvision guard that lets open_clip import on CPU torch."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
import torch
from PIL import Image

from daemon.config import Settings
from tests.conftest import TINY_MODEL, base_env, dupwatch_cmd
from workers.models.base import ModelUnavailable
from workers.models.loading import load_embedder, load_model
from workers.settings import ModelSettings

pytestmark = pytest.mark.slow


def test_local_checkpoint_loads_the_exact_weights(tiny_checkpoint, photos):
    embedder = load_embedder(ModelSettings(name=TINY_MODEL, pretrained=str(tiny_checkpoint), device="cpu"))
    assert embedder.identity == f"open_clip:{TINY_MODEL}:{tiny_checkpoint.name}"
    import open_clip

    reference = open_clip.create_model(TINY_MODEL, pretrained=None)
    reference.load_state_dict(torch.load(tiny_checkpoint, map_location="cpu"))
    reference.eval()
    images = [Image.open(photos[n]).convert("RGB") for n in ("astronaut", "coffee")]
    batch = torch.stack([embedder.preprocess(i) for i in images])
    got = embedder.embed(batch)
    with torch.inference_mode():
        want = torch.nn.functional.normalize(reference.encode_image(batch), dim=-1).numpy()
    assert got.shape == (2, embedder.dim) and got.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(got, axis=1), 1.0, rtol=1e-5)
    np.testing.assert_allclose(got, want, atol=1e-5)  # the checkpoint's weights, not fresh random ones
    assert not np.allclose(got[0], got[1])


def test_a_missing_checkpoint_names_the_fix(tmp_path):
    with pytest.raises(ModelUnavailable) as err:
        load_embedder(ModelSettings(name=TINY_MODEL, pretrained=str(tmp_path / "nope.pt")))
    assert "does not exist" in str(err.value) and "model.pretrained" in err.value.fix


def test_unreachable_weights_mean_no_similar_verdicts_said_loudly(tmp_path, photos):
    """The default pretrained tag on a host that cannot fetch it (HF_HUB_OFFLINE, set from the start as
    an air-gapped host would): scan still works, copies by SSCD, no `similar`, and says so with the fix."""
    listing = tmp_path / "files.txt"
    listing.write_text(f"{photos['coffee']}\n")
    env = base_env(tmp_path / "state")
    proc = subprocess.run(dupwatch_cmd() + ["scan", "--files-from", str(listing)], env=env, capture_output=True,
                          text=True, timeout=300, check=False)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["verdict"] == "new"
    assert "SEMANTIC MODEL UNAVAILABLE" in proc.stderr and "no 'similar' verdicts" in proc.stderr
    assert "DUPWATCH_MODEL__PRETRAINED" in proc.stderr
    strict = subprocess.run(dupwatch_cmd() + ["scan", "--require-model", "--files-from", str(listing)],
                            env=base_env(tmp_path / "state2"), capture_output=True, text=True, timeout=300, check=False)
    assert strict.returncode != 0 and strict.stdout == ""
    assert "not in the cache" in strict.stderr


def test_an_offline_host_decides_once_from_a_quick_probe(tmp_path, photos):
    """No HF_HUB_OFFLINE set and no route to the hub: the one probe decides (its reason is what the banner
    gives), instead of huggingface_hub's retries in every process."""
    from workers.models.hub import HUB_HOST, _decide

    if _decide() == "":
        pytest.skip(f"{HUB_HOST} is reachable from this host: nothing to decide offline")
    listing = tmp_path / "files.txt"
    listing.write_text(f"{photos['coffee']}\n")
    env = {k: v for k, v in base_env(tmp_path / "state").items() if k != "HF_HUB_OFFLINE"}
    proc = subprocess.run(dupwatch_cmd() + ["scan", "--files-from", str(listing)], env=env, capture_output=True,
                          text=True, timeout=300, check=False)
    assert proc.returncode == 0, proc.stderr
    assert f"{HUB_HOST} unreachable" in proc.stderr and "not in the cache" in proc.stderr


@pytest.mark.parametrize("cached", [False, True])
def test_an_offline_host_without_cached_weights_never_imports_torch(tmp_path, cached):
    """Offline with a pretrained tag and nothing in any weight cache, open_clip could only fail, after
    importing torch and building the model (hundreds of MB, seconds of CPU): the loader says so first. Any
    cached file leaves the decision to open_clip, so weights that are there still load."""
    home = tmp_path / "hf"
    if cached:  # a file in huggingface_hub's cache (not these weights: open_clip must look, then refuse)
        blob = home / "hub" / "models--laion--some-other-model" / "blobs" / "0123"
        blob.parent.mkdir(parents=True)
        blob.write_bytes(b"weights")
    code = ("import sys; from daemon.config import Settings; from workers.models.loading import load_model; "
            "e, status = load_model(Settings()); assert e is None and status['state'] == 'unavailable', status; "
            "print(status['reason']); print('torch' in sys.modules)")
    env = {**base_env(tmp_path / "state"), "HF_HOME": str(home), "HOME": str(tmp_path)}
    env.pop("HF_HUB_CACHE", None)
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300,
                         check=False)
    assert out.returncode == 0, out.stderr
    reason, imported = out.stdout.strip().splitlines()[-2:]
    assert "not in the cache" in reason and "HF_HUB_OFFLINE" in reason
    assert imported == str(cached)


def test_hash_only_by_choice_loads_nothing():
    embedder, status = load_model(Settings(hash_only=True))
    assert embedder is None and status["state"] == "hash-only"


def test_torchvision_guard_makes_open_clip_importable_in_a_fresh_process():
    code = ("from workers.torch_guard import ensure_torchvision_importable as g; mode = g(); "
            "import open_clip, torchvision.transforms.v2; print(mode)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=False)
    assert out.returncode == 0, out.stderr
    mode = out.stdout.strip().splitlines()[-1]
    assert mode in ("native", "schemas")
    bare = subprocess.run([sys.executable, "-c", "import torchvision"], capture_output=True, text=True, timeout=120,
                          check=False)
    if mode == "schemas":  # the CUDA torchvision wheel on CPU torch: importing it bare is what fails
        assert bare.returncode != 0 and "torchvision::nms" in bare.stderr
    else:
        assert bare.returncode == 0


def test_embedding_signal_makes_verdicts_when_thresholds_are_set(tmp_path, photos, model_env):
    """Hash thresholds off, an explicit copy threshold on: the verdict must come from the embedding."""
    from tests import imaging

    original = tmp_path / "a.jpg"
    original.write_bytes(photos["astronaut"].read_bytes())
    files = [original, imaging.reencode(original, tmp_path / "b.jpg", 30), photos["chelsea"]]
    listing = tmp_path / "files.txt"
    listing.write_text("".join(f"{p}\n" for p in files))
    env = base_env(tmp_path / "state", **model_env, DUPWATCH_MATCH__PHASH_MAX_DISTANCE="-1",
                   DUPWATCH_MATCH__DHASH_MAX_DISTANCE="-1", DUPWATCH_MATCH__COPY_SCORE="99.5")
    proc = subprocess.run(dupwatch_cmd() + ["scan", "--files-from", str(listing)], env=env, capture_output=True,
                          text=True, timeout=300, check=False)
    assert proc.returncode == 0, proc.stderr
    records = [json.loads(line) for line in proc.stdout.splitlines()]
    assert [r["verdict"] for r in records] == ["new", "edited-copy", "new"]
    assert records[1]["match"] == str(original) and records[1]["score"] >= 99.5

    query = subprocess.run(dupwatch_cmd() + ["query", "--json", str(files[1])], env=env, capture_output=True,
                           text=True, timeout=300, check=False)
    assert query.returncode == 0, query.stderr
    top = json.loads(query.stdout)
    assert top[0]["path"] in (str(original), str(files[1]))
    assert {r["path"] for r in top} >= {str(original)}
