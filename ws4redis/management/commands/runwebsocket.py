"""``manage.py runwebsocket [addr:]port [--workers N] [--metrics [addr:]port] [--drain S]``: the
production websocket loop."""

from __future__ import annotations

import logging
import math
import os
import signal
import sys
import time
from typing import Any

from django.core.management.base import BaseCommand, CommandError
from django.db import connections

from ws4redis.runtimes.asyncio.server import SHUTDOWN_GRACE, bind_check, drain_seconds, run_worker

logger = logging.getLogger("ws4redis.server")

DEFAULT_ADDRESS = "127.0.0.1"
DEFAULT_PORT = 8001
STOP_MARGIN = 5.0
"""Seconds a stopping supervisor waits for its workers beyond their drain and shutdown
grace (their Redis publishes, the interpreter's exit) before it kills them."""


def parse_addrport(value: str) -> tuple[str, int]:
    """``8001``, ``0.0.0.0:8001``, ``[::1]:8001`` -> (host, port)."""
    host, _, port = value.rpartition(":")
    host = host.strip("[]") or DEFAULT_ADDRESS
    if not port.isdigit():
        raise CommandError(f"{value!r} is not a port or address:port")
    return host, int(port)


class Command(BaseCommand):
    help = "Serve the websockets under WEBSOCKET_URL (asyncio; uvloop when installed)."

    def add_arguments(self, parser: Any) -> None:
        parser.add_argument(
            "addrport",
            nargs="?",
            default=str(DEFAULT_PORT),
            help=f"[addr:]port to listen on (default: {DEFAULT_ADDRESS}:{DEFAULT_PORT})",
        )
        parser.add_argument(
            "--workers",
            type=int,
            default=1,
            help="processes sharing the port (SO_REUSEPORT; default: 1)",
        )
        parser.add_argument(
            "--metrics",
            metavar="[ADDR:]PORT",
            help="serve Prometheus metrics there (worker n of --workers on PORT + n)",
        )
        parser.add_argument(
            "--drain",
            type=float,
            metavar="SECONDS",
            help="on SIGTERM, close the websockets spread over this many seconds"
            " (default: WS4REDIS_DRAIN_SECONDS; 0: all at once)",
        )

    def handle(
        self,
        *args: Any,
        addrport: str,
        workers: int,
        metrics: str | None,
        drain: float | None,
        **options: Any,
    ) -> None:
        host, port = parse_addrport(addrport)
        if workers < 1:
            raise CommandError("--workers must be at least 1")
        if drain is not None and not 0 <= drain < float("inf"):
            raise CommandError("--drain must be a number of seconds >= 0")
        window = drain_seconds(drain)
        metrics_at = parse_addrport(metrics) if metrics else None
        _log_to_stderr()
        try:
            bind_check(host, port)
        except OSError as exc:
            raise CommandError(f"cannot listen on {host}:{port}: {exc}") from exc
        connections.close_all()  # neither a worker nor the supervisor inherits DB sockets
        if workers == 1:
            serve_metrics(metrics_at, 0)
            run_worker(host, port, reuse_port=False, drain=window)
        else:
            supervise(host, port, workers, metrics_at, drain=window)


def _log_to_stderr() -> None:
    """Show the server's own log lines unless the project configured logging for them."""
    server_logger = logging.getLogger("ws4redis")
    if not server_logger.handlers:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("[%(asctime)s] %(levelname)s %(message)s"))
        server_logger.addHandler(handler)
        server_logger.setLevel(logging.INFO)


def serve_metrics(address: tuple[str, int] | None, slot: int) -> None:
    """Serve this worker's metrics on the port after the base port's ``slot``."""
    if address is not None:
        from ws4redis import metrics

        metrics.serve(address[0], address[1] + slot)
        logger.info("metrics on http://%s:%d/", address[0], address[1] + slot)


def supervise(
    host: str,
    port: int,
    workers: int,
    metrics_at: tuple[str, int] | None = None,
    *,
    drain: float = 0.0,
) -> None:
    """Fork ``workers`` processes on one port; restart any that crash; forward SIGTERM.

    Each worker drains on its own over ``drain`` seconds; the supervisor waits for that,
    and kills the workers still there ``drain`` + their shutdown grace + ``STOP_MARGIN``
    seconds after the first signal. A second signal is forwarded too: the workers close
    the rest of their websockets at once."""
    deadline: float | None = None  # set by the first signal
    children: dict[int, int] = {}

    def stop(signum: int, frame: Any) -> None:
        nonlocal deadline
        if deadline is None:
            deadline = time.monotonic() + drain + SHUTDOWN_GRACE + STOP_MARGIN
        for pid in children:
            os.kill(pid, signal.SIGTERM)

    def spawn(slot: int) -> None:
        supervisor = os.getpid()
        pid = os.fork()
        if pid == 0:
            signal.signal(signal.SIGTERM, signal.SIG_DFL)
            signal.signal(signal.SIGINT, signal.SIG_DFL)
            try:
                serve_metrics(metrics_at, slot)
                run_worker(host, port, reuse_port=True, supervisor=supervisor, drain=drain)
            finally:
                os._exit(0)
        children[pid] = slot

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    for slot in range(workers):
        spawn(slot)
    while children:
        if deadline is not None and time.monotonic() > deadline:
            for pid in children:
                logger.error("Worker %d did not stop in time; killing it", pid)
                os.kill(pid, signal.SIGKILL)
            deadline = math.inf  # killed: only reaping is left
        try:
            # Polled, not blocking: os.wait() resumes after a signal (PEP 475), so it would
            # never see the deadline of a worker that does not end.
            pid, status = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            break
        if pid == 0:
            time.sleep(0.1)
            continue
        ended = children.pop(pid, None)
        if ended is not None and deadline is None:
            logger.error("Worker %d ended (status %d); starting another", pid, status)
            time.sleep(1)
            spawn(ended)
