"""End-to-end worker throughput on a GPU host: JPEG files in, features out, through `workers.pipeline`.

    python -m bench.gpu --n 20000 --procs 8 --out bench/results/gpu.txt

This is the worker half of dupwatch (decode, 27 hashes, the picture-in-frame cut, the models) exactly as an
rq worker runs it, without Redis or the owner: on a GPU host the workers are what must keep the card fed,
and the owner's cost per verdict is measured by bench/scale.py. `--procs` worker processes share the one GPU,
each with its decode thread pool, as `workers.count` would run them; each takes an interleaved shard of the
files. Timing starts when every process has loaded its models and run one warm-up batch (a barrier), and
stops when the last one finishes: images/s = files / that wall. GPU utilisation is sampled by nvidia-smi
every 250 ms over the same interval.

Modes:
  hash-only                 decode + hashes only (the CPU ceiling of the decode side);
  sscd (torch fp16)         SSCD through the TorchScript backend, from `workers.models.sscd_export` (the
                            packaged int8 ONNX graph rebuilt as a float torch network): onnxruntime's CUDA
                            build is a separate wheel this host does not have;
  sscd_distilled (torch)    the distilled student, the same way;
  ViT-B-32 fp16             open_clip's ViT-B-32 through the open_clip backend, from a checkpoint this bench
                            writes with random weights (no weights can be downloaded here; the cost of a
                            forward pass does not depend on the weights' values).
The folder: `--n` web-sized JPEGs (longest side 480-800 px, quality 75-95) cut at random from the photos
scikit-image ships inside its wheel, written once into `--work`.
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import platform
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))


PHOTOS = ("astronaut", "coffee", "chelsea", "rocket", "hubble_deep_field", "immunohistochemistry", "motorcycle_left",
          "cat", "retina", "colorwheel", "logo", "page", "camera", "moon", "text", "clock", "horse")
"""scikit-image samples to cut from; those this install cannot load without a download are skipped."""


def _photo(name: str):
    from skimage import data

    return np.asarray(getattr(data, name)())


def _write_one(args: tuple[int, str, tuple[str, ...]]) -> None:
    from PIL import Image

    i, folder, names = args
    rng = np.random.default_rng(i)
    image = Image.fromarray(_photo(names[int(rng.integers(len(names)))])).convert("RGB")
    w, h = image.size
    cw, ch = int(w * rng.uniform(0.5, 1.0)), int(h * rng.uniform(0.5, 1.0))
    x, y = int(rng.integers(0, w - cw + 1)), int(rng.integers(0, h - ch + 1))
    image = image.crop((x, y, x + cw, y + ch))
    side = int(rng.integers(480, 801))
    scale = side / max(image.size)
    image = image.resize((max(1, round(image.width * scale)), max(1, round(image.height * scale))))
    image.save(Path(folder) / f"img{i:06d}.jpg", quality=int(rng.integers(75, 96)))


def _loadable(name: str) -> bool:
    try:
        return _photo(name).ndim >= 2
    except Exception:  # noqa: BLE001 - skimage raises whatever its downloader raises for a sample not bundled
        return False


def build_folder(folder: Path, n: int) -> list[str]:
    folder.mkdir(parents=True, exist_ok=True)
    have = sorted(str(p) for p in folder.glob("img*.jpg"))
    if len(have) != n:
        for p in folder.glob("img*.jpg"):
            p.unlink()
        names = tuple(name for name in PHOTOS if _loadable(name))
        if not names:
            raise SystemExit("no scikit-image sample photo loads on this host")
        with mp.get_context("fork").Pool(os.cpu_count()) as pool:
            pool.map(_write_one, [(i, str(folder), names) for i in range(n)], chunksize=64)
        have = sorted(str(p) for p in folder.glob("img*.jpg"))
    return have


def random_vit_checkpoint(path: Path, name: str) -> Path:
    """A ViT checkpoint with random weights, in the format the open_clip backend loads from a path."""
    if not path.exists():
        import torch

        from workers.torch_guard import ensure_torchvision_importable

        ensure_torchvision_importable()
        import open_clip

        model = open_clip.create_model(name, pretrained=None)
        torch.save(model.state_dict(), path)
    return path


def settings_for(mode: str, work: Path, device: str):
    from workers.settings import WorkerSettings

    if mode == "hash-only":
        return WorkerSettings(hash_only=True)
    if mode.startswith("sscd"):
        name = mode.split()[0]
        return WorkerSettings.model_validate({"model": {"name": "none"}, "copy_model": {
            "name": str(work / f"{name}-from-onnx.torchscript.pt"), "device": device, "threads": 1}})
    arch = mode.split()[0]
    return WorkerSettings.model_validate({"copy_model": {"name": "none"}, "model": {
        "name": arch, "pretrained": str(work / f"{arch}-random.pt"), "device": device, "precision": "fp16" if device == "cuda" else "fp32",
        "threads": 1}})


def _worker(mode: str, work: str, device: str, files: list[str], batch: int, threads: int, barrier, results) -> None:
    from workers.models.loading import load_models
    from workers.pipeline import Pipeline
    from workers.settings import DecodeSettings

    settings = settings_for(mode, Path(work), device)
    embedder, copier, status = load_models(settings)
    if mode != "hash-only" and embedder is None and copier is None:
        raise SystemExit(f"{mode}: no model loaded: {status}")
    pipeline = Pipeline(DecodeSettings(threads=threads), embedder, copier)
    items = list(enumerate(files))
    pipeline.run(items[:batch])  # warm-up: cuDNN autotuning, allocator, decode pool
    barrier.wait()
    start = time.perf_counter()
    done = errors = 0
    for i in range(0, len(items), batch):
        feats = pipeline.run(items[i:i + batch])
        done += len(feats)
        errors += sum(1 for f in feats if f.error or (copier is not None and f.copy_embedding is None)
                      or (embedder is not None and f.embedding is None))
    results.put((done, errors, time.perf_counter() - start, status))
    pipeline.close()


def _cpu_ticks() -> tuple[int, int]:
    """(busy, total) jiffies of the whole host since boot, from /proc/stat's first line."""
    fields = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = fields[3] + fields[4]  # idle + iowait
    return sum(fields) - idle, sum(fields)


