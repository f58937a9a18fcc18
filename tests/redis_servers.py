"""Private ``redis-server`` processes for tests that need a server of their own."""

from __future__ import annotations

import contextlib
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextlib.contextmanager
def private_redis(workdir: Path, *args: str, **client_kwargs) -> Iterator[subprocess.Popen]:
    """Run ``redis-server`` with ``args`` until the block ends; wait until it answers a
    client built with ``client_kwargs``."""
    binary = shutil.which("redis-server")
    if binary is None:
        pytest.fail("redis-server is not installed (Debian: apt-get install redis-server)")
    command = [binary, "--save", "", "--appendonly", "no", "--dir", str(workdir), *args]
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        client = redis.Redis(**client_kwargs)
        deadline = time.monotonic() + 10
        while True:
            try:
                client.ping()
                break
            except redis.ConnectionError:
                if process.poll() is not None or time.monotonic() > deadline:
                    raise
                time.sleep(0.05)
        client.close()
        yield process
    finally:
        process.terminate()
        process.wait(10)
