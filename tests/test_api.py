"""The HTTP API, against `dupwatch run` as a user starts it: real processes, private Redis, real files.

One hash-only service with a token set serves most tests (module scope: starting one costs seconds);
the model cases each start their own.
"""

from __future__ import annotations

import io
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import httpx
import imaging
import pytest
from conftest import Service, base_env, catalog_rows, copy_into, free_port, wait_for
from PIL import Image
from prometheus_client.parser import text_string_to_metric_families

TOKEN = "test-token-7f3a"
UPLOAD_LIMIT = 1_000_000


@dataclass
class Running:
    service: Service
    url: str
    root: Path
    state: Path
    token: str | None

    def client(self, token: str | None = "<own>") -> httpx.Client:
        token = self.token if token == "<own>" else token
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        return httpx.Client(base_url=self.url, headers=headers, timeout=60)

    def rows(self) -> list[dict]:
        return catalog_rows(self.state)

    def id_of(self, path: Path) -> int:
        return next(r["id"] for r in self.rows() if r["path"] == str(path))

    def land(self, src: Path, name: str) -> Path:
        """Copy a file in and wait for its verdict, so ids follow the order of the test's drops."""
        dest = copy_into(src, self.root / name)
        wait_for(lambda: any(r["path"] == str(dest) and r["state"] == "decided" for r in self.rows()), 60,
                 what=f"a verdict for {name}")
        return dest


def start_api(tmp: Path, args: list[str], token: str | None = None, **env: str) -> Running:
    """`dupwatch run` with the API on a free port; returns once /healthz answers and a worker is ready."""
    root, state = tmp / "in", tmp / "state"
    root.mkdir(parents=True)
    port = free_port()
    extra = {"DUPWATCH_API__ENABLED": "true", "DUPWATCH_API__PORT": str(port), **env}
    if token:
        extra["DUPWATCH_API__TOKEN"] = token
    service = Service(["run", *args, str(root)], base_env(state, **extra), tmp / "daemon.log")
    running = Running(service, f"http://127.0.0.1:{port}", root, state, token)

    def up() -> bool:
        assert service.proc.poll() is None, service.stderr()
        try:
            with running.client() as c:
                return c.get("/healthz").status_code == 200 and "ready: model" in service.stderr()
        except httpx.TransportError:
            return False

    wait_for(up, 120, interval=0.2, what="the API and a worker")
    return running


@pytest.fixture(scope="module")
def api(tmp_path_factory, photos) -> Iterator[Running]:
    tmp = tmp_path_factory.mktemp("api")
    running = start_api(tmp, ["--hash-only"], token=TOKEN, DUPWATCH_API__MAX_UPLOAD_BYTES=str(UPLOAD_LIMIT))
    edits = tmp / "edits"
    edits.mkdir()
    running.land(photos["astronaut"], "astronaut.jpg")
    running.land(photos["astronaut"], "astronaut-copy.jpg")
    running.land(imaging.crop(photos["astronaut"], edits / "crop.jpg"), "astronaut-crop.jpg")
    running.land(photos["coffee"], "coffee.jpg")
    running.land(photos["rocket"], "rocket.jpg")
    yield running
    assert running.service.stop() == 0, running.service.stderr()


def test_healthz_and_the_page_shell_need_no_token(api: Running) -> None:
    with api.client(token=None) as c:
        health = c.get("/healthz")
        page = c.get("/")
    assert health.status_code == 200 and health.json()["status"] == "ok"
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert "dupwatch review" in page.text


@pytest.mark.parametrize("method,path", [
    ("GET", "/readyz"), ("GET", "/metrics"), ("GET", "/api/v1/files/1"), ("GET", "/api/v1/files/1/thumbnail"),
    ("GET", "/api/v1/matches"), ("POST", "/api/v1/search"), ("POST", "/api/v1/not-duplicates"),
])
def test_every_other_route_needs_the_token(api: Running, method: str, path: str) -> None:
    for token in (None, "wrong-token"):
        with api.client(token=token) as c:
            r = c.request(method, path)
        assert r.status_code == 401, (token, r.text)
        assert r.headers["www-authenticate"] == "Bearer"


def test_foreign_host_header_is_refused(api: Running) -> None:
    """A page on evil.example that DNS-rebinds to 127.0.0.1 must not read the catalog."""
    with api.client() as c:
        r = c.get("/api/v1/matches", headers={"Host": "evil.example"})
    assert r.status_code == 400


