"""Throughput of `dupwatch scan` against imagehash, imagededup and Immaculate, on two folders, in one run.

    python -m bench.throughput                                  # both folders, methods a c f g, 3 rounds
    python -m bench.throughput --n 388 --sizes 12 --small-n 3735 --methods acfg \
        --mode 'sscd=' --out bench/out/tp.md --json bench/out/tp.json   # docs/performance.md's table

Folders (built once into `--work` and reused while their parameters match):
  camera: real photos (scikit-image's and the Debian photographs of bench.photos) scaled and cropped to
    camera frame sizes (4:3, the `--sizes` megapixels in turn), given a faint sensor-like grain so the
    JPEGs carry a camera's entropy rather than an upscaler's smoothness, saved at quality 90-95 with the
    EXIF a camera writes (make, model, time; every fourth frame stored landscape with orientation 6).
  small: `--small-n` web-sized JPEGs (median 647 x 530, 0.06 MB) cut from the same photos by random crops
    and resizes, quality 75-95, no EXIF: a downloads or chat-export folder, where per-file overhead
    (process start, Python per file, thread hand-offs) weighs more than decoding.

Methods, each a separate process run over all files of a folder (numbers are the whole process: start,
imports, model load, decode, hashing, for dupwatch also the catalog and index):
  a. imagehash: `imagehash.phash(Image.open(p))` in a plain loop, the usual anchor;
  b. imagededup: `PHash().encode_images(image_dir=...)` with its default worker processes;
  c. `dupwatch scan --hash-only`;
  d. `dupwatch scan` with ViT-B-32 (the default architecture; random weights, same cost);
  e. `dupwatch scan` with ViT-S-32, the fastest architecture open_clip ships (ENVIRONMENT.md);
  f. Immaculate `--method pdq` (bench/anchors.py: its own Python 3.12 venv, a Rust core);
  g. Immaculate `--method sscd` (Meta's SSCD through onnxruntime);
  plus one method per `--mode NAME=FLAGS`: `dupwatch scan FLAGS` (e.g. the SSCD modes).
Rounds interleave the methods (a b c ... a b c ...) so a noisy neighbour hits all of them alike; the
table gives the median per method of images/s (N / wall), CPU-seconds per image (user + sys of the
process and its children, from wait4) and peak RSS (the largest process), and each method's speed ratio
to a, f and g and its memory ratio to f and g (the anchors dupwatch is measured against: hash-only
against pdq, SSCD against sscd).
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:  # `python bench/throughput.py` as well as `python -m bench.throughput`
    sys.path.insert(0, str(REPO))

from bench import anchors, measure
from bench.accuracy import _table, machine, parse_mode
from bench.dataset import DEFAULT_DEBIAN_CACHE
from bench.photos import Photo, debian_photos, skimage_photos

DEFAULT_WORK = Path("/tmp/dupwatch-bench-throughput")
FOLDERS = ("camera", "small")
# Long sides of the small folder, drawn uniformly: with the aspect ratios below the median file is
# 647 x 530 at the default size (a web folder measured about 640 x 460).
SMALL_LONG_SIDE = (480, 900)
SMALL_ASPECTS = (4 / 3, 3 / 2, 16 / 9, 1.0, 3 / 4)
MODELS = {"d": "ViT-B-32", "e": "ViT-S-32"}
IMMACULATE = {"f": "pdq", "g": "sscd"}
ORIENTATION_TAG, MAKE_TAG, MODEL_TAG, DATETIME_TAG = 0x0112, 0x010F, 0x0110, 0x0132


@dataclass
class Method:
    """One column of the comparison: what to run and how to check it did the work."""

    key: str
    name: str
    argv: list[str]
    env: dict[str, str] = field(default_factory=dict)


@dataclass
class Sample:
    """One run of one method, as the kernel accounted it."""

    wall_s: float
    cpu_s: float
    max_rss_mib: float
    rc: int
    error: str | None = None


# ---- files --------------------------------------------------------------------------------------

def camera_frame(photo: Image.Image, megapixels: float, rng: np.random.Generator) -> Image.Image:
    """Scale-to-cover and centre-crop to a 4:3 frame of about `megapixels`, plus faint grain.

    Upscaling alone leaves large smooth areas that JPEG encodes (and decodes) far more cheaply than a
    real sensor's output; luma grain of sigma 4 restores a camera-like density (about 2 bits per pixel at
    quality 92, a 12 MP frame of 3 MB: entropy decoding, which draft mode cannot skip, costs what it does
    on a real camera file).
    """
    h = round((megapixels * 1e6 * 3 / 4) ** 0.5)
    w = round(h * 4 / 3)
    scale = max(w / photo.width, h / photo.height)
    big = photo.resize((max(w, round(photo.width * scale)), max(h, round(photo.height * scale))),
                       Image.Resampling.BICUBIC)
    left, top = (big.width - w) // 2, (big.height - h) // 2
    pixels = np.asarray(big.crop((left, top, left + w, top + h)), dtype=np.int16)
    grain = rng.normal(0.0, 4.0, size=pixels.shape[:2] + (1,)).astype(np.int16)
    return Image.fromarray(np.clip(pixels + grain, 0, 255).astype(np.uint8))


def camera_exif(index: int) -> Image.Exif:
    """The EXIF fields a camera writes that matter to a decoder (orientation) and a few that do not."""
    exif = Image.Exif()
    exif[MAKE_TAG] = "dupwatch-bench"
    exif[MODEL_TAG] = "Camera 4:3"
    exif[DATETIME_TAG] = time.strftime("%Y:%m:%d %H:%M:%S", time.gmtime(1_700_000_000 + 60 * index))
    exif[ORIENTATION_TAG] = 6 if index % 4 == 3 else 1
    return exif


def load_photos(debian: bool) -> list[Photo]:
    """skimage photos, plus the Debian wallpaper photographs when they can be had."""
    photos = skimage_photos()
    if debian:
        try:
            photos += debian_photos(DEFAULT_DEBIAN_CACHE)
        except (OSError, subprocess.CalledProcessError) as exc:
            print(f"Debian photos unavailable ({exc}); using scikit-image's only", file=sys.stderr)
    return photos


def cached_folder(folder: Path, params: dict[str, Any], names: list[str],
                  build: Callable[[list[Path]], None]) -> list[Path]:
    """The files `names` under `folder`/files, made by `build(paths)` unless the folder already holds them, built
    with the same `params` (recorded in `folder`/params.json once every file is written). Returns them in order."""
    stamp = folder / "params.json"
    files = [folder / "files" / name for name in names]
    if stamp.exists() and json.loads(stamp.read_text()) == params and all(f.exists() for f in files):
        return files
    (folder / "files").mkdir(parents=True, exist_ok=True)
    for old in (folder / "files").glob("*"):
        old.unlink()
    build(files)
    stamp.write_text(json.dumps(params))
    return files


def build_files(folder: Path, n: int, sizes: list[float], *, debian: bool = True, seed: int = 0) -> list[Path]:
    """N camera JPEGs in `folder` (reused when built with the same parameters). Returns them in order."""
    params = {"n": n, "sizes": sizes, "debian": debian, "seed": seed, "version": 2}
    return cached_folder(folder, params, [f"IMG_{i:05d}.jpg" for i in range(n)],
                         lambda files: _camera_files(files, sizes, debian, seed))


def _camera_files(files: list[Path], sizes: list[float], debian: bool, seed: int) -> None:
    n = len(files)
    photos = load_photos(debian)
    rng = np.random.default_rng(seed)
    cache: dict[str, Image.Image] = {}
    for i, path in enumerate(files):
        photo = photos[i % len(photos)]
        if photo.id not in cache:
            cache[photo.id] = photo.load()
        frame = camera_frame(cache[photo.id], sizes[i % len(sizes)], rng)
        # Stored as the sensor saw it (landscape); orientation 6 makes viewers show it upright.
        frame.save(path, quality=90 + i % 6, exif=camera_exif(i).tobytes())
        print(f"\rbuilding files: {i + 1}/{n}", end="", file=sys.stderr, flush=True)
    print(file=sys.stderr)


def small_size(rng: np.random.Generator) -> tuple[int, int]:
    """A web size (w, h): a long side of SMALL_LONG_SIDE at one of SMALL_ASPECTS."""
    aspect = float(rng.choice(SMALL_ASPECTS))
    long_side = int(rng.integers(*SMALL_LONG_SIDE))
    return (long_side, round(long_side / aspect)) if aspect >= 1 else (round(long_side * aspect), long_side)


def cover_box(width: int, height: int, w: int, h: int, rng: np.random.Generator) -> tuple[int, int, int, int]:
    """A random box of aspect w:h in a `width` x `height` photo, 35-100 % of the largest such box's side."""
    share = float(rng.uniform(0.35, 1.0))
    scale = min(width / w, height / h) * share
    cw, ch = max(1, round(w * scale)), max(1, round(h * scale))
    left, top = int(rng.integers(0, width - cw + 1)), int(rng.integers(0, height - ch + 1))
    return left, top, left + cw, top + ch


