"""`dupwatch scan`: the one-shot contract (docs/api.md) on real photos and their edited copies."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from tests import imaging
from tests.conftest import base_env, catalog_rows, dupwatch_cmd
from workers.align import identity_edit


def scan(state: Path, paths: list[Path], env: dict[str, str], *extra: str) -> list[dict]:
    listing = state.parent / f"{state.name}-files.txt"
    listing.write_text("".join(f"{p}\n" for p in paths))
    proc = subprocess.run(dupwatch_cmd() + ["scan", "--files-from", str(listing), *extra], env=base_env(state, **env),
                          capture_output=True, text=True, timeout=300, check=False)
    assert proc.returncode == 0, proc.stderr
    return [json.loads(line) for line in proc.stdout.splitlines()]


@pytest.fixture
def edited_set(photos: dict[str, Path], tmp_path: Path) -> dict[str, Path]:
    """An original photo, its edited copies, an unrelated photo and a broken file."""
    src = tmp_path / "in"
    src.mkdir()
    original = src / "a.jpg"
    original.write_bytes(photos["astronaut"].read_bytes())
    files = {"original": original}
    files["exact"] = src / "exact copy.jpg"
    files["exact"].write_bytes(original.read_bytes())
    files["reencode"] = imaging.reencode(original, src / "reencoded.jpg", quality=30)
    files["resize"] = imaging.resize(original, src / "small.jpg", 0.5)
    files["crop"] = imaging.crop(original, src / "crop20.jpg", keep_area=0.8)
    files["caption"] = imaging.caption(original, src / "meme.jpg")
    files["mirror"] = imaging.mirror(original, src / "mirror.jpg")
    files["rotate"] = imaging.rotate90(original, src / "rot90.jpg")
    files["unrelated"] = src / "cat.jpg"
    files["unrelated"].write_bytes(photos["chelsea"].read_bytes())
    files["broken"] = src / "broken.jpg"
    files["broken"].write_bytes(original.read_bytes()[:3000])
    return files


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["hash-only", "model"])
def test_scan_flags_edited_copies_of_a_real_photo(edited_set, tmp_path, model_env, mode):
    env = {"DUPWATCH_HASH_ONLY": "true"} if mode == "hash-only" else model_env
    records = scan(tmp_path / "state", list(edited_set.values()), env)
    by_role = dict(zip(edited_set, records, strict=True))
    assert [r["path"] for r in records] == [str(p) for p in edited_set.values()]  # one per file, input order
    assert by_role["original"]["verdict"] == "new"
    assert by_role["exact"] == {"path": str(edited_set["exact"]), "verdict": "exact-copy",
                                "match": str(edited_set["original"]), "score": 100.0, "hash_distance": 0,
                                "reason": None, "edit": identity_edit()}
    for role in ("reencode", "resize", "crop", "caption", "mirror", "rotate"):
        record = by_role[role]
        assert record["verdict"] == "edited-copy", (role, record)
        assert record["match"] == str(edited_set["original"]), (role, record)
        assert 80 <= record["score"] <= 100, (role, record)
        assert record["edit"] is not None and record["edit"]["summary"], (role, record)  # explained, however decided
    assert by_role["mirror"]["edit"]["flip"] == "horizontal"
    assert by_role["crop"]["edit"]["crop"] is not None
    assert by_role["unrelated"]["verdict"] == "new"
    assert by_role["unrelated"]["match"] is None
    assert by_role["broken"]["verdict"] == "error"
    assert by_role["broken"]["reason"].startswith("truncated")


def test_scan_again_keeps_verdicts_and_adds_no_rows(edited_set, tmp_path):
    env = {"DUPWATCH_HASH_ONLY": "true"}
    state = tmp_path / "state"
    first = scan(state, list(edited_set.values()), env)
    rows_before = catalog_rows(state)
    second = scan(state, list(edited_set.values()), env)
    assert second == first
    assert catalog_rows(state) == rows_before


def test_scan_a_folder_walks_it_in_order(edited_set, tmp_path):
    """A folder's files by name, then its subfolders by name (depth first), whatever order the disk lists."""
    folder = edited_set["original"].parent
    (folder / "0-sub").mkdir()
    nested = folder / "0-sub" / "z.jpg"
    nested.write_bytes(edited_set["unrelated"].read_bytes())
    listing_free = subprocess.run(dupwatch_cmd() + ["scan", str(folder)], capture_output=True, text=True,
                                  env=base_env(tmp_path / "state", DUPWATCH_HASH_ONLY="true"), timeout=300, check=False)
    assert listing_free.returncode == 0, listing_free.stderr
    records = [json.loads(line) for line in listing_free.stdout.splitlines()]
    assert [Path(r["path"]).relative_to(folder).as_posix() for r in records] == [
        "a.jpg", "broken.jpg", "cat.jpg", "crop20.jpg", "exact copy.jpg", "meme.jpg", "mirror.jpg",
        "reencoded.jpg", "rot90.jpg", "small.jpg", "0-sub/z.jpg"]
    assert "scan: 6 edited-copy, 1 error, 2 exact-copy, 2 new" in listing_free.stderr  # stderr, never stdout


