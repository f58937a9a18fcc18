"""Yardsticks for the benchmarks: servers that do less than ``runwebsocket``, each run as
``python -m bench.anchors.NAME PORT CHANNEL`` and logging ``listening on`` to stderr once
it accepts connections."""

from __future__ import annotations

import argparse
import asyncio
from collections.abc import Callable, Coroutine
from typing import Any


def run(main: Callable[[int, str], Coroutine[Any, Any, None]], description: str | None) -> None:
    """Run ``main(port, channel)`` from the command line, on uvloop when it is installed:
    ``runwebsocket`` runs on it then, so does its yardstick."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("port", type=int)
    parser.add_argument("channel")
    args = parser.parse_args()
    try:
        import uvloop
    except ImportError:
        loop_factory = None
    else:
        loop_factory = uvloop.new_event_loop
    with asyncio.Runner(loop_factory=loop_factory) as runner:
        runner.run(main(args.port, args.channel))