def small_box(width: int, height: int, rng: np.random.Generator) -> tuple[tuple[int, int, int, int], tuple[int, int]]:
    """A random crop box (35-100 % of the side) at a random aspect in a `width` x `height` photo, and the
    web size (w, h) it is resized to."""
    w, h = small_size(rng)
    return cover_box(width, height, w, h, rng), (w, h)


def small_frame(photo: Image.Image, rng: np.random.Generator) -> Image.Image:
    """A random crop (35-100 % of the side) at a random aspect, resized to a web size."""
    box, size = small_box(photo.width, photo.height, rng)
    return photo.crop(box).resize(size, Image.Resampling.BILINEAR)


def build_small_files(folder: Path, n: int, *, debian: bool = True, seed: int = 0) -> list[Path]:
    """N small JPEGs in `folder` (reused when built with the same parameters). Returns them in order."""
    params = {"n": n, "debian": debian, "seed": seed, "kind": "small", "version": 1}
    return cached_folder(folder, params, [f"img_{i:05d}.jpg" for i in range(n)],
                         lambda files: _small_files(files, debian, seed))


def _small_files(files: list[Path], debian: bool, seed: int) -> None:
    n = len(files)
    photos = load_photos(debian)
    # Photo by photo (file i comes from photo i mod len), so only one decoded photo is held at a time.
    for j, photo in enumerate(photos):
        image = photo.load()
        for i in range(j, n, len(photos)):
            rng = np.random.default_rng([seed, 1, i])
            small_frame(image, rng).save(files[i], quality=int(rng.integers(75, 96)))
        print(f"\rbuilding small files: photo {j + 1}/{len(photos)}", end="", file=sys.stderr, flush=True)
    print(file=sys.stderr)