def test_readyz_hash_only_by_choice(api: Running) -> None:
    with api.client() as c:
        r = c.get("/readyz")
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["ready"] is True
    assert set(body["checks"]) == {"redis", "copy_model", "model", "index"}  # degraded states fail "index"
    assert "hash-only copies by choice" in body["checks"]["copy_model"]["detail"]
    assert "no 'similar' verdicts by choice" in body["checks"]["model"]["detail"]
    assert "5 hashed" in body["checks"]["index"]["detail"]


def test_metrics_parse_with_prometheus_parser(api: Running) -> None:
    with api.client() as c:
        r = c.get("/metrics")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/plain")
    families = {f.name: f for f in text_string_to_metric_families(r.text)}

    def value(family: str, sample: str | None = None, **labels: str) -> float:
        return next(s.value for s in families[family].samples
                    if (sample is None or s.name == sample) and all(s.labels.get(k) == v for k, v in labels.items()))

    assert value("dupwatch_files_seen") == 5
    assert value("dupwatch_verdicts", kind="new") == 3
    assert value("dupwatch_verdicts", kind="exact-copy") == 1
    assert value("dupwatch_verdicts", kind="edited-copy") == 1
    assert value("dupwatch_verdicts", kind="error") == 0
    assert value("dupwatch_files_pending") == 0
    assert families["dupwatch_verdict_latency_seconds"].type == "histogram"
    assert value("dupwatch_verdict_latency_seconds", "dupwatch_verdict_latency_seconds_count") == 5
    assert value("dupwatch_queue_depth", queue="dupwatch-ingest") == 0
    assert value("dupwatch_workers") == 1
    assert value("dupwatch_model_state", state="hash-only") == 1
    assert value("dupwatch_index_entries", index="hash") == 5
    assert value("dupwatch_redis_up") == 1
    for name in ("dupwatch_webhook_sent", "dupwatch_webhook_failed_attempts", "dupwatch_webhook_retried",
                 "dupwatch_webhook_dead"):
        assert families[name].type == "counter"
    assert families["dupwatch_webhook_delivery_lag_seconds"].type == "histogram"
    assert "dupwatch_errors" in families


def test_file_by_id(api: Running) -> None:
    crop, original = api.id_of(api.root / "astronaut-crop.jpg"), api.id_of(api.root / "astronaut.jpg")
    with api.client() as c:
        r = c.get(f"/api/v1/files/{crop}")
        assert r.status_code == 200
        body = r.json()
        hash_signals = ("phash", "phash-crop", "phash-pad", "dhash", "phash+dhash")  # + a confirming "+geometry"
        assert body["verdict"] == "edited-copy" and body["signal"].removesuffix("+geometry") in hash_signals
        assert body["match"]["id"] == original and body["match"]["path"] == str(api.root / "astronaut.jpg")
        assert body["width"] and body["sha256"] and body["thumbnail"] == f"/api/v1/files/{crop}/thumbnail"
        assert "embedding" not in body and "windows" not in body
        for missing in ("/api/v1/files/999999", "/api/v1/files/abc", "/api/v1/files/%2Fetc%2Fpasswd",
                        "/api/v1/files/..%2F..%2Fetc%2Fpasswd/thumbnail"):
            assert c.get(missing).status_code == 404, missing


def test_an_id_past_sqlites_range_is_404_not_500(api: Running) -> None:
    """Starlette's int path convertor takes any digits; SQLite holds ids up to 2**63 - 1."""
    crop = api.id_of(api.root / "astronaut-crop.jpg")
    huge = 99999999999999999999
    with api.client() as c:
        for path in (f"/api/v1/files/{huge}", f"/api/v1/files/{huge}/thumbnail", f"/api/v1/files/{2 ** 63}"):
            r = c.get(path)
            assert r.status_code == 404, (path, r.status_code, r.text)
        r = c.post("/api/v1/not-duplicates", json={"file": crop, "match": huge})
        assert r.status_code == 404, r.text
        assert c.get("/healthz").status_code == 200


