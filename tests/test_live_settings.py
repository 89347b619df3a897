"""Settings that change what a running service does: `match.keep_deleted`, and a SIGHUP that swaps the webhook
endpoints and the API token. Real `dupwatch run` processes, real files, real HTTP receivers."""

from __future__ import annotations

import signal
import sqlite3
from pathlib import Path

import httpx
import pytest

from tests import imaging
from tests.conftest import Receiver, Service, base_env, catalog_rows, copy_into, free_port, wait_for

pytestmark = pytest.mark.system


def decided(state: Path, path: Path) -> dict:
    """The catalog row of `path` once it has its verdict."""
    return wait_for(lambda: next((r for r in catalog_rows(state) if r["path"] == str(path) and r["state"] == "decided"),
                                 None), 60, what=f"a verdict for {path.name}")


def path_of(state: Path, file_id: int | None) -> str | None:
    return next((r["path"] for r in catalog_rows(state) if r["id"] == file_id), None)


@pytest.mark.parametrize("keep", [False, True])
def test_keep_deleted_decides_whether_a_deleted_file_still_matches(tmp_path: Path, services: list, photos,
                                                                   keep: bool) -> None:
    root, state = tmp_path / "in", tmp_path / "state"
    root.mkdir()
    svc = Service(["run", "--hash-only", str(root)], base_env(state, DUPWATCH_MATCH__KEEP_DELETED=str(keep).lower()),
                  tmp_path / "run.log")
    services.append(svc)
    wait_for(lambda: "ready: model" in svc.stderr(), 120, what="a worker")
    original = copy_into(photos["astronaut"], root / "a.jpg")
    decided(state, original)
    original.unlink()

    def deleted() -> bool:
        conn = sqlite3.connect(f"file:{state / 'catalog.sqlite3'}?mode=ro", uri=True)
        try:
            return conn.execute("SELECT deleted_at FROM files WHERE path = ?", (str(original),)).fetchone()[0] is not None
        finally:
            conn.close()

    wait_for(deleted, 30, what="the deletion to reach the catalog")
    cropped = imaging.crop(photos["astronaut"], tmp_path / "crop.jpg")
    copy = decided(state, copy_into(photos["astronaut"], root / "b-copy.jpg"))
    crop = decided(state, copy_into(cropped, root / "c-crop.jpg"))
    if keep:  # the deleted original is still the earliest of them all
        assert (copy["verdict"], path_of(state, copy["match_id"])) == ("exact-copy", str(original))
        assert (crop["verdict"], path_of(state, crop["match_id"])) == ("edited-copy", str(original))
    else:  # the original is gone from every index: the copy is new, and the crop matches the copy
        assert (copy["verdict"], copy["match_id"]) == ("new", None)
        assert (crop["verdict"], path_of(state, crop["match_id"])) == ("edited-copy", str(root / "b-copy.jpg"))
    assert svc.stop(signal.SIGTERM) == 0


def config_text(token: str, hook: str) -> str:
    return (f'[api]\ntoken = "{token}"\n\n[[webhooks]]\nurl = "{hook}"\n'
            'kinds = ["new", "exact-copy", "edited-copy", "similar", "error"]\n')


def test_sighup_swaps_webhook_endpoints_and_the_api_token(tmp_path: Path, services: list, photos) -> None:
    root, state, config = tmp_path / "in", tmp_path / "state", tmp_path / "dupwatch.toml"
    root.mkdir()
    before, after = Receiver(), Receiver()
    try:
        config.write_text(config_text("token-before", before.url))
        port = free_port()
        svc = Service(["run", "--hash-only", "--config", str(config), str(root)],
                      base_env(state, DUPWATCH_API__ENABLED="true", DUPWATCH_API__PORT=str(port)), tmp_path / "run.log")
        services.append(svc)
        wait_for(lambda: "ready: model" in svc.stderr() and "API and review page" in svc.stderr(), 120,
                 what="a worker and the API")
        api = f"http://127.0.0.1:{port}/api/v1/matches"

        def status(token: str) -> int:
            return httpx.get(api, headers={"Authorization": f"Bearer {token}"}, timeout=30).status_code

        first = copy_into(photos["astronaut"], root / "a.jpg")
        wait_for(lambda: [e["file"]["path"] for e in before.events()] == [str(first)], 30, what="the first delivery")
        assert (status("token-before"), status("token-after")) == (200, 401)

        config.write_text(config_text("token-after", after.url))
        svc.proc.send_signal(signal.SIGHUP)
        wait_for(lambda: "configuration reloaded" in svc.stderr(), 30, what="the reload")
        assert (status("token-before"), status("token-after")) == (401, 200)
        second = copy_into(photos["coffee"], root / "b.jpg")
        wait_for(lambda: [e["file"]["path"] for e in after.events()] == [str(second)], 30,
                 what="the delivery to the new endpoint")
        assert [e["file"]["path"] for e in before.events()] == [str(first)]  # the old endpoint got nothing more
        assert svc.proc.poll() is None  # reloaded, not restarted
        assert svc.stop(signal.SIGTERM) == 0
    finally:
        before.close()
        after.close()
