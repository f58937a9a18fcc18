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
    """A getter of one ``factory()`` per process, made on first use (no lock once made). A
    forked child starts without it, and with a lock of its own (``os.register_at_fork``),
    so the getter never asks for the pid: that is a system call, and openings ask for these
    many times."""
    made: list[T] = []
    lock = threading.Lock()

    def forked() -> None:
        """The child has neither the value nor a lock that a thread of its parent held."""
        nonlocal lock
        made.clear()
        lock = threading.Lock()

    os.register_at_fork(after_in_child=forked)

    def get() -> T:
        if made:
            return made[0]
        with lock:
            if not made:
                made.append(factory())
        return made[0]

    return get