# ---- methods ------------------------------------------------------------------------------------

def child_env(**extra: str) -> dict[str, str]:
    """The caller's environment without DUPWATCH_ settings, importing this checkout's code."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("DUPWATCH_")}
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), *filter(None, [env.get("PYTHONPATH")])])
    env["HF_HUB_OFFLINE"] = "1"
    env.update(extra)
    return env


def checkpoint(work: Path, name: str) -> Path:
    """A randomly initialised open_clip checkpoint: the same compute as published weights, offline."""
    path = work / f"random-{name}.pt"
    if not path.exists():
        code = ("import sys, torch\nfrom workers.torch_guard import ensure_torchvision_importable\n"
                "ensure_torchvision_importable()\nimport open_clip\ntorch.manual_seed(0)\n"
                "torch.save(open_clip.create_model(sys.argv[1], pretrained=None).state_dict(), sys.argv[2])")
        subprocess.run([sys.executable, "-c", code, name, str(path)], env=child_env(), check=True)
    return path


def methods(dupwatch: list[str], files_from: Path, image_dir: Path, work: Path, keys: str,
            modes: list[tuple[str, list[str]]]) -> list[Method]:
    me = [sys.executable, str(Path(__file__).resolve())]
    scan = dupwatch + ["scan", "--files-from", str(files_from)]
    out = []
    if "a" in keys:
        out.append(Method("a", "imagehash.phash loop", me + ["--anchor", "imagehash", str(files_from)]))
    if "b" in keys:
        out.append(Method("b", "imagededup PHash", me + ["--anchor", "imagededup", str(image_dir)]))
    if "c" in keys:
        out.append(Method("c", "dupwatch scan --hash-only", scan + ["--hash-only"]))
    for key, model in MODELS.items():
        if key in keys:
            out.append(Method(key, f"dupwatch scan {model}", scan, {
                "DUPWATCH_MODEL__NAME": model, "DUPWATCH_MODEL__PRETRAINED": str(checkpoint(work, model))}))
    for key, method in IMMACULATE.items():
        if key in keys:
            out.append(Method(key, f"Immaculate {method}", anchors.argv(image_dir, method)))
    for i, (name, flags) in enumerate(modes, 1):
        out.append(Method(f"m{i}", f"dupwatch scan {name}" + (f" ({' '.join(flags)})" if flags else ""),
                          scan + flags))
    return out


def run_once(method: Method, n: int) -> Sample:
    """Run a method in a fresh state dir (bench/measure.py accounts for it) and check it did the work."""
    with tempfile.TemporaryDirectory(prefix="dupwatch-tp-") as tmp:
        env = child_env(DUPWATCH_STATE_DIR=str(Path(tmp) / "state"), **method.env)
        done = measure.run(method.argv, env=env)
    sample = Sample(done.wall_s, done.cpu_s, done.max_rss_mib, done.rc)
    lines = done.stdout.splitlines()
    if done.rc != 0:
        tail = done.stderr_tail.splitlines()
        sample.error = f"exit {done.rc}: {tail[-1] if tail else 'no output'}"
    elif method.key in "ab":
        if lines[-1:] != [str(n)]:
            sample.error = f"hashed {lines[-1:] or 'nothing'} of {n} files"
    elif method.key in IMMACULATE:
        skipped = json.loads(done.stdout or "{}").get("skipped", [])
        if not done.stdout or skipped:
            sample.error = f"Immaculate skipped {len(skipped)} of {n} files" if skipped else "no JSON"
    else:
        bad = [ln for ln in lines if '"verdict": "error"' in ln]
        if len(lines) != n or bad:
            sample.error = f"{len(lines)} records for {n} files, {len(bad)} errors"
    return sample


def anchor(kind: str, target: str) -> None:
    """Run inside the anchor's own process: print how many files were hashed (checked by the parent)."""
    if kind == "imagehash":
        import imagehash

        paths = Path(target).read_text().splitlines()
        hashes = [imagehash.phash(Image.open(p)) for p in paths]
        print(len(hashes))
    else:
        # imagededup imports torchvision; on the CPU build of torch that needs dupwatch's guard first
        # (ENVIRONMENT.md "torchvision on CPU torch").
        from workers.torch_guard import ensure_torchvision_importable

        ensure_torchvision_importable()
        from imagededup.methods import PHash

        print(len(PHash(verbose=False).encode_images(image_dir=target)))


