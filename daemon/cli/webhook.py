"""`dupwatch webhook ...`: inspect the delivery outbox, replay dead letters, test and verify signatures.

The group takes the common options (`dupwatch webhook --state-dir D list`) and loads the settings. Works on the catalog
file directly, so it runs beside a live daemon: replayed rows are picked up at the deliverer's next poll.
"""

from __future__ import annotations

import json
import os
import sqlite3
from datetime import datetime
from typing import BinaryIO, TextIO

import click
import httpx

from daemon.cli.options import common, settings_from
from daemon.config import Settings, WebhookSettings
from daemon.index.catalog import connect
from daemon.notify import outbox, transport
from daemon.webhooks import DEFAULT_TOLERANCE_S, VerificationError, verify

CATALOG_FILE = "catalog.sqlite3"


def _open(ctx: click.Context) -> sqlite3.Connection:
    settings: Settings = ctx.obj
    path = settings.state_dir / CATALOG_FILE
    if not path.is_file():
        raise click.ClickException(f"no catalog at {path} (has dupwatch run with this state dir?)")
    conn = connect(path)
    conn.executescript(outbox.SCHEMA)  # a catalog from before webhooks existed simply has none yet
    ctx.call_on_close(conn.close)
    return conn


def _iso(ts: float | None) -> str:
    return datetime.fromtimestamp(ts).astimezone().isoformat(timespec="seconds") if ts else "-"


def _since(value: str | None) -> float | None:
    """ISO 8601 (local time when no offset is given) to unix seconds."""
    if value is None:
        return None
    try:
        return datetime.fromisoformat(value).timestamp()
    except ValueError:
        raise click.BadParameter(f"{value!r} is not an ISO 8601 time", param_hint="--since") from None


@click.group("webhook")
@common
@click.pass_context
def webhook(ctx: click.Context, **params: object) -> None:
    """Webhook deliveries: list them, replay dead letters, send a test, verify a signature."""
    ctx.obj = settings_from(dict(params))


@webhook.command("list")
@click.option("--state", type=click.Choice(outbox.STATES), help="Only deliveries in this state.")
@click.option("--since", "since", metavar="ISO8601", help="Only deliveries enqueued at or after this time.")
@click.option("--json", "as_json", is_flag=True, help="One JSON object per line (payload included).")
@click.pass_context
def list_cmd(ctx: click.Context, state: str | None, since: str | None, as_json: bool) -> None:
    """List deliveries in delivery order."""
    rows = outbox.list_deliveries(_open(ctx), state=state, since=_since(since))
    for row in rows:
        if as_json:
            click.echo(json.dumps({**row, "payload": json.loads(row["payload"])}, ensure_ascii=False))
        else:
            click.echo(f"{row['id']:>6}  {row['state']:<7} {row['attempts']:>3}x  {row['last_status'] or '-':>3}  "
                       f"{_iso(row['created_at'])}  {row['event_id']}  {row['endpoint']}"
                       + (f"  ({row['last_error']})" if row["state"] != "sent" and row["last_error"] else ""))


@webhook.command("replay")
@click.argument("ids", nargs=-1, type=int)
@click.option("--all", "all_dead", is_flag=True, help="Replay every dead delivery.")
@click.option("--since", "since", metavar="ISO8601", help="Only dead deliveries enqueued at or after this time.")
@click.pass_context
def replay_cmd(ctx: click.Context, ids: tuple[int, ...], all_dead: bool, since: str | None) -> None:
    """Put dead deliveries (by ID, --since, or --all) back in line to be sent."""
    if not ids and not all_dead and since is None:
        raise click.UsageError("name delivery IDs, --since, or --all")
    n = outbox.replay(_open(ctx), ids=list(ids), all_dead=all_dead, since=_since(since))
    click.echo(f"replayed {n} deliver{'y' if n == 1 else 'ies'}")


@webhook.command("test")
@click.option("--url", help="Send to this URL only (signed with its configured secret, if configured).")
@click.pass_context
def test_cmd(ctx: click.Context, url: str | None) -> None:
    """Send a signed `dupwatch.test` event to every configured endpoint (or --url); exit 1 on any failure."""
    settings: Settings = ctx.obj
    configured = {e.url: e for e in settings.webhooks}
    targets = [configured.get(url, WebhookSettings(url=url))] if url else list(configured.values())
    if not targets:
        raise click.ClickException("no webhooks configured (add [[webhooks]] or pass --url)")
    failed = False
    for endpoint in targets:
        try:
            status, body = transport.send_test(endpoint)
        except httpx.HTTPError as exc:
            failed = True
            click.echo(f"{endpoint.url}: failed: {type(exc).__name__}: {exc}")
            continue
        failed |= not 200 <= status < 300
        signed = "signed" if endpoint.secret else "UNSIGNED (no secret)"
        click.echo(f"{endpoint.url}: HTTP {status} ({signed}) {body[:200]}")
    ctx.exit(1 if failed else 0)


SECRET_ENV = "DUPWATCH_WEBHOOK_SECRET"
"""Where `webhook verify` reads the endpoint's secret from, unless --secret-file names a file: never the command
line, which other users of the host can read (ps, /proc/PID/cmdline) and shells keep in their history."""


@webhook.command("verify")
@click.option("--secret-file", type=click.File("r"), help=f"File holding the endpoint's secret (whsec_... or a raw "
              f"string); without it, the environment variable {SECRET_ENV}.")
@click.option("--secret", hidden=True, help="Deprecated: the secret on the command line, visible to other users.")
@click.option("--id", "msg_id", required=True, help="The webhook-id header.")
@click.option("--timestamp", required=True, help="The webhook-timestamp header.")
@click.option("--signature", required=True, help="The webhook-signature header.")
@click.option("--tolerance", type=float, default=DEFAULT_TOLERANCE_S, show_default=True,
              help="Largest accepted age (or clock skew) of the timestamp, in seconds.")
@click.option("--body", "body_file", type=click.File("rb"), default="-", show_default=True,
              help="File holding the raw request body, byte for byte; - is stdin.")
@click.pass_context
def verify_cmd(ctx: click.Context, secret_file: TextIO | None, secret: str | None, msg_id: str, timestamp: str,
               signature: str, tolerance: float, body_file: BinaryIO) -> None:
    """Check a received request's signature. Exit 0 valid, 1 invalid (the reason on stderr)."""
    if secret_file is not None:
        secret = secret_file.read().strip()
    elif os.environ.get(SECRET_ENV):
        secret = os.environ[SECRET_ENV]
    elif secret is not None:
        click.echo(f"warning: --secret is deprecated (the command line is visible to other users): set {SECRET_ENV} "
                   "or pass --secret-file", err=True)
    else:
        raise click.UsageError(f"no secret: set {SECRET_ENV} or pass --secret-file")
    body = body_file.read()
    headers = {"webhook-id": msg_id, "webhook-timestamp": timestamp, "webhook-signature": signature}
    try:
        verify(secret, headers, body, tolerance_s=tolerance)
    except VerificationError as exc:
        click.echo(f"invalid: {exc}", err=True)
        ctx.exit(1)
    except ValueError as exc:  # a malformed secret
        raise click.BadParameter(str(exc), param_hint="the secret") from None
    click.echo("valid")