def test_matches_by_kind_and_since(api: Running) -> None:
    before = datetime.fromtimestamp(time.time() - 3600, tz=UTC).isoformat()
    with api.client() as c:
        every = c.get("/api/v1/matches", params={"include_dismissed": "true"}).json()["matches"]
        exact = c.get("/api/v1/matches", params={"kind": "exact-copy"}).json()["matches"]
        recent = c.get("/api/v1/matches", params={"since": before, "include_dismissed": "true"}).json()["matches"]
        future = c.get("/api/v1/matches", params={"since": time.time() + 60}).json()["matches"]
        bad = c.get("/api/v1/matches", params={"kind": "duplicate"})
    assert [m["kind"] for m in every] == ["edited-copy", "exact-copy"]  # newest first
    assert [m["file"]["path"] for m in exact] == [str(api.root / "astronaut-copy.jpg")]
    assert exact[0]["match"]["path"] == str(api.root / "astronaut.jpg") and exact[0]["score"] == 100
    assert len(recent) == 2 and future == []
    assert bad.status_code == 422


def test_thumbnails_only_for_current_catalogued_files(api: Running) -> None:
    original = api.id_of(api.root / "astronaut.jpg")
    with api.client() as c:
        r = c.get(f"/api/v1/files/{original}/thumbnail")
        assert r.status_code == 200 and r.headers["content-type"] == "image/jpeg"
        assert max(Image.open(io.BytesIO(r.content)).size) == 256
        small = c.get(f"/api/v1/files/{original}/thumbnail", params={"size": 64})
        assert max(Image.open(io.BytesIO(small.content)).size) == 64
        assert c.get("/api/v1/files/999999/thumbnail").status_code == 404


@pytest.mark.slow
def test_no_thumbnail_for_a_deleted_file(tmp_path: Path, services: list, photos) -> None:
    """Its own service: deleting a file from the shared one would change the counts other tests read."""
    running = start_api(tmp_path, ["--hash-only"])
    services.append(running.service)
    rocket = running.land(photos["rocket"], "rocket.jpg")
    rocket_id = running.id_of(rocket)
    with running.client() as c:
        assert c.get(f"/api/v1/files/{rocket_id}/thumbnail").status_code == 200
        os.remove(rocket)
        wait_for(lambda: c.get(f"/api/v1/files/{rocket_id}").json()["deleted_at"] is not None, 30,
                 what="the deletion to reach the catalog")
        gone = c.get(f"/api/v1/files/{rocket_id}/thumbnail")
    assert gone.status_code == 404 and "deleted" in gone.json()["detail"]
    assert running.service.stop() == 0


def test_search_by_upload(api: Running, photos) -> None:
    crop, original = api.id_of(api.root / "astronaut-crop.jpg"), api.id_of(api.root / "astronaut.jpg")
    with api.client() as c:
        multipart = c.post("/api/v1/search", params={"top_k": 3},
                           files={"file": ("x.jpg", (api.root / "astronaut-crop.jpg").read_bytes(), "image/jpeg")})
        raw = c.post("/api/v1/search", content=photos["astronaut"].read_bytes(),
                     headers={"Content-Type": "image/jpeg"})
        junk = c.post("/api/v1/search", content=b"not an image at all", headers={"Content-Type": "image/jpeg"})
    assert multipart.status_code == 200, multipart.text
    top = {r["id"]: r for r in multipart.json()["results"]}
    assert len(top) <= 3 and original in top
    assert top[crop] == {"id": crop, "score": 100.0, "signal": "sha256", "hash_distance": 0, "kind": "exact-copy",
                         "path": str(api.root / "astronaut-crop.jpg"),
                         "thumbnail": f"/api/v1/files/{crop}/thumbnail"}
    assert raw.status_code == 200 and raw.json()["results"][0]["id"] == original
    assert raw.json()["signals"] == "hashes only"
    assert junk.status_code == 422 and "not-an-image" in junk.json()["detail"]


def test_oversized_upload_is_refused_with_413(api: Running) -> None:
    big = os.urandom(UPLOAD_LIMIT + 1)

    def chunks() -> Iterator[bytes]:  # no Content-Length: the server must count as it reads
        for start in range(0, len(big), 65536):
            yield big[start:start + 65536]

    with api.client() as c:
        declared = c.post("/api/v1/search", content=big, headers={"Content-Type": "image/jpeg"})
        streamed = c.post("/api/v1/search", content=chunks(), headers={"Content-Type": "image/jpeg"})
        multipart = c.post("/api/v1/search", files={"file": ("big.jpg", big, "image/jpeg")})
    for r in (declared, streamed, multipart):
        assert r.status_code == 413, r.text


