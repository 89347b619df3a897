"""A fleet as deploy/FLEET.md builds it: the shipped Redis ACL (deploy/redis-acl.conf) on Redis 6.2 (the binary
dupwatch installs) and 7 (Debian's), and workers that cannot work (a wrong password, roots not mounted) saying
so in one line, taking no job, and starting once the cause is fixed."""

from __future__ import annotations

import ctypes
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest
import redis
from PIL import Image
from rq.job import Job
from rq.registry import StartedJobRegistry
from rq.serializers import JSONSerializer

from daemon.service.redis_server import server_binary
from tests.conftest import Receiver, Service, base_env, catalog_rows, copy_into, free_port, wait_for
from workers import queue as q

pytestmark = pytest.mark.system

DEPLOY = Path(__file__).resolve().parents[1] / "deploy"
ACL = DEPLOY / "redis-acl.conf"
DEBIAN_REDIS = Path("/usr/bin/redis-server")
"""Redis 7 from Debian (`apt-get install redis-server`; `make test-system-deps` installs it as root)."""

PASSWORDS = {"DAEMON-PASSWORD": "daemon-secret", "WORKER-PASSWORD": "worker-secret"}
INSPECTOR = "user inspector on >inspector-secret ~* &* +@all"
"""A test-only user that reads Redis's ACL log; the fleet's own users are the shipped file's."""


def shipped_acl() -> str:
    """deploy/redis-acl.conf with its placeholders filled, as FLEET.md has the operator do."""
    text = ACL.read_text()
    for placeholder, secret in PASSWORDS.items():
        text = text.replace(placeholder, secret)
    return text


def redis_binaries() -> list:
    debian = pytest.param(str(DEBIAN_REDIS), id="redis7", marks=pytest.mark.skipif(
        not DEBIAN_REDIS.exists(), reason="Debian's redis-server 7 is not installed: apt-get install redis-server "
                                          "(make test-system-deps does, as root)"))
    return [pytest.param(server_binary(), id="redis6.2-installed"), debian]


class AclRedis:
    """redis-server on a loopback port with the shipped users (and the test's inspector)."""

    def __init__(self, binary: str, workdir: Path):
        workdir.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        (workdir / "users.conf").write_text(shipped_acl() + INSPECTOR + "\n")
        (workdir / "redis.conf").write_text(f"port {self.port}\nbind 127.0.0.1\nsave \"\"\nappendonly no\n"
                                            f"dir {workdir}\ninclude {workdir / 'users.conf'}\n")
        self.log = workdir / "redis.log"
        with open(self.log, "wb") as out:
            self.proc = subprocess.Popen([binary, str(workdir / "redis.conf")], stdout=out, stderr=subprocess.STDOUT)
        self.inspector = q.connect(self.url("inspector", "inspector-secret"))
        wait_for(lambda: self.proc.poll() is not None or _answers(self.inspector), 10, what="redis-server")
        assert self.proc.poll() is None, self.log.read_text()

    def url(self, user: str, password: str) -> str:
        return f"redis://{user}:{password}@127.0.0.1:{self.port}/0"

    def refusals(self) -> list[str]:
        """Every command, key or channel Redis's ACL refused, as 'user: reason object' (failed logins aside)."""
        return [f"{e['username']}: {e['reason']} {e['object']}" for e in self.inspector.acl_log()
                if e["reason"] != "auth"]

    def stop(self) -> None:
        self.proc.kill()
        self.proc.wait()


def _answers(client: redis.Redis) -> bool:
    try:
        return bool(client.ping())
    except redis.ConnectionError:
        return False