# ---- report -------------------------------------------------------------------------------------

def summarise(method: Method, samples: list[Sample], n: int) -> dict[str, Any]:
    ok = [s for s in samples if s.error is None]
    row: dict[str, Any] = {"key": method.key, "method": method.name, "runs": len(samples), "ok_runs": len(ok),
                           "samples": [asdict(s) for s in samples]}
    if not ok:
        row["error"] = samples[0].error if samples else "not run"
        return row
    row.update(images_per_s=n / statistics.median(s.wall_s for s in ok),
               wall_s=statistics.median(s.wall_s for s in ok),
               cpu_s_per_image=statistics.median(s.cpu_s for s in ok) / n,
               peak_rss_mib=statistics.median(s.max_rss_mib for s in ok))
    if len(ok) < len(samples):
        row["error"] = f"{len(samples) - len(ok)} runs failed: {next(s.error for s in samples if s.error)}"
    return row


def _ratio(row: dict[str, Any], base: dict[str, Any] | None, key: str, invert: bool = False) -> float | None:
    """row / base for `key` (base / row when `invert`, so that > 1 always means "row is better")."""
    if base is None or key not in row or key not in base or not row[key] or not base[key]:
        return None
    return base[key] / row[key] if invert else row[key] / base[key]


def report(rows: list[dict[str, Any]], env: dict[str, Any], info: dict[str, Any]) -> str:
    """One table: speed as images/s and as ratios to a, f and g (> 1: faster than the anchor), memory
    as MiB and as the anchors' peak over the method's (> 1: the method needs less)."""
    bases = {key: next((r for r in rows if r["key"] == key and "images_per_s" in r), None) for key in "afg"}
    table: list[list[Any]] = []
    for r in rows:
        if "images_per_s" not in r:
            table.append([f"{r['key']}. {r['method']}"] + [None] * 8 + [f"FAILED: {r['error']}"])
            continue
        table.append([f"{r['key']}. {r['method']}", r["images_per_s"], r["cpu_s_per_image"] * 1000,
                      r["peak_rss_mib"], *(_ratio(r, bases[k], "images_per_s") for k in "afg"),
                      *(_ratio(r, bases[k], "peak_rss_mib", invert=True) for k in "fg"), r.get("error", "")])
    head = (f"## {info['folder']} folder: {info['n']} JPEGs, {info['describe']}, {info['mean_mb']:.2f} MB on average\n")
    return head + "\n" + _table(["method", "images/s", "CPU-ms/image", "peak RSS MiB", "speed × a", "speed × pdq",
                                 "speed × sscd", "RSS pdq/x", "RSS sscd/x", "note"], table)