def test_mark_not_a_duplicate(api: Running) -> None:
    crop, original = api.id_of(api.root / "astronaut-crop.jpg"), api.id_of(api.root / "astronaut.jpg")
    with api.client() as c:
        assert c.post("/api/v1/not-duplicates", json={"file": crop, "match": 999999}).status_code == 404
        assert c.post("/api/v1/not-duplicates", json={"file": crop, "match": crop}).status_code == 422
        # A cross-site form can post text/plain without a preflight: it must not count as JSON.
        forged = c.post("/api/v1/not-duplicates", content=f'{{"file": {crop}, "match": {original}}}',
                        headers={"Content-Type": "text/plain"})
        assert forged.status_code == 422
        marked = c.post("/api/v1/not-duplicates", json={"file": crop, "match": original})
        assert marked.status_code == 200, marked.text
        assert c.post("/api/v1/not-duplicates", json={"file": crop, "match": original}).status_code == 200

        shown = c.get("/api/v1/matches").json()["matches"]
        every = c.get("/api/v1/matches", params={"include_dismissed": "true"}).json()["matches"]
        detail = c.get(f"/api/v1/files/{crop}").json()
    assert [m["id"] for m in shown] == [api.id_of(api.root / "astronaut-copy.jpg")]
    assert {m["id"]: m["not_duplicate"] for m in every}[crop] is True
    assert detail["not_duplicate_of"] == [original]
    assert detail["verdict"] == "edited-copy"  # a verdict never changes; the pair is only no longer flagged


@pytest.mark.slow
def test_readyz_names_the_fix_when_the_model_is_unavailable(tmp_path: Path, services: list) -> None:
    missing = tmp_path / "no-such-checkpoint.pt"
    running = start_api(tmp_path, [], DUPWATCH_MODEL__NAME="ViT-S-32", DUPWATCH_MODEL__PRETRAINED=str(missing))
    services.append(running.service)
    with running.client() as c:  # no token configured: every route is open
        r = c.get("/readyz")
        metrics = c.get("/metrics").text
    assert r.status_code == 200  # copies are still found (SSCD): ready, but it says what is missing
    model = r.json()["checks"]["model"]
    assert "NO 'similar' VERDICTS" in model["detail"] and str(missing) in model["detail"]
    assert model["fix"] and model["fix"] in model["detail"]
    assert r.json()["checks"]["copy_model"]["ok"] is True
    assert 'dupwatch_model_state{state="unavailable"} 1.0' in metrics
    assert 'dupwatch_copy_model_state{state="loaded"} 1.0' in metrics
    assert running.service.stop() == 0


@pytest.mark.slow
def test_model_mode_search_uses_the_embedding(tmp_path: Path, services: list, model_env, photos) -> None:
    running = start_api(tmp_path, [], **model_env)
    services.append(running.service)
    running.land(photos["chelsea"], "cat.jpg")
    running.land(photos["rocket"], "rocket.jpg")
    edits = tmp_path / "edits"
    edits.mkdir()
    query = imaging.caption(photos["chelsea"], edits / "captioned.jpg")
    with running.client() as c:
        ready = c.get("/readyz")
        found = c.post("/api/v1/search", files={"file": ("q.jpg", query.read_bytes(), "image/jpeg")})
        metrics = {f.name: f for f in text_string_to_metric_families(c.get("/metrics").text)}
    assert ready.status_code == 200 and "loaded" in ready.json()["checks"]["model"]["detail"]
    assert found.status_code == 200, found.text
    assert found.json()["signals"] == "hashes and copy descriptor and embedding"
    results = found.json()["results"]
    assert {r["path"] for r in results} == {str(running.root / "cat.jpg"), str(running.root / "rocket.jpg")}
    assert results[0]["path"] == str(running.root / "cat.jpg")
    vectors = next(s.value for s in metrics["dupwatch_index_entries"].samples if s.labels["index"] == "vector")
    assert vectors == 2
    assert next(s.value for s in metrics["dupwatch_model_state"].samples if s.labels["state"] == "loaded") == 1
    assert running.service.stop() == 0