@pytest.mark.parametrize("binary", redis_binaries())
def test_the_shipped_acl_serves_daemon_and_worker_and_refuses_nothing_they_do(binary, tmp_path: Path, photos,
                                                                             services):
    """The daemon and a hash-only worker, each with its own shipped user, give every file its verdict, and Redis
    refuses none of their commands, keys or channels: rq's registries, intermediate list, failed-job results and
    pubsub channel, the worker record, the results stream. A worker with a wrong password and one whose root
    is not visible each say so in one line, without a traceback, and take no job (no `error` verdict for a
    file the good worker can read); a user the ACL does not know of gets no access at all."""
    server = AclRedis(binary, tmp_path / "redis")
    try:
        root = tmp_path / "root"
        root.mkdir()
        daemon_url = server.url("dupwatch-daemon", PASSWORDS["DAEMON-PASSWORD"])
        worker_url = server.url("dupwatch-worker", PASSWORDS["WORKER-PASSWORD"])
        env = base_env(tmp_path / "state", DUPWATCH_HASH_ONLY="true", DUPWATCH_WATCH__ROOTS=f'["{root}"]')
        daemon = Service(["daemon"], {**env, "DUPWATCH_REDIS__URL": daemon_url}, tmp_path / "daemon.log")
        wrong = Service(["worker", "--name", "wrong-password"],
                        {**env, "DUPWATCH_REDIS__URL": server.url("dupwatch-worker", "not-the-password")},
                        tmp_path / "wrong.log")
        unmounted = Service(["worker", "--name", "no-roots"],
                            {**env, "DUPWATCH_REDIS__URL": worker_url,
                             "DUPWATCH_WATCH__ROOTS": f'["{tmp_path / "not-mounted"}"]'}, tmp_path / "unmounted.log")
        services.extend([daemon, wrong, unmounted])
        wait_for(lambda: "catch-up scan" in daemon.stderr(), 60, what="daemon start")
        wait_for(lambda: "takes no jobs" in wrong.stderr() and "takes no jobs" in unmounted.stderr(), 60,
                 what="the two workers that cannot work to say so")
        names = ["astronaut", "chelsea", "coffee"]
        for name in names:
            copy_into(photos[name], root / f"{name}.jpg")
        copy_into(photos["astronaut"], root / "copy.jpg")
        wait_for(lambda: len(catalog_rows(tmp_path / "state")) == 4, 30, what="files registered")
        worker = Service(["worker", "--name", "good"], {**env, "DUPWATCH_REDIS__URL": worker_url},
                         tmp_path / "worker.log")
        services.append(worker)
        rows = wait_for(lambda: (r := catalog_rows(tmp_path / "state")) and all(x["state"] == "decided" for x in r)
                        and r, 90, 0.2, what="every verdict")
        assert {Path(r["path"]).name: r["verdict"] for r in rows} == {
            "astronaut.jpg": "new", "chelsea.jpg": "new", "coffee.jpg": "new", "copy.jpg": "exact-copy"}
        # rq's failure path too: a job that raises lands in rq's failed registry and results, by the worker's user
        q.ingest_queue(q.connect(daemon_url)).enqueue(q.JOB_FUNCTION, "not a batch")
        wait_for(lambda: "exception raised while executing" in worker.stderr(), 30, what="the failing job")
        assert worker.stop(signal.SIGTERM) == 0
        assert daemon.stop(signal.SIGTERM) == 0
        assert server.refusals() == []

        for bad, why in ((wrong, "Redis refused the worker's login"), (unmounted, "is not visible on this host")):
            assert bad.proc.poll() is None, bad.stderr()  # still there, retrying
            text = bad.stderr()
            assert "Traceback" not in text, text
            assert [ln for ln in text.splitlines() if "takes no jobs" in ln and why in ln], text
            assert len([ln for ln in text.splitlines() if "ERROR" in ln]) == 1, text  # one line, not one per retry
        with pytest.raises(redis.AuthenticationError):
            q.connect(server.url("default", "")).ping()
    finally:
        server.stop()


@pytest.mark.skipif(os.geteuid() != 0 or not shutil.which("unshare") or not shutil.which("nsenter"),
                    reason="a worker's own mount namespace needs root, unshare and nsenter (CI runs as root)")
