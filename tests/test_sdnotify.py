"""sd_notify against real unix datagram sockets, as systemd's manager would listen on them."""

from __future__ import annotations

import os
import socket
import uuid

import pytest

from daemon.service import sdnotify


def _receive_all(sock: socket.socket) -> list[str]:
    sock.setblocking(False)
    out = []
    while True:
        try:
            out.append(sock.recv(4096).decode())
        except BlockingIOError:
            return out


@pytest.fixture(params=["path", "abstract"])
def listener(request, tmp_path, monkeypatch):
    """A bound SOCK_DGRAM socket with NOTIFY_SOCKET naming it (filesystem path or '@abstract')."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    if request.param == "path":
        path = str(tmp_path / "notify.sock")
        sock.bind(path)
        monkeypatch.setenv("NOTIFY_SOCKET", path)
    else:
        name = f"dupwatch-test-{uuid.uuid4().hex}"
        sock.bind("\0" + name)
        monkeypatch.setenv("NOTIFY_SOCKET", "@" + name)
    yield sock
    sock.close()


def test_lifecycle_messages_arrive_in_order(listener):
    assert sdnotify.ready("started")
    assert sdnotify.watchdog()
    assert sdnotify.status("watching 2 roots")
    assert sdnotify.stopping()
    assert _receive_all(listener) == ["READY=1\nSTATUS=started", "WATCHDOG=1", "STATUS=watching 2 roots", "STOPPING=1"]


def test_reloading_carries_monotonic_timestamp(listener):
    assert sdnotify.reloading()
    (message,) = _receive_all(listener)
    lines = message.split("\n")
    assert lines[0] == "RELOADING=1"
    assert lines[1].startswith("MONOTONIC_USEC=") and int(lines[1].split("=")[1]) > 0


def test_no_op_without_notify_socket(monkeypatch):
    monkeypatch.delenv("NOTIFY_SOCKET", raising=False)
    assert sdnotify.ready() is False
    assert sdnotify.watchdog() is False
    sdnotify.Heartbeat().beat("anything")  # must not raise


def test_unreachable_socket_is_logged_not_raised(tmp_path, monkeypatch, caplog):
    monkeypatch.setenv("NOTIFY_SOCKET", str(tmp_path / "nobody-listens"))
    assert sdnotify.ready() is False
    assert "sd_notify" in caplog.text


@pytest.mark.parametrize(
    ("usec", "pid", "expected"),
    [
        (None, None, None),
        ("30000000", None, 30.0),
        ("30000000", "self", 30.0),
        ("30000000", "other", None),  # inherited by a child: not ours to ping
        ("0", None, None),
        ("abc", None, None),
    ],
)
def test_watchdog_interval(monkeypatch, usec, pid, expected):
    for name, value in (("WATCHDOG_USEC", usec), ("WATCHDOG_PID", pid)):
        if value is None:
            monkeypatch.delenv(name, raising=False)
        else:
            monkeypatch.setenv(name, {"self": str(os.getpid()), "other": str(os.getpid() + 1)}.get(value, value))
    assert sdnotify.watchdog_interval() == expected


def test_heartbeat_pings_at_half_interval_and_status_on_change(listener, monkeypatch):
    monkeypatch.setenv("WATCHDOG_USEC", "30000000")
    monkeypatch.setenv("WATCHDOG_PID", str(os.getpid()))
    now = [100.0]
    beat = sdnotify.Heartbeat(clock=lambda: now[0])
    assert beat.period == 15.0

    beat.beat("idle")           # first beat pings at once
    beat.beat("idle")           # nothing new
    now[0] += 14.9
    beat.beat("3 pending")      # status changed, ping not due
    now[0] += 0.1
    beat.beat("3 pending")      # 15 s since the last ping
    assert _receive_all(listener) == ["WATCHDOG=1\nSTATUS=idle", "STATUS=3 pending", "WATCHDOG=1"]


def test_heartbeat_without_watchdog_sends_only_status(listener, monkeypatch):
    monkeypatch.delenv("WATCHDOG_USEC", raising=False)
    beat = sdnotify.Heartbeat()
    beat.beat("idle")
    beat.beat("idle")
    assert _receive_all(listener) == ["STATUS=idle"]
