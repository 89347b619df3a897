"""Standard Webhooks signing and verification (https://www.standardwebhooks.com).

Receivers must be able to tell a dupwatch alert from a forged one and a fresh one from a replayed
capture, with any Standard Webhooks library. So every request carries `webhook-id` (the event id, the
same on every retry so receivers can de-duplicate), `webhook-timestamp` (unix seconds, new per attempt)
and `webhook-signature: v1,<base64 HMAC-SHA256 of "id.timestamp.body">`. Pure functions, no I/O: the
deliverer, `webhook test`, `webhook verify` and users' receivers all share them.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import secrets
import time
from collections.abc import Mapping
from urllib.parse import urlsplit

SECRET_PREFIX = "whsec_"
SIGNATURE_VERSION = "v1"
DEFAULT_TOLERANCE_S = 300
"""Standard Webhooks' recommended window: older (or further in the future) requests are refused, so a
captured request cannot be replayed later."""


class VerificationError(ValueError):
    """A request that must not be trusted; the message says why."""


def generate_secret(nbytes: int = 32) -> str:
    """A new random signing secret in the `whsec_<base64>` form every Standard Webhooks library reads."""
    return SECRET_PREFIX + base64.b64encode(secrets.token_bytes(nbytes)).decode()


def shown_url(url: str) -> str:
    """A webhook URL as logs and thread names show it: scheme, host and port, and a digest that tells two
    endpoints apart. Its path, query and user part can hold credentials (chat services put the key in the
    path), and a log line travels further than the configuration."""
    parts = urlsplit(url)
    digest = hashlib.sha256(url.encode("utf-8", "surrogateescape")).hexdigest()[:8]
    return f"{parts.scheme}://{parts.hostname or '?'}{f':{parts.port}' if parts.port else ''}/…#{digest}"


def secret_key(secret: str) -> bytes:
    """The HMAC key of a secret: the decoded bytes of `whsec_<base64>`, else the string's UTF-8 bytes
    (so a plain shared password also works, as long as both sides use it the same way)."""
    if secret.startswith(SECRET_PREFIX):
        try:
            return base64.b64decode(secret[len(SECRET_PREFIX):], validate=True)
        except binascii.Error as exc:
            raise ValueError(f"webhook secret starts with {SECRET_PREFIX!r} but the rest is not base64") from exc
    if not secret:
        raise ValueError("webhook secret is empty")
    return secret.encode()


def sign(secret: str, msg_id: str, timestamp: int, body: bytes) -> str:
    """The `webhook-signature` value for one request: `v1,<base64 HMAC-SHA256 of id.timestamp.body>`."""
    signed = f"{msg_id}.{timestamp}.".encode() + body
    digest = hmac.new(secret_key(secret), signed, hashlib.sha256).digest()
    return f"{SIGNATURE_VERSION},{base64.b64encode(digest).decode()}"


def signed_headers(secret: str | None, msg_id: str, body: bytes, timestamp: int | None = None) -> dict[str, str]:
    """The Standard Webhooks headers for one attempt. Without a secret the request goes unsigned (the
    id and timestamp are still sent so receivers can de-duplicate)."""
    ts = int(time.time()) if timestamp is None else timestamp
    headers = {"webhook-id": msg_id, "webhook-timestamp": str(ts), "content-type": "application/json"}
    if secret:
        headers["webhook-signature"] = sign(secret, msg_id, ts, body)
    return headers


def verify(secret: str, headers: Mapping[str, str], body: bytes | str, tolerance_s: float = DEFAULT_TOLERANCE_S,
           now: float | None = None) -> None:
    """Check one received request; raise VerificationError saying why it must be rejected.

    `headers` is looked up case-insensitively. The signature header may list several space-separated
    signatures (secret rotation): one valid `v1` signature is enough.
    """
    lower = {k.lower(): v for k, v in headers.items()}
    missing = [h for h in ("webhook-id", "webhook-timestamp", "webhook-signature") if not lower.get(h)]
    if missing:
        raise VerificationError(f"missing header(s): {', '.join(missing)}")
    msg_id, raw_ts = lower["webhook-id"], lower["webhook-timestamp"]
    try:
        ts = int(raw_ts)
    except ValueError:
        raise VerificationError(f"webhook-timestamp {raw_ts!r} is not an integer") from None
    skew = (time.time() if now is None else now) - ts
    if skew > tolerance_s:
        raise VerificationError(f"timestamp too old: {skew:.0f} s ago (tolerance {tolerance_s:g} s)")
    if skew < -tolerance_s:
        raise VerificationError(f"timestamp in the future by {-skew:.0f} s (tolerance {tolerance_s:g} s)")
    data = body.encode() if isinstance(body, str) else body
    expected = sign(secret, msg_id, ts, data).encode()
    offered = [s for s in lower["webhook-signature"].split() if s.startswith(f"{SIGNATURE_VERSION},")]
    if not offered:
        raise VerificationError(f"no {SIGNATURE_VERSION} signature in webhook-signature")
    if not any(hmac.compare_digest(expected, s.encode()) for s in offered):
        raise VerificationError("signature mismatch (wrong secret, or the body was changed)")