def test_a_worker_whose_mount_vanishes_hands_its_job_back_and_takes_it_again_once_it_returns(tmp_path: Path,
                                                                                            photos, services):
    """The mount holding the roots goes away on the worker's host while it waits for a job (it saw them before
    it waited): the job it then takes goes back to the queue untouched, the worker says why in one line and
    waits, and when the mount is back it runs the job: no `error` verdict for a file that was there all along.
    The worker has a mount namespace of its own; an empty tmpfs over the folder above the root is its unmount."""
    server = AclRedis(server_binary(), tmp_path / "redis")
    try:
        mount = tmp_path / "mnt"
        root = mount / "images"
        root.mkdir(parents=True)
        env = base_env(tmp_path / "state", DUPWATCH_HASH_ONLY="true", DUPWATCH_WATCH__ROOTS=f'["{root}"]')
        daemon = Service(["daemon"], {**env, "DUPWATCH_REDIS__URL": server.url(
            "dupwatch-daemon", PASSWORDS["DAEMON-PASSWORD"])}, tmp_path / "daemon.log")
        worker = Service(["worker", "--name", "w"], {
            **env, "DUPWATCH_REDIS__URL": server.url("dupwatch-worker", PASSWORDS["WORKER-PASSWORD"])},
            tmp_path / "worker.log", prefix=("unshare", "--mount", "--propagation", "private"))
        services.extend([daemon, worker])
        wait_for(lambda: "catch-up scan" in daemon.stderr() and "ready" in worker.stderr(), 60, what="start")
        in_worker = ("nsenter", "-t", str(worker.proc.pid), "-m")
        subprocess.run([*in_worker, "mount", "-t", "tmpfs", "none", str(mount)], check=True)  # its mount is gone
        copy_into(photos["coffee"], root / "coffee.jpg")
        wait_for(lambda: "handed job" in worker.stderr() and "takes no jobs" in worker.stderr(), 60,
                 what="the job handed back")
        assert [r["state"] for r in catalog_rows(tmp_path / "state")] == ["pending"]
        subprocess.run([*in_worker, "umount", str(mount)], check=True)  # and back
        rows = wait_for(lambda: (r := catalog_rows(tmp_path / "state")) and r[0]["state"] == "decided" and r, 60,
                        what="the verdict once the mount is back")
        assert rows[0]["verdict"] == "new", rows
        assert "Traceback" not in worker.stderr(), worker.stderr()
        assert worker.stop(signal.SIGTERM) == 0
        assert daemon.stop(signal.SIGTERM) == 0
        assert server.refusals() == []
    finally:
        server.stop()


def fleet_doc_blocks() -> list[tuple[str, str, str | None]]:
    """FLEET.md's fenced blocks: (info string, text, the shipped file named by the marker line above it)."""
    lines = (DEPLOY / "FLEET.md").read_text().splitlines(keepends=True)
    blocks, named, i = [], None, 0
    while i < len(lines):
        line = lines[i]
        if m := re.fullmatch(r"<!-- file: (\S+) -->\n", line):
            named = m.group(1)
        elif line.startswith("```"):
            end = next(j for j in range(i + 1, len(lines)) if lines[j].startswith("```"))
            blocks.append((line[3:].strip(), "".join(lines[i + 1:end]), named))
            named, i = None, end
        i += 1
    return blocks


def test_every_config_block_in_fleet_md_is_the_shipped_file_the_fleet_test_runs():
    """Commands (sh), the diagram (text) and the systemd drop-in (ini, which needs systemd) aside, each block on
    FLEET.md names a shipped file and is that file, whole: what the page shows is what the test runs."""
    blocks = fleet_doc_blocks()
    named = [(text, name) for info, text, name in blocks if info not in ("sh", "text", "ini")]
    assert named and all(name is not None for _, name in named), [t[:60] for t, n in named if n is None]
    root = DEPLOY.parent
    for text, name in named:
        assert text == (root / name).read_text(), f"FLEET.md's block for {name} differs from the file"
    used = {"deploy/redis-acl.conf", "deploy/fleet/redis-fleet.conf", "deploy/fleet/daemon.env",
            "deploy/fleet/worker.env", "deploy/fleet/firewall.nft"}
    assert {name for _, name in named} == used  # each one read by the fleet test below


# --- the fleet on hosts of its own: network namespaces -------------------------------------------------------

FLEET = DEPLOY / "fleet"
DAEMON_ADDRESS, WORKER_NETWORK = "10.0.0.5", "10.0.0.0/24"
"""FLEET.md's addresses, used as written: they exist only inside the test's own namespaces."""
WORKER_ADDRESSES = {"a": "10.0.0.11", "b": "10.0.0.12"}
OUTSIDER_ADDRESS, OUTSIDE_GATEWAY = "10.0.1.9", "10.0.1.5"
"""A host off the worker network, routed to the daemon host: the firewall must drop it."""
CLONE_NEWNET = 0x40000000


def fleet_skip_reason() -> str | None:
    if os.geteuid() != 0:
        return "network namespaces need root (CI runs this test as root)"
    missing = [name for name, found in (("ip", shutil.which("ip")), ("openssl", shutil.which("openssl")),
                                        ("nft", shutil.which("nft")), ("redis-server 7", DEBIAN_REDIS.exists()))
               if not found]
    if missing:
        return f"missing {', '.join(missing)}: apt-get install iproute2 openssl nftables redis-server " \
               "(make test-system-deps does, as root)"
    return None


