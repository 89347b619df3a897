"""A fleet as deploy/FLEET.md builds it: the shipped Redis ACL (deploy/redis-acl.conf) on Redis 6.2 (the binary
dupwatch installs) and 7 (Debian's), and workers that cannot work (a wrong password, roots not mounted) saying
so in one line, taking no job, and starting once the cause is fixed."""

from __future__ import annotations

import signal
import subprocess
from pathlib import Path

import pytest
import redis

from daemon.service.redis_server import server_binary
from tests.conftest import Service, base_env, catalog_rows, copy_into, free_port, wait_for
from workers import queue as q

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