def header(env: dict[str, Any], repeat: int) -> str:
    return (f"# dupwatch throughput, {env['date']}\n"
            f"machine: {env['cpu']}, {env['cpus_usable']} of {env['cpus_total']} CPUs usable, "
            f"Python {env['python']}, torch {env.get('torch', '?')}, Pillow {env['pillow']}\n"
            f"median of {repeat} interleaved rounds, whole processes (start and model load included)\n")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=200, help="number of files")
    parser.add_argument("--sizes", default="1,3,6,12", help="frame sizes in megapixels, used in turn")
    parser.add_argument("--repeat", type=int, default=3, help="interleaved rounds; the median is reported")
    parser.add_argument("--methods", default="acfg", help="which of a-g to run")
    parser.add_argument("--mode", action="append", type=parse_mode, default=[], metavar="NAME=FLAGS",
                        help="also run `dupwatch scan FLAGS` as a method (repeatable)")
    parser.add_argument("--folders", default=",".join(FOLDERS), help="camera, small or both")
    parser.add_argument("--small-n", type=int, default=3735, help="number of files in the small folder")
    parser.add_argument("--work", type=Path, default=DEFAULT_WORK, help="where files and checkpoints are kept")
    parser.add_argument("--no-debian", action="store_true", help="scikit-image photos only")
    parser.add_argument("--dupwatch", default=f"{shlex.quote(sys.executable)} -c 'from daemon.cli.main import main; main()'",
                        help="command that runs dupwatch (default: this checkout)")
    parser.add_argument("--out", type=Path, help="also write the table here")
    parser.add_argument("--json", type=Path, help="also write every sample here")
    parser.add_argument("--anchor", nargs=2, metavar=("KIND", "TARGET"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.anchor:
        anchor(*args.anchor)
        return
    if any(k in args.methods for k in IMMACULATE):
        anchors.ensure_venv()

    sizes = [float(s) for s in args.sizes.split(",")]
    folders = [f for f in args.folders.split(",") if f]
    env = machine()
    env["torch"] = _torch_version()
    texts = [header(env, args.repeat)]
    payload: dict[str, Any] = {"machine": env, "folders": []}
    for folder in folders:
        if folder == "camera":
            files = build_files(args.work / "data", args.n, sizes, debian=not args.no_debian)
            describe = f"{sizes} MP in turn"
        elif folder == "small":
            files = build_small_files(args.work / "small", args.small_n, debian=not args.no_debian)
            describe = _median_size(files)
        else:
            parser.error(f"unknown folder {folder!r} (camera, small)")
        files_from = args.work / f"files-{folder}.txt"
        files_from.write_text("".join(f"{f}\n" for f in files))
        todo = methods(shlex.split(args.dupwatch), files_from, files[0].parent, args.work, args.methods, args.mode)
        samples: dict[str, list[Sample]] = {m.key: [] for m in todo}
        for round_no in range(args.repeat):
            for m in todo:
                s = run_once(m, len(files))
                samples[m.key].append(s)
                print(f"{folder} round {round_no + 1}/{args.repeat} {m.name}: {s.wall_s:.1f}s {s.error or ''}",
                      file=sys.stderr)
        rows = [summarise(m, samples[m.key], len(files)) for m in todo]
        info = {"folder": folder, "n": len(files), "describe": describe, "sizes": sizes, "repeat": args.repeat,
                "mean_mb": sum(f.stat().st_size for f in files) / len(files) / 1e6}
        texts.append(report(rows, env, info))
        payload["folders"].append({"files": info, "results": rows})
    text = "\n\n".join(texts)
    print(text)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text + "\n")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(payload, indent=2) + "\n")


def _median_size(files: list[Path]) -> str:
    """Median width x height of a folder, read from the headers only."""
    sizes = []
    for f in files:
        with Image.open(f) as image:
            sizes.append(image.size)
    return f"median {int(np.median([w for w, _ in sizes]))} x {int(np.median([h for _, h in sizes]))}"


def _torch_version() -> str:
    """Read from the installed metadata: importing torch here would only slow the parent down."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("torch")
    except PackageNotFoundError:
        return "not installed"


if __name__ == "__main__":
    main()