def rewritten(text: str, paths: dict[str, Path]) -> str:
    """A shipped file with its /etc, /run, /var/lib and /srv paths moved under the test's directory, and the
    passwords filled in: nothing else changes."""
    for placeholder, secret in PASSWORDS.items():
        text = text.replace(placeholder, secret)
    for real, here in paths.items():
        text = text.replace(real, str(here))
    return text


def env_file(text: str) -> dict[str, str]:
    """KEY=value lines, as systemd's EnvironmentFile= reads them (comments and blank lines skipped)."""
    return dict(line.split("=", 1) for line in text.splitlines() if line.strip() and not line.startswith("#"))


class Hosts:
    """Network namespaces as hosts: the daemon host holds a bridge with the worker network on it; each worker
    host has one veth into that bridge. Only addresses inside these namespaces are made or used."""

    def __init__(self) -> None:
        tag = f"dwfleet{os.getpid() % 100000}"
        self.names = {role: f"{tag}-{role}" for role in ("daemon", *WORKER_ADDRESSES, "outsider")}
        self.made: list[str] = []

    def ns(self, role: str) -> str:
        return self.names[role]

    def exec(self, role: str) -> tuple[str, ...]:
        return ("ip", "netns", "exec", self.names[role])

    def _ip(self, *args: str) -> None:
        subprocess.run(["ip", *args], check=True, capture_output=True)

    def build(self) -> None:
        for name in self.names.values():
            self._ip("netns", "add", name)
            self.made.append(name)
            self._ip("-n", name, "link", "set", "lo", "up")
        daemon = self.names["daemon"]
        self._ip("-n", daemon, "link", "add", "br0", "type", "bridge")
        self._ip("-n", daemon, "addr", "add", f"{DAEMON_ADDRESS}/24", "dev", "br0")
        self._ip("-n", daemon, "addr", "add", f"{OUTSIDE_GATEWAY}/24", "dev", "br0")
        self._ip("-n", daemon, "link", "set", "br0", "up")
        for role, address in (*WORKER_ADDRESSES.items(), ("outsider", OUTSIDER_ADDRESS)):
            port = f"v{role[:6]}"
            self._ip("-n", daemon, "link", "add", port, "type", "veth", "peer", "name", "eth0", "netns",
                     self.names[role])
            self._ip("-n", daemon, "link", "set", port, "master", "br0", "up")
            self._ip("-n", self.names[role], "addr", "add", f"{address}/24", "dev", "eth0")
            self._ip("-n", self.names[role], "link", "set", "eth0", "up")
        self._ip("-n", self.names["outsider"], "route", "add", "default", "via", OUTSIDE_GATEWAY)

    def kill_all(self, role: str) -> list[int]:
        """SIGKILL every process of a host, as a power cut would; returns their pids."""
        pids = [int(p) for p in subprocess.run(["ip", "netns", "pids", self.names[role]], capture_output=True,
                                               text=True, check=False).stdout.split()]
        for pid in pids:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        return pids

    def remove(self) -> None:
        for name in reversed(self.made):
            for pid in subprocess.run(["ip", "netns", "pids", name], capture_output=True, text=True,
                                      check=False).stdout.split():
                try:
                    os.kill(int(pid), signal.SIGKILL)
                except ProcessLookupError:
                    pass
            subprocess.run(["ip", "netns", "del", name], capture_output=True, check=False)

    def reaches(self, role: str, timeout: float = 2.0) -> bool:
        """Whether a TCP connection from the host gets to Redis's TLS port."""
        code = f"import socket; socket.create_connection(('{DAEMON_ADDRESS}', 6380), {timeout}).close()"
        return subprocess.run([*self.exec(role), sys.executable, "-c", code], capture_output=True,
                              check=False).returncode == 0

    def in_host(self, role: str, make):
        """Run `make()` on a thread moved into the host's network namespace: a socket it binds lives there."""
        out: dict = {}

        def run() -> None:
            libc = ctypes.CDLL("libc.so.6", use_errno=True)
            with open(f"/run/netns/{self.names[role]}") as handle:
                if libc.setns(handle.fileno(), CLONE_NEWNET) != 0:
                    raise OSError(ctypes.get_errno(), "setns")
            out["value"] = make()

        thread = threading.Thread(target=run)
        thread.start()
        thread.join()
        return out["value"]