def test_scan_of_an_empty_folder_says_nothing_was_scanned(tmp_path):
    (tmp_path / "empty").mkdir()
    proc = subprocess.run(dupwatch_cmd() + ["scan", str(tmp_path / "empty")], capture_output=True, text=True,
                          env=base_env(tmp_path / "state", DUPWATCH_HASH_ONLY="true"), timeout=300, check=False)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == ""
    assert "scan: nothing" in proc.stderr


def test_a_second_owner_of_the_state_dir_is_refused(tmp_path, edited_set):
    from daemon.state import StateDir

    holder = StateDir(tmp_path / "state")
    holder.acquire()
    try:
        listing = tmp_path / "files.txt"
        listing.write_text(f"{edited_set['original']}\n")
        proc = subprocess.run(dupwatch_cmd() + ["scan", "--files-from", str(listing)], capture_output=True,
                              text=True, env=base_env(tmp_path / "state", DUPWATCH_HASH_ONLY="true"), timeout=120,
                              check=False)
        assert proc.returncode != 0
        assert "owned by" in proc.stderr
    finally:
        holder.release()


def test_a_small_scan_never_loads_the_hash_kernels_and_the_daemon_warms_them(edited_set, tmp_path):
    """A scan of fewer than TAIL_ROWS files searches hashes exhaustively (the same answers: tests/test_hashindex.py)
    and never imports numba, about 120 MiB and a second of CPU; the daemon's owner loads the kernels at start,
    so its first segment never stalls a verdict. The scan still finds the copies."""
    import sys

    listing = tmp_path / "files.txt"
    listing.write_text("".join(f"{edited_set[k]}\n" for k in ("original", "reencode", "mirror", "unrelated")))
    code = ("import io, sys; from daemon.config import Settings; from daemon.cli.scan import run_scan; "
            "from daemon.index.catalog import Catalog; from daemon.index.owner import IndexOwner; out = io.StringIO(); "
            f"s = Settings(state_dir={str(tmp_path / 'state')!r}, hash_only=True); "
            f"run_scan(s, open({str(listing)!r}).read().split(), out=out); print(out.getvalue()); "
            "print('numba' in sys.modules); "
            f"IndexOwner(Settings(state_dir={str(tmp_path / 'd')!r}, hash_only=True), "
            f"Catalog({str(tmp_path / 'd.db')!r}), warm_kernels=True); print('numba' in sys.modules)")
    proc = subprocess.run([sys.executable, "-c", code], env=base_env(tmp_path / "state"), capture_output=True,
                          text=True, timeout=300, check=False)
    assert proc.returncode == 0, proc.stderr
    *records, scanned, warmed = proc.stdout.split("\n")[:-1]
    verdicts = [json.loads(line)["verdict"] for line in records if line]
    assert verdicts == ["new", "edited-copy", "edited-copy", "new"], verdicts
    assert (scanned, warmed) == ("False", "True")


