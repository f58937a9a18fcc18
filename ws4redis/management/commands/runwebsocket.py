"""``manage.py runwebsocket [addr:]port [--workers N] [--metrics [addr:]port]``: the production
websocket loop."""

from __future__ import annotations

import logging
import os
import signal
import sys
import time
from typing import Any

from django.core.management.base import BaseCommand, CommandError
from django.db import connections

from ws4redis.runtimes.asyncio.server import bind_check, run_worker

logger = logging.getLogger("ws4redis.server")

DEFAULT_ADDRESS = "127.0.0.1"
DEFAULT_PORT = 8001


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

    def handle(
        self, *args: Any, addrport: str, workers: int, metrics: str | None, **options: Any
    ) -> None:
        host, port = parse_addrport(addrport)
        if workers < 1:
            raise CommandError("--workers must be at least 1")
        metrics_at = parse_addrport(metrics) if metrics else None
        _log_to_stderr()
        try:
            bind_check(host, port)
        except OSError as exc:
            raise CommandError(f"cannot listen on {host}:{port}: {exc}") from exc
        connections.close_all()  # neither a worker nor the supervisor inherits DB sockets
        if workers == 1:
            serve_metrics(metrics_at, 0)
            run_worker(host, port, reuse_port=False)
        else:
            supervise(host, port, workers, metrics_at)


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
    host: str, port: int, workers: int, metrics_at: tuple[str, int] | None = None
) -> None:
    """Fork ``workers`` processes on one port; restart any that crash; forward SIGTERM."""
    stopping = False
    children: dict[int, int] = {}

    def stop(signum: int, frame: Any) -> None:
        nonlocal stopping
        stopping = True
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
                run_worker(host, port, reuse_port=True, supervisor=supervisor)
            finally:
                os._exit(0)
        children[pid] = slot

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    for slot in range(workers):
        spawn(slot)
    while children:
        try:
            pid, status = os.wait()
        except ChildProcessError:
            break
        ended = children.pop(pid, None)
        if ended is not None and not stopping:
            logger.error("Worker %d ended (status %d); starting another", pid, status)
            time.sleep(1)
            spawn(ended)