def daemon_host(hosts: Hosts, tmp_path: Path, paths: dict[str, Path]) -> subprocess.Popen:
    """FLEET.md §3-4 on the daemon host: certificates from make-tls.sh, the shipped redis.conf with
    redis-fleet.conf and the ACL (plus the test's inspector), the firewall; then Redis, answering."""
    etc, run = paths["/etc/dupwatch"], paths["/run/dupwatch"]
    subprocess.run(["bash", str(FLEET / "make-tls.sh"), str(etc / "tls"), DAEMON_ADDRESS], check=True)
    (etc / "redis-acl.conf").write_text(rewritten(ACL.read_text(), paths) + INSPECTOR + "\n")
    (etc / "redis-fleet.conf").write_text(rewritten((FLEET / "redis-fleet.conf").read_text(), paths))
    (etc / "redis.conf").write_text(rewritten((DEPLOY / "redis.conf").read_text(), paths)
                                    + f"include {etc / 'redis-fleet.conf'}\n")
    (etc / "firewall.nft").write_text(rewritten((FLEET / "firewall.nft").read_text(), paths))
    subprocess.run([*hosts.exec("daemon"), "nft", "-f", str(etc / "firewall.nft")], check=True)
    with open(tmp_path / "redis.log", "wb") as out:
        proc = subprocess.Popen([*hosts.exec("daemon"), str(DEBIAN_REDIS), str(etc / "redis.conf")], stdout=out,
                                stderr=subprocess.STDOUT)
    inspector = q.connect(f"unix://inspector:inspector-secret@{run / 'redis.sock'}")
    wait_for(lambda: proc.poll() is not None or _answers(inspector), 15, what="Redis on the daemon host")
    assert proc.poll() is None, (tmp_path / "redis.log").read_text()
    return proc


