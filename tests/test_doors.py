"""Doors: the API off loopback without a token, searches from other origins, secrets in logs and argv.

Real `dupwatch run` processes for the API, a real Deliverer with its threads for the webhook secrets.
"""

from __future__ import annotations

import logging
import subprocess
import threading
from pathlib import Path

import httpx
import pytest

from daemon.config import Settings, WebhookSettings
from daemon.index.catalog import Catalog
from daemon.notify import outbox
from daemon.notify.deliverer import Deliverer
from daemon.webhooks import generate_secret
from tests.conftest import Service, base_env, dupwatch_cmd, free_port, wait_for

pytestmark = [pytest.mark.system, pytest.mark.timeout(180)]


def test_api_off_loopback_without_a_token_refuses_to_start(tmp_path):
    """Item 9: not a warning but a refusal, naming the two ways out."""
    root = tmp_path / "in"
    root.mkdir()
    env = base_env(tmp_path / "state", DUPWATCH_API__ENABLED="true", DUPWATCH_API__HOST="0.0.0.0",
                   DUPWATCH_API__PORT=str(free_port()))
    run = subprocess.run([*dupwatch_cmd(), "run", "--hash-only", str(root)], env=env, capture_output=True,
                         text=True, timeout=120, check=False)
    assert run.returncode != 0
    assert "api.token" in run.stderr and "api.allow_no_token" in run.stderr, run.stderr
    assert "Traceback" not in run.stderr


def test_search_refuses_other_origins_and_bodies_that_are_not_images(tmp_path, services, photos):
    """Item 10: a page of another origin in the user's browser cannot post to /api/v1/search."""
    root = tmp_path / "in"
    root.mkdir()
    port = free_port()
    svc = Service(["run", "--hash-only", str(root)],
                  base_env(tmp_path / "state", DUPWATCH_API__ENABLED="true", DUPWATCH_API__PORT=str(port)),
                  tmp_path / "run.log")
    services.append(svc)
    api = f"http://127.0.0.1:{port}"

    def up() -> bool:
        assert svc.proc.poll() is None, svc.stderr()
        try:
            return httpx.get(f"{api}/healthz").status_code == 200
        except httpx.TransportError:
            return False

    wait_for(up, 120, interval=0.2, what="the API")
    image = photos["astronaut"].read_bytes()
    foreign = httpx.post(f"{api}/api/v1/search", files={"file": ("x.jpg", image, "image/jpeg")},
                         headers={"Origin": "https://evil.example"})
    assert foreign.status_code == 403, foreign.text
    opaque = httpx.post(f"{api}/api/v1/search", content=image, headers={"Origin": "null", "Content-Type": "image/jpeg"})
    assert opaque.status_code == 403
    for simple in ("text/plain", "application/x-www-form-urlencoded"):  # what a page posts without asking
        assert httpx.post(f"{api}/api/v1/search", content=image, headers={"Content-Type": simple}).status_code == 415
    own = httpx.post(f"{api}/api/v1/search", files={"file": ("x.jpg", image, "image/jpeg")},
                     headers={"Origin": api})
    assert own.status_code == 200, own.text
    raw = httpx.post(f"{api}/api/v1/search", content=image, headers={"Content-Type": "image/jpeg"})
    assert raw.status_code == 200, raw.text
    assert svc.stop() == 0


def test_secrets_and_webhook_urls_stay_out_of_logs_reprs_and_thread_names(tmp_path, caplog):
    """Item 11: the token and webhook secrets are SecretStr; a webhook URL's path (where chat services put
    their key) is never logged nor used as a thread name."""
    secret = generate_secret()
    token = "tok-" + "s3cr3t" * 4
    signed = WebhookSettings(url="https://hooks.example/services/T0/B0/KEYINPATH", secret=secret)
    unsigned = WebhookSettings(url="https://hooks.example/services/T1/B1/OTHERKEY")
    settings = Settings(state_dir=tmp_path, webhooks=[signed, unsigned], api={"token": token})
    assert secret not in repr(settings) and token not in repr(settings) and secret not in str(settings.webhooks)

    catalog = Catalog(tmp_path / "catalog.sqlite3")
    catalog.conn.executescript(outbox.SCHEMA)
    with caplog.at_level(logging.INFO):
        deliverer = Deliverer(catalog.path, [signed, unsigned])
        deliverer.start()
    try:
        names = [t.name for t in threading.enumerate() if t.name.startswith("webhook-deliverer")]
        assert len(names) == 2
        assert not any("KEYINPATH" in n or "OTHERKEY" in n for n in names), names
        assert "has no secret" in caplog.text and "OTHERKEY" not in caplog.text and "hooks.example" in caplog.text
    finally:
        deliverer.stop()
        catalog.close()


def test_webhook_verify_reads_the_secret_from_a_file(tmp_path: Path):
    """Item 11: `webhook verify` without --secret on its command line."""
    from daemon.webhooks import signed_headers

    secret = generate_secret()
    (tmp_path / "secret").write_text(secret)
    body = b'{"id":"evt_1"}'
    h = signed_headers(secret, "evt_1", body)
    run = subprocess.run([*dupwatch_cmd(), "webhook", "--state-dir", str(tmp_path), "verify", "--secret-file",
                          str(tmp_path / "secret"), "--id", "evt_1", "--timestamp", h["webhook-timestamp"],
                          "--signature", h["webhook-signature"]], input=body, capture_output=True,
                         env=base_env(tmp_path), timeout=60, check=False)
    assert run.returncode == 0 and run.stdout.strip() == b"valid", run.stderr
