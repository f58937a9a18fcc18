"""What belongs to one process: a forked worker (``runwebsocket --workers``, uWSGI) must not
share the writer threads and names of the process it was forked from."""

from __future__ import annotations

import os
import secrets
import socket
import threading
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


def process_name() -> str:
    """``<host>:<pid>:<random>``: names this process in Redis, unique even when a pid is
    reused."""
    return f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(3)}"


def per_process(factory: Callable[[], T]) -> Callable[[], T]:
    """A getter of one ``factory()`` per process, made on first use (no lock once made)."""
    made: dict[int, T] = {}
    lock = threading.Lock()

    def get() -> T:
        pid = os.getpid()
        value = made.get(pid)
        if value is None:
            with lock:
                value = made.get(pid)
                if value is None:
                    value = made[pid] = factory()
        return value

    return get