def big_pngs(staging: Path, count: int, side: int = 2500) -> list[Path]:
    """Distinct PNGs that take a worker a while (a PNG is decoded at full size): a batch of them is long enough
    to kill its worker's host mid-way."""
    rng = np.random.default_rng(7)
    paths = []
    for i in range(count):
        ramp = np.linspace(0, 255, side).astype(np.uint8)
        pixels = np.empty((side, side, 3), np.uint8)
        pixels[..., 0], pixels[..., 1] = ramp[:, None], ramp[None, :]
        pixels[..., 2] = rng.integers(0, 256, (side // 50, side // 50), dtype=np.uint8).repeat(50, 0).repeat(50, 1)
        paths.append(staging / f"big{i}.png")
        Image.fromarray(pixels).save(paths[-1], compress_level=1)
    return paths


@pytest.mark.skipif(fleet_skip_reason() is not None, reason=fleet_skip_reason() or "")
def test_a_fleet_on_three_hosts_gives_every_verdict_and_loses_nothing_when_a_worker_host_dies(tmp_path: Path,
                                                                                            photos, services):
    """FLEET.md's recipe on hosts made of network namespaces: a daemon host with Redis on TLS (the shipped
    redis.conf, redis-fleet.conf and ACL; certificates from the shipped make-tls.sh) and the shipped firewall;
    two worker hosts that reach it over TCP only, with the shipped worker.env. The roots are the same path on
    every host: namespaces share this machine's file system (no bind mount needed here; on real hosts, the
    mount of FLEET.md §1). Files get verdicts and webhook deliveries (a receiver on the daemon host's loopback);
    killing every process of a worker host mid-batch loses nothing: the other host finishes the batch; a worker
    with a wrong password says so in one line; a host off the worker network cannot reach Redis."""
    hosts = Hosts()
    etc, run, data, root = tmp_path / "etc", tmp_path / "run", tmp_path / "redis-data", tmp_path / "images"
    for folder in (etc, run, data, root, tmp_path / "staging"):
        folder.mkdir()
    paths = {"/etc/dupwatch": etc, "/run/dupwatch": run, "/var/lib/dupwatch-redis": data, "/srv/images": root}
    redis_proc = None
    try:
        hosts.build()
        redis_proc = daemon_host(hosts, tmp_path, paths)
        inspector = q.connect(f"unix://inspector:inspector-secret@{run / 'redis.sock'}")
        assert hosts.reaches("a") and not hosts.reaches("outsider")  # the firewall: only the worker network

        receiver = hosts.in_host("daemon", Receiver)
        common = base_env(tmp_path / "state", DUPWATCH_HASH_ONLY="true", DUPWATCH_WATCH__ROOTS=f'["{root}"]',
                          DUPWATCH_QUEUE__BATCH_SIZE="8", DUPWATCH_QUEUE__BATCH_MS="1500",
                          DUPWATCH_QUEUE__PENDING_RETRY_S="5")
        daemon_env = {**common, **env_file(rewritten((FLEET / "daemon.env").read_text(), paths)),
                      "DUPWATCH_WEBHOOKS": json.dumps([{"url": receiver.url, "secret": "whsec_" + "A" * 32}])}
        worker_env = {**common, **env_file(rewritten((FLEET / "worker.env").read_text(), paths))}
        assert worker_env["DUPWATCH_REDIS__URL"].startswith(f"rediss://dupwatch-worker:worker-secret@{DAEMON_ADDRESS}:")
        daemon = Service(["daemon"], daemon_env, tmp_path / "daemon.log", prefix=hosts.exec("daemon"))
        worker_a = Service(["worker", "--name", "host-a"], worker_env, tmp_path / "a.log", prefix=hosts.exec("a"))
        wrong = Service(["worker", "--name", "host-b-wrong"],
                        {**worker_env, "DUPWATCH_REDIS__URL": worker_env["DUPWATCH_REDIS__URL"].replace(
                            "worker-secret", "not-the-password")}, tmp_path / "wrong.log", prefix=hosts.exec("b"))
        services.extend([daemon, worker_a, wrong])
        wait_for(lambda: "catch-up scan" in daemon.stderr() and "ready" in worker_a.stderr(), 90, what="start")

        # verdicts and webhook deliveries
        for name in ("astronaut", "chelsea", "coffee"):
            copy_into(photos[name], root / f"{name}.jpg")
        copy_into(photos["astronaut"], root / "copy.jpg")
        wait_for(lambda: len(catalog_rows(tmp_path / "state")) == 4
                 and all(r["state"] == "decided" for r in catalog_rows(tmp_path / "state")), 60, 0.2,
                 what="the first verdicts")
        hook = wait_for(lambda: receiver.events(), 30, what="the webhook delivery")
        assert [(Path(e["file"]["path"]).name, e["kind"]) for e in hook] == [("copy.jpg", "exact-copy")], hook

        # a worker host dies mid-batch: nothing is lost, the other host finishes the batch
        staged = big_pngs(tmp_path / "staging", 8)
        for path in staged:
            path.rename(root / path.name)
        wait_for(lambda: any(j.worker_name == "host-a" for j in _started(inspector)), 60, 0.02, what="host a's batch")
        killed = hosts.kill_all("a")
        assert worker_a.proc.pid in killed or worker_a.proc.wait(5) is not None
        worker_b = Service(["worker", "--name", "host-b"], worker_env, tmp_path / "b.log", prefix=hosts.exec("b"))
        services.append(worker_b)
        rows = wait_for(lambda: (r := catalog_rows(tmp_path / "state")) and len(r) == 12
                        and all(x["state"] == "decided" for x in r) and r, 150, 0.5, what="every verdict")
        assert [r["verdict"] for r in rows if r["path"].endswith(".png")] == ["new"] * 8, rows
        assert "(job failed or its worker died)" in daemon.stderr()  # host a's batch, queued again

        # the worker with a wrong password: one clear line, no traceback, still trying
        text = wrong.stderr()
        assert wrong.proc.poll() is None and "Traceback" not in text, text
        assert len([ln for ln in text.splitlines() if "Redis refused the worker's login" in ln]) == 1, text
        assert inspector.acl_log() and all(e["reason"] == "auth" for e in inspector.acl_log())
        assert worker_b.stop(signal.SIGTERM) == 0
        assert daemon.stop(signal.SIGTERM) == 0
        receiver.close()
    finally:
        for service in services:
            service.stop(signal.SIGKILL, timeout=10)
        if redis_proc is not None:
            redis_proc.kill()
            redis_proc.wait()
        hosts.remove()
    assert not set(hosts.names.values()) & set(subprocess.run(["ip", "netns", "list"], capture_output=True,
                                                              text=True, check=False).stdout.split())


def _started(conn: redis.Redis) -> list[Job]:
    registry = StartedJobRegistry(q.INGEST_QUEUE, connection=conn, serializer=JSONSerializer)
    return [job for job in Job.fetch_many(registry.get_job_ids(cleanup=False), connection=conn,
                                          serializer=JSONSerializer) if job is not None]
