"""The bad-input corpus through a live `dupwatch run`: each file gets a recorded error with its reason or a
correct verdict, and the service keeps working afterwards (invariant §3.3)."""

from __future__ import annotations

import os
import struct
import subprocess
import sys
import textwrap
import time
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tests.conftest import REPO_ROOT, Service, base_env, catalog_rows, wait_for
from workers.decode import DecodeError, decode_file

pytestmark = pytest.mark.timeout(180)


def png_bomb(path: Path, side: int = 30000) -> None:
    """A real decompression bomb: a valid greyscale PNG of side x side zeros (900 Mpx, under 1 MB),
    streamed row by row so the test never holds the pixels."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    comp = zlib.compressobj(9)
    row = b"\x00" * (side + 1)  # filter byte + pixels
    idat = b"".join(comp.compress(row * 500) for _ in range(side // 500)) + comp.flush()
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", side, side, 8, 0, 0, 0, 0))
                     + chunk(b"IDAT", idat) + chunk(b"IEND", b""))


def build_corpus(photos: dict[str, Path], out: Path) -> dict[str, tuple[str, str | None]]:
    """Write the corpus into `out`; return {file name: (expected verdict, error reason or match name)}."""
    out.mkdir()
    load = lambda name: Image.open(photos[name]).convert("RGB")
    expected: dict[str, tuple[str, str | None]] = {}

    data = photos["chelsea"].read_bytes()
    (out / "truncated.jpg").write_bytes(data[: len(data) // 2])
    expected["truncated.jpg"] = ("error", "truncated")
    (out / "zero.jpg").write_bytes(b"")
    expected["zero.jpg"] = ("error", "empty")
    (out / "text.jpg").write_text("this is not a picture\n" * 20)
    expected["text.jpg"] = ("error", "not-an-image")
    png_bomb(out / "bomb.png")
    expected["bomb.png"] = ("error", "too-large")
    load("camera").convert("CMYK").save(out / "cmyk.jpg", quality=90)
    expected["cmyk.jpg"] = ("new", None)
    moon = np.asarray(Image.open(photos["moon"]).convert("L"), dtype=np.uint16) * 257
    Image.fromarray(moon).save(out / "sixteen-bit.png")
    assert Image.open(out / "sixteen-bit.png").mode.startswith("I;16")
    expected["sixteen-bit.png"] = ("new", None)
    pal = load("coffee").quantize(64)
    pal.save(out / "palette-alpha.png", transparency=0)
    expected["palette-alpha.png"] = ("new", None)
    frames = [load("grass"), load("brick").resize(load("grass").size)]
    frames[0].save(out / "animated.gif", save_all=True, append_images=frames[1:], duration=100, loop=0)
    expected["animated.gif"] = ("exact-copy", "grass.png")  # its first frame is grass.png, pixel for pixel
    frames[0].save(out / "animated.webp", save_all=True, append_images=frames[1:], duration=100, quality=90)
    expected["animated.webp"] = ("edited-copy", "grass.png")
    rotated = load("astronaut").transpose(Image.Transpose.ROTATE_90)  # stored sideways ...
    exif = Image.Exif()
    exif[0x0112] = 6  # ... with "rotate 90 CW to display": upright on screen
    rotated.save(out / "exif-rotated.jpg", quality=95, exif=exif)
    expected["exif-rotated.jpg"] = ("edited-copy", "astronaut.png")
    load("rocket").save(out / "rocket.heic", quality=90)
    expected["rocket.heic"] = ("new", None)
    load("coins").save(out / "coins.avif", quality=80)
    expected["coins.avif"] = ("new", None)
    load("retina").save(out / "фото été 01 (copy).png")
    expected["фото été 01 (copy).png"] = ("new", None)
    (out / "folder.jpg").mkdir()  # a directory named like an image: no verdict at all
    os.mkfifo(out / "pipe.jpg")
    expected["pipe.jpg"] = ("error", "not-a-file")
    unreadable = out / "locked.png"
    load("immunohistochemistry").save(unreadable)
    unreadable.chmod(0)
    expected["locked.png"] = ("new", None)  # the service runs as root here, which may read it
    return expected


@pytest.mark.system
def test_bad_input_corpus_through_the_live_service(tmp_path: Path, photos: dict[str, Path]) -> None:
    root, state = tmp_path / "in", tmp_path / "state"
    root.mkdir()
    svc = Service(["run", "--hash-only", "--workers", "1", str(root)],
                  base_env(state, DUPWATCH_QUEUE__PENDING_RETRY_S="5"), tmp_path / "run.log")
    try:
        wait_for(lambda: "catch-up scan" in svc.stderr(), 60, what="service start")
        # the originals the copies must match land first: a verdict only points to an earlier file
        for name in ("grass", "astronaut"):
            Image.open(photos[name]).convert("RGB").save(root / f"{name}.png")
        wait_for(lambda: sum(r["state"] == "decided" for r in catalog_rows(state)) == 2, 30, what="originals")
        corpus = tmp_path / "corpus"
        expected = build_corpus(photos, corpus)
        for entry in sorted(corpus.iterdir()):
            os.rename(entry, root / entry.name)  # moved in: created events only, the settle check lands them
        n = 2 + len(expected)
        wait_for(lambda: sum(r["state"] == "decided" for r in catalog_rows(state)) >= n, 60, what="corpus verdicts")
        time.sleep(1.0)
        rows = {Path(r["path"]).name: r for r in catalog_rows(state)}
        by_id = {r["id"]: Path(r["path"]).name for r in rows.values()}
        assert set(rows) == set(expected) | {"grass.png", "astronaut.png"}, "folder.jpg must get no row"
        for name, (verdict, detail) in expected.items():
            row = rows[name]
            assert row["verdict"] == verdict, (name, row)
            if verdict == "error":
                assert row["error"].startswith(f"{detail}:"), (name, row["error"])
            elif detail is not None:
                assert by_id[row["match_id"]] == detail, (name, row)
        assert svc.proc.poll() is None
        Image.open(photos["hubble_deep_field"]).convert("RGB").save(root / "after.png")  # still alive
        wait_for(lambda: any(Path(r["path"]).name == "after.png" and r["verdict"] == "new"
                             for r in catalog_rows(state)), 30, what="a verdict after the corpus")
    finally:
        svc.stop()


UNREADABLE_CHILD = textwrap.dedent("""
    import os, sys
    from workers.decode import DecodeError, decode_file
    os.setgid(65534)
    os.setuid(65534)  # nobody: file permissions apply again
    try:
        decode_file(sys.argv[1], size=64, max_pixels=10**8, max_bytes=10**9)
    except DecodeError as exc:
        print("REASON", exc.reason)
""")


def test_unreadable_file_is_a_recorded_reason(tmp_path: Path, photos: dict[str, Path]) -> None:
    """chmod 000 stops any user but root; the suite runs as root, so the read happens as `nobody`."""
    if os.geteuid() != 0:
        pytest.skip("needs root to drop to nobody")
    tmp_path.chmod(0o755)
    path = tmp_path / "locked.jpg"
    path.write_bytes(photos["coins"].read_bytes())
    path.chmod(0)
    proc = subprocess.run([sys.executable, "-c", UNREADABLE_CHILD, str(path)], capture_output=True, text=True,
                          timeout=60, cwd=REPO_ROOT, env={**os.environ, "PYTHONPATH": str(REPO_ROOT)}, check=False)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "REASON unreadable"


def test_file_deleted_before_the_worker_reads_it(tmp_path: Path) -> None:
    with pytest.raises(DecodeError) as err:
        decode_file(str(tmp_path / "gone.jpg"), size=64, max_pixels=10**8, max_bytes=10**9)
    assert err.value.reason == "vanished"