def _sample_gpu(out: Path) -> subprocess.Popen | None:
    out.write_text("")
    if shutil.which("nvidia-smi") is None:
        return None
    return subprocess.Popen(["nvidia-smi", "--query-gpu=utilization.gpu,memory.used", "--format=csv,noheader,nounits",
                             "-lms", "250"], stdout=out.open("w"), stderr=subprocess.DEVNULL)


def run_mode(mode: str, work: Path, device: str, files: list[str], procs: int, batch: int, threads: int) -> dict:
    ctx = mp.get_context("spawn")  # CUDA and fork do not mix
    barrier, results = ctx.Barrier(procs + 1), ctx.Queue()
    shards = [files[i::procs] for i in range(procs)]
    workers = [ctx.Process(target=_worker, args=(mode, str(work), device, s, batch, threads, barrier, results))
               for s in shards]
    t0 = time.perf_counter()
    for w in workers:
        w.start()
    barrier.wait(timeout=600)
    ready = time.perf_counter() - t0
    log = work / "nvidia-smi.csv"
    sampler = _sample_gpu(log)
    start, ticks = time.perf_counter(), _cpu_ticks()
    got = [results.get(timeout=1800) for _ in workers]
    wall = time.perf_counter() - start
    busy = (_cpu_ticks()[0] - ticks[0]) / max(1, _cpu_ticks()[1] - ticks[1])
    if sampler is not None:
        sampler.terminate()
        sampler.wait()
    for w in workers:
        w.join()
    util = [float(line.split(",")[0]) for line in log.read_text().splitlines() if line.strip()]
    mem = [float(line.split(",")[1]) for line in log.read_text().splitlines() if line.strip()]
    done = sum(g[0] for g in got)
    return {"mode": mode, "files": done, "errors": sum(g[1] for g in got), "wall": wall, "rate": done / wall,
            "ready": ready, "cpu_busy": 100 * busy, "util_mean": float(np.mean(util)) if util else float("nan"),
            "util_p50": float(np.median(util)) if util else float("nan"),
            "mem_gib": max(mem) / 1024 if mem else float("nan"), "status": got[0][3]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=20000)
    parser.add_argument("--procs", type=int, default=8, help="worker processes sharing the GPU")
    parser.add_argument("--threads", type=int, default=2, help="decode threads per worker process")
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--work", type=Path, default=Path("/tmp/dupwatch-bench-gpu"))
    parser.add_argument("--modes", default="hash-only,ViT-B-32 fp16,sscd (torch fp16),sscd_distilled (torch fp16)")
    parser.add_argument("--device", default="cuda", help="cuda; cpu only to try the bench on a host without one")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()

    import torch

    from workers.models.sscd_export import export

    args.work.mkdir(parents=True, exist_ok=True)
    t = time.perf_counter()
    files = build_folder(args.work / "small", args.n)
    built = time.perf_counter() - t
    modes = [m.strip() for m in args.modes.split(",") if m.strip()]
    for mode in modes:
        if mode.startswith("sscd"):
            name = mode.split()[0]
            target = args.work / f"{name}-from-onnx.torchscript.pt"
            if not target.exists():
                export(name, target)
        elif mode != "hash-only":
            random_vit_checkpoint(args.work / f"{mode.split()[0]}-random.pt", mode.split()[0])
    card = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no CUDA device"
    sizes = [os.path.getsize(f) for f in files[:2000]]
    lines = [f"# bench/gpu.py, {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}",
             f"# card: {card}; host: {os.cpu_count()} CPU cores, {platform.python_version()}, torch {torch.__version__}",
             (f"# folder: {len(files)} JPEGs, median {np.median(sizes) / 1e3:.0f} kB (built in {built:.0f} s), "
              f"page cache warm; {args.procs} worker processes x {args.threads} decode threads, batch {args.batch}"),
             "", "| mode | images/s | files | errors | wall s | model load s | host CPU busy % | GPU util mean / p50 % | GPU mem GiB |",
             "|---|---|---|---|---|---|---|---|---|"]
    print("\n".join(lines), flush=True)
    for mode in modes:
        r = run_mode(mode, args.work, args.device, files, args.procs, args.batch, args.threads)
        row = (f"| {r['mode']} | {r['rate']:,.0f} | {r['files']} | {r['errors']} | {r['wall']:.1f} | {r['ready']:.1f} | {r['cpu_busy']:.0f} | "
               f"{r['util_mean']:.0f} / {r['util_p50']:.0f} | {r['mem_gib']:.1f} |")
        print(row, flush=True)
        lines.append(row)
        lines.append(f"<!-- {mode}: {r['status']} -->")
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
