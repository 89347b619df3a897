"""Throughput of `dupwatch scan` against imagehash and imagededup on the same camera-sized JPEGs, in one run.

    python -m bench.throughput                                  # 200 files, 1-12 MP, 3 rounds
    python -m bench.throughput --n 400 --sizes 12 --out bench/out/tp.md --json bench/out/tp.json

Files: real photos (scikit-image's bundled ones and the Debian wallpaper photographs of bench.photos)
scaled and cropped to camera frame sizes (4:3, the `--sizes` megapixels in turn), given a faint sensor-like
grain so the JPEGs carry a camera's entropy rather than an upscaler's smoothness, saved at quality 90-95
with the EXIF a camera writes (make, model, time; every fourth frame stored landscape with orientation 6,
as phones shoot portraits). Built once into `--work` and reused while the parameters match.

Methods, each a separate process run over all N files (numbers are the whole process: start, imports,
model load, decode, hashing, for dupwatch also the catalog and index):
  a. imagehash: `imagehash.phash(Image.open(p))` in a plain loop, the usual anchor;
  b. imagededup: `PHash().encode_images(image_dir=...)` with its default worker processes;
  c. `dupwatch scan --hash-only`;
  d. `dupwatch scan` with ViT-B-32 (the default architecture; random weights, same cost);
  e. `dupwatch scan` with ViT-S-32, the fastest architecture open_clip ships (ENVIRONMENT.md).
Rounds interleave the methods (a b c d e a b c ...) so a noisy neighbour hits all of them alike; the
table gives the median per method of images/s (N / wall), CPU-seconds per image (user + sys of the
process and its children, from wait4) and peak RSS (the largest process), and each method's ratio to (a).
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
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:  # `python bench/throughput.py` as well as `python -m bench.throughput`
    sys.path.insert(0, str(REPO))

from bench.accuracy import _table, machine  # noqa: E402
from bench.dataset import DEFAULT_DEBIAN_CACHE  # noqa: E402
from bench.photos import Photo, debian_photos, skimage_photos  # noqa: E402

DEFAULT_WORK = Path("/tmp/dupwatch-bench-throughput")
TIME = Path("/usr/bin/time")
MODELS = {"d": "ViT-B-32", "e": "ViT-S-32"}
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
    h = int(round((megapixels * 1e6 * 3 / 4) ** 0.5))
    w = int(round(h * 4 / 3))
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


def build_files(folder: Path, n: int, sizes: list[float], *, debian: bool = True, seed: int = 0) -> list[Path]:
    """N camera JPEGs in `folder` (reused when built with the same parameters). Returns them in order."""
    params = {"n": n, "sizes": sizes, "debian": debian, "seed": seed, "version": 2}
    stamp = folder / "params.json"
    files = [folder / "files" / f"IMG_{i:05d}.jpg" for i in range(n)]
    if stamp.exists() and json.loads(stamp.read_text()) == params and all(f.exists() for f in files):
        return files
    (folder / "files").mkdir(parents=True, exist_ok=True)
    for old in (folder / "files").glob("*"):
        old.unlink()
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
    stamp.write_text(json.dumps(params))
    return files


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


def methods(dupwatch: list[str], files_from: Path, image_dir: Path, work: Path, keys: str) -> list[Method]:
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
    return out


def run_once(method: Method, n: int) -> Sample:
    """Run a method in a fresh state dir and account for it the way the kernel does.

    CPU time comes from wait4 (the process and every child it waited for, so imagededup's worker pool
    counts). Peak RSS comes from /usr/bin/time's report when it is there: a child's own wait4 figure
    starts from the RSS of the process that forked it, which for this script (holding decoded photos)
    would hide the method's real peak.
    """
    with tempfile.TemporaryDirectory(prefix="dupwatch-tp-") as tmp:
        env = child_env(DUPWATCH_STATE_DIR=str(Path(tmp) / "state"), **method.env)
        err_path, rss_path = Path(tmp) / "stderr", Path(tmp) / "maxrss"
        argv = (["/usr/bin/time", "-f", "%M", "-o", str(rss_path)] if TIME.exists() else []) + method.argv
        with open(err_path, "wb") as err, open(Path(tmp) / "stdout", "wb+") as out:
            start = time.perf_counter()
            proc = subprocess.Popen(argv, env=env, stdout=out, stderr=err)
            _pid, status, usage = os.wait4(proc.pid, 0)
            wall = time.perf_counter() - start
            proc.returncode = os.waitstatus_to_exitcode(status)
            out.seek(0)
            lines = out.read().decode(errors="replace").splitlines()
        rss_kib = int(rss_path.read_text().split()[-1]) if rss_path.exists() else usage.ru_maxrss
        sample = Sample(wall, usage.ru_utime + usage.ru_stime, rss_kib / 1024, proc.returncode)
        if proc.returncode != 0:
            tail = [ln for ln in err_path.read_text(errors="replace").splitlines() if ln.strip()]
            sample.error = f"exit {proc.returncode}: {tail[-1] if tail else 'no output'}"
        elif method.key in "ab":
            if lines[-1:] != [str(n)]:
                sample.error = f"hashed {lines[-1:] or 'nothing'} of {n} files"
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


def report(rows: list[dict[str, Any]], env: dict[str, Any], info: dict[str, Any]) -> str:
    base = next((r for r in rows if r["key"] == "a" and "images_per_s" in r), None)
    table = []
    for r in rows:
        if "images_per_s" not in r:
            table.append([f"{r['key']}. {r['method']}", None, None, None, None, None, f"FAILED: {r['error']}"])
            continue
        speed = r["images_per_s"] / base["images_per_s"] if base else None
        cpu = r["cpu_s_per_image"] / base["cpu_s_per_image"] if base else None
        table.append([f"{r['key']}. {r['method']}", r["images_per_s"], r["cpu_s_per_image"] * 1000,
                      r["peak_rss_mib"], speed, cpu, r.get("error", "")])
    head = (f"# dupwatch throughput, {env['date']}\n"
            f"machine: {env['cpu']}, {env['cpus_usable']} of {env['cpus_total']} CPUs usable, "
            f"Python {env['python']}, torch {env.get('torch', '?')}, Pillow {env['pillow']}\n"
            f"files: {info['n']} JPEGs, {info['sizes']} MP in turn, {info['mean_mb']:.2f} MB on average; "
            f"median of {info['repeat']} interleaved rounds, whole processes (start and model load included)\n")
    return head + "\n" + _table(["method", "images/s", "CPU-ms/image", "peak RSS MiB", "speed vs a",
                                 "CPU vs a", "note"], table)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=200, help="number of files")
    parser.add_argument("--sizes", default="1,3,6,12", help="frame sizes in megapixels, used in turn")
    parser.add_argument("--repeat", type=int, default=3, help="interleaved rounds; the median is reported")
    parser.add_argument("--methods", default="abcde", help="which of a-e to run")
    parser.add_argument("--work", type=Path, default=DEFAULT_WORK, help="where files and checkpoints are kept")
    parser.add_argument("--no-debian", action="store_true", help="scikit-image photos only")
    parser.add_argument("--dupwatch", default=f"{shlex.quote(sys.executable)} -c 'from daemon.cli import main; main()'",
                        help="command that runs dupwatch (default: this checkout)")
    parser.add_argument("--out", type=Path, help="also write the table here")
    parser.add_argument("--json", type=Path, help="also write every sample here")
    parser.add_argument("--anchor", nargs=2, metavar=("KIND", "TARGET"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.anchor:
        anchor(*args.anchor)
        return

    sizes = [float(s) for s in args.sizes.split(",")]
    files = build_files(args.work / "data", args.n, sizes, debian=not args.no_debian)
    files_from = args.work / "files.txt"
    files_from.write_text("".join(f"{f}\n" for f in files))
    todo = methods(shlex.split(args.dupwatch), files_from, files[0].parent, args.work, args.methods)
    samples: dict[str, list[Sample]] = {m.key: [] for m in todo}
    for round_no in range(args.repeat):
        for m in todo:
            s = run_once(m, len(files))
            samples[m.key].append(s)
            print(f"round {round_no + 1}/{args.repeat} {m.name}: {s.wall_s:.1f}s {s.error or ''}", file=sys.stderr)
    rows = [summarise(m, samples[m.key], len(files)) for m in todo]
    env = machine()
    env["torch"] = _torch_version()
    info = {"n": len(files), "sizes": sizes, "repeat": args.repeat,
            "mean_mb": sum(f.stat().st_size for f in files) / len(files) / 1e6}
    text = report(rows, env, info)
    print(text)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text + "\n")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"machine": env, "files": info, "results": rows}, indent=2) + "\n")


def _torch_version() -> str:
    """Read from the installed metadata: importing torch here would only slow the parent down."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("torch")
    except PackageNotFoundError:
        return "not installed"


if __name__ == "__main__":
    main()
