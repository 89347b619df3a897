"""HTTP for webhooks: one signed POST whose whole attempt is bounded by the endpoint's `timeout_s`.

httpx bounds each socket operation, not an attempt: a receiver that drips its status line, headers or body a
byte at a time would hold a sender for hours. Every socket operation here waits only what is left of the
attempt's deadline (`_DeadlineStream`), and only the first RESPONSE_CAP_BYTES of a response body are read.
"""

from __future__ import annotations

import contextvars
import json
import ssl
import time
import uuid
from collections.abc import Iterable
from typing import Any

import certifi
import httpcore
import httpx

from daemon import __version__
from daemon.config import WebhookSettings
from daemon.events import SCHEMA_VERSION
from daemon.webhooks import signed_headers
from workers import library_internals as internals

USER_AGENT = f"dupwatch/{__version__}"

RESPONSE_CAP_BYTES = 4096
"""How much of a receiver's response body is read (into error messages and `webhook test`)."""

_attempt_deadline: contextvars.ContextVar[float | None] = contextvars.ContextVar("attempt_deadline", default=None)
"""The monotonic time by which the current attempt must be over (set by `post` around one request)."""


def _time_left(timeout: float | None, expired: type[httpcore.TimeoutException]) -> float | None:
    """What a socket operation may wait: the smaller of its own timeout and what is left of the attempt's
    deadline; past the deadline, `expired` is raised (httpx maps it to its own timeout of the same kind)."""
    deadline = _attempt_deadline.get()
    if deadline is None:
        return timeout
    left = deadline - time.monotonic()
    if left <= 0:
        raise expired("webhook attempt not complete within its timeout_s")
    return left if timeout is None else min(timeout, left)


class _DeadlineStream(httpcore.NetworkStream):
    """A connection whose every read and write waits at most what is left of the attempt's deadline.

    httpx's timeouts bound each socket operation, not the request: a receiver that sends its status line,
    headers or body a byte at a time resets the read timeout with every byte and holds the endpoint's
    lane (and every delivery behind it) for as long as it likes. Checking the deadline on every read, and
    setting the socket's timeout to what is left of it, bounds the whole attempt, connect to last byte."""

    def __init__(self, inner: httpcore.NetworkStream) -> None:
        self._inner = inner

    def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        return self._inner.read(max_bytes, _time_left(timeout, httpcore.ReadTimeout))

    def write(self, buffer: bytes, timeout: float | None = None) -> None:
        self._inner.write(buffer, _time_left(timeout, httpcore.WriteTimeout))

    def close(self) -> None:
        self._inner.close()

    def start_tls(self, ssl_context: ssl.SSLContext, server_hostname: str | None = None,
                  timeout: float | None = None) -> httpcore.NetworkStream:
        return _DeadlineStream(self._inner.start_tls(ssl_context, server_hostname,
                                                     _time_left(timeout, httpcore.ConnectTimeout)))

    def get_extra_info(self, info: str) -> Any:
        return self._inner.get_extra_info(info)


class _DeadlineBackend(httpcore.NetworkBackend):
    """httpcore's own sockets, connected within the attempt's deadline and wrapped in `_DeadlineStream`."""

    def __init__(self) -> None:
        self._inner = httpcore.SyncBackend()

    def connect_tcp(self, host: str, port: int, timeout: float | None = None, local_address: str | None = None,
                    socket_options: Iterable[httpcore.SOCKET_OPTION] | None = None) -> httpcore.NetworkStream:
        return _DeadlineStream(self._inner.connect_tcp(host, port, _time_left(timeout, httpcore.ConnectTimeout),
                                                       local_address, socket_options))

    def connect_unix_socket(self, path: str, timeout: float | None = None,
                            socket_options: Iterable[httpcore.SOCKET_OPTION] | None = None) -> httpcore.NetworkStream:
        return _DeadlineStream(self._inner.connect_unix_socket(path, _time_left(timeout, httpcore.ConnectTimeout),
                                                               socket_options))

    def sleep(self, seconds: float) -> None:
        self._inner.sleep(seconds)


class _DeadlineTransport(httpx.HTTPTransport):
    """httpx's transport over `_DeadlineBackend`. httpx has no setting for a network backend, so its
    connection pool is replaced by one built the same way with that backend (the pool is the only thing
    the transport holds)."""

    def __init__(self) -> None:
        super().__init__()
        internals.set_connection_pool(self, httpcore.ConnectionPool(
            ssl_context=ssl.create_default_context(cafile=certifi.where()), network_backend=_DeadlineBackend()))


def _secret(endpoint: WebhookSettings) -> str | None:
    return None if endpoint.secret is None else endpoint.secret.get_secret_value()


def client() -> httpx.Client:
    """The client every webhook attempt goes through: each attempt bounded as a whole (`post`)."""
    return httpx.Client(headers={"user-agent": USER_AGENT}, transport=_DeadlineTransport())


def post(client: httpx.Client, endpoint: WebhookSettings, msg_id: str, body: bytes) -> httpx.Response:
    """One signed attempt: a fresh timestamp and signature, the same id.

    The whole attempt (connect, request, status line, headers, body) ends by `timeout_s` from its start
    (`_DeadlineStream`; httpx.TimeoutException past it). Only the body's first RESPONSE_CAP_BYTES are
    read: a receiver answering with a huge body is not read into memory; the status is what counts, the
    body only feeds the error message."""
    token = _attempt_deadline.set(time.monotonic() + endpoint.timeout_s)
    try:
        request = client.build_request("POST", endpoint.url, content=body, timeout=endpoint.timeout_s,
                                       headers=signed_headers(_secret(endpoint), msg_id, body))
        response = client.send(request, stream=True)
        kept = bytearray()
        try:
            for chunk in response.iter_raw():
                kept += chunk[:RESPONSE_CAP_BYTES - len(kept)]
                if len(kept) >= RESPONSE_CAP_BYTES:
                    break  # the rest is dropped with the connection
        finally:
            response.close()
    finally:
        _attempt_deadline.reset(token)
    headers = [(k, v) for k, v in response.headers.multi_items()  # kept raw: the framing no longer applies
               if k not in ("content-encoding", "content-length", "transfer-encoding")]
    return httpx.Response(response.status_code, headers=headers, content=bytes(kept), request=request)


def send_test(endpoint: WebhookSettings) -> tuple[int, str]:
    """Send one signed `dupwatch.test` event to an endpoint now (outside the outbox); return the
    receiver's status and body. Network errors raise httpx.HTTPError."""
    event_id = f"evt_test_{uuid.uuid4().hex[:24]}"
    body = json.dumps({"schema": SCHEMA_VERSION, "id": event_id, "type": "dupwatch.test", "kind": None,
                       "sent_at": time.time(), "dupwatch_version": __version__}, separators=(",", ":")).encode()
    with client() as http:
        response = post(http, endpoint, event_id, body)
    return response.status_code, response.text


