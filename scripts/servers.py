"""Throw-away PostgreSQL and Redis servers on free loopback ports, for the test suite
and the benchmarks. They run from Debian's installed binaries (postgresql keeps initdb
and pg_ctl off PATH, in /usr/lib/postgresql/<version>/bin) and are stopped afterwards."""

import contextlib
import glob
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import time


class ServerUnavailable(RuntimeError):
    pass


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _wait_for_port(port, timeout=30.0, proc=None):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise ServerUnavailable(f"server exited with code {proc.returncode}")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.2):
            return
        time.sleep(0.05)
    raise ServerUnavailable(f"nothing listens on 127.0.0.1:{port} after {timeout}s")


def postgres_bin(name: str) -> str:
    """The path of a PostgreSQL server binary (initdb, pg_ctl, postgres)."""
    candidates = sorted(
        glob.glob(f"/usr/lib/postgresql/*/bin/{name}"),
        key=lambda p: int(p.split("/")[4]) if p.split("/")[4].isdigit() else 0,
    )
    if candidates:
        return candidates[-1]
    found = shutil.which(name)
    if found:
        return found
    raise ServerUnavailable(f"PostgreSQL binary {name!r} not found: install the postgresql package")


def _as_postgres_user(cmd):
    """PostgreSQL refuses to run as root: drop to the 'postgres' system user then."""
    if os.geteuid() != 0:
        return cmd, None
    return ["runuser", "-u", "postgres", "--", *cmd], pwd.getpwnam("postgres")


@contextlib.contextmanager
def postgres_server():
    """Yield a DATABASE_URL for a fresh PostgreSQL cluster; remove it afterwards."""
    initdb, pg_ctl = postgres_bin("initdb"), postgres_bin("pg_ctl")
    root = tempfile.mkdtemp(prefix="lejek-pg-")
    data = os.path.join(root, "data")
    port = free_port()
    _, account = _as_postgres_user([])
    if account is not None:
        os.chown(root, account.pw_uid, account.pw_gid)
    cmd, _ = _as_postgres_user(
        [initdb, "-D", data, "-U", "postgres", "--auth=trust", "-E", "UTF8", "--no-sync"]
    )
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    # Durability is pointless for a throw-away cluster; turning it off makes tests fast.
    options = (
        f"-p {port} -k {root} -c listen_addresses=127.0.0.1 -c fsync=off "
        "-c synchronous_commit=off -c full_page_writes=off -c max_connections=200"
    )
    cmd, _ = _as_postgres_user(
        [pg_ctl, "-D", data, "-o", options, "-l", os.path.join(root, "log"), "-w", "start"]
    )
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
    try:
        _wait_for_port(port)
        yield f"postgres://postgres@127.0.0.1:{port}/postgres"
    finally:
        cmd, _ = _as_postgres_user([pg_ctl, "-D", data, "-m", "immediate", "-w", "stop"])
        subprocess.run(cmd, check=False, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        shutil.rmtree(root, ignore_errors=True)


class RedisServer:
    """A redis-server process that a test can stop and start again on the same port."""

    def __init__(self):
        binary = shutil.which("redis-server") or "/usr/bin/redis-server"
        if not os.path.exists(binary):
            raise ServerUnavailable("redis-server not found: install the redis-server package")
        self.binary = binary
        self.port = free_port()
        self.dir = tempfile.mkdtemp(prefix="lejek-redis-")
        self.proc = None

    @property
    def url(self):
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self):
        self.proc = subprocess.Popen(
            [
                self.binary,
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                self.dir,
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        _wait_for_port(self.port, proc=self.proc)
        return self

    def stop(self):
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(10)
        self.proc = None

    def close(self):
        self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)


@contextlib.contextmanager
def redis_server():
    server = RedisServer().start()
    try:
        yield server
    finally:
        server.close()