def test_a_scan_decodes_the_next_batch_while_it_decides_one(edited_set, tmp_path, monkeypatch):
    """Decoding (and the models) of batch k+1 runs in the background while batch k is decided, so the cores do
    not take turns; the verdicts and their order are those of one batch at a time (a path listed again waits
    for its earlier listing's verdict)."""
    import io
    import threading

    from daemon.cli.scan import run_scan
    from daemon.config import Settings
    from daemon.index.owner import IndexOwner
    from workers.pipeline import Pipeline

    started = [threading.Event() for _ in range(3)]
    decoded_by: set[str] = set()
    overlapped: list[bool] = []
    run, decide = Pipeline.run, IndexOwner.decide_ready

    def logged_run(self, items):
        started[sum(e.is_set() for e in started)].set()
        decoded_by.add(threading.current_thread().name)
        return run(self, items)

    def waiting_decide(self, limit=1000):
        k = len(overlapped)
        if k + 1 < len(started):  # a sequential scan would decode batch k+1 only after this returns
            overlapped.append(started[k + 1].wait(timeout=20))
        return decide(self, limit)

    monkeypatch.setattr(Pipeline, "run", logged_run)
    monkeypatch.setattr(IndexOwner, "decide_ready", waiting_decide)
    order = ["original", "reencode", "unrelated", "mirror", "crop", "original"]
    out = io.StringIO()
    settings = Settings(state_dir=tmp_path / "state", hash_only=True, model={"batch_size": 2})
    run_scan(settings, [str(edited_set[k]) for k in order], out=out)
    records = [json.loads(line) for line in out.getvalue().splitlines()]
    assert [r["path"] for r in records] == [str(edited_set[k]) for k in order]
    assert [r["verdict"] for r in records] == ["new", "edited-copy", "new", "edited-copy", "edited-copy", "new"]
    assert records[-1] == records[0]  # listed again: reported as it stands
    assert overlapped == [True, True] and decoded_by == {"scan-ahead_0"}


def test_every_command_runs_numpy_blas_on_one_thread(tmp_path):
    """dupwatch parallelises with its own threads (decode, the verification pool); OpenBLAS's threads only spin
    beside them, at 2-3x the CPU of an alignment's colour fit. `main` limits them before any command runs, even
    where the environment asks numpy for more."""
    import sys

    code = ("import daemon.cli.main as c; from threadpoolctl import threadpool_info; "
            "c.cli = lambda: print(sorted({i['num_threads'] for i in threadpool_info() if i['user_api'] == 'blas'})); "
            "c.main()")
    env = base_env(tmp_path / "state", OPENBLAS_NUM_THREADS="2")
    proc = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120,
                          check=False)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "[1]"


@pytest.mark.skipif(not Path("/proc/self/maps").exists(), reason="glibc on Linux")
def test_every_command_shares_two_malloc_arenas_among_its_threads(tmp_path):
    """Every allocating thread would get a glibc arena of its own, holding its freed image buffers (peak RSS);
    `main` caps them at MALLOC_ARENAS before any command runs. malloc_stats lists each arena in use."""
    import sys

    code = ("import ctypes, threading, daemon.cli.main as c\n"
            "together = threading.Barrier(8)\n"
            "def busy():\n"
            "    held = [bytearray(1 << 16) for _ in range(20)]\n"
            "    together.wait()  # all 8 alive at once: none inherits an arena another has left\n"
            "def command():\n"
            "    threads = [threading.Thread(target=busy) for _ in range(8)]\n"
            "    [t.start() for t in threads]; [t.join() for t in threads]\n"
            "    ctypes.CDLL(None).malloc_stats()\n"
            "c.cli = command\n"
            "c.main()\n")
    proc = subprocess.run([sys.executable, "-c", code], env=base_env(tmp_path / "state"), capture_output=True,
                          text=True, timeout=120, check=False)
    assert proc.returncode == 0, proc.stderr
    arenas = [line for line in proc.stderr.splitlines() if line.startswith("Arena ")]
    assert 1 <= len(arenas) <= 2, proc.stderr
