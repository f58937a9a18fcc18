"""Handshake benchmark: websocket openings per second with a connection token against
openings with a session cookie on Django's database session store.

Not a test: it prints figures. One ``runwebsocket`` process (pinned to core 0, clients on
core 1, ``SESSION_ENGINE`` the database one, SQLite) answers N handshakes asking for
``subscribe-user``, ``--concurrency`` at a time, each closed once answered; a run does
the cookie's openings (the session row, then the user row) and the token's (the signature,
then the user row) in turn, so a drift of the machine hits both alike. Every answer must be
101, else the run stops. Prints the median rate of each and the median of the runs' ratios
(each run's two figures are measured back to back, so a busy machine shifts both). Run it
through ``bench/run handshakes``.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time
from typing import Any

from bench.harness import CLIENT_CORE, prepare_clients, stop_process, ws4redis_server

HOST = "127.0.0.1"
REQUEST = (
    "GET /ws/bench?subscribe-user{query} HTTP/1.1\r\nHost: {host}\r\nUpgrade: websocket\r\n"
    "Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
    "Sec-WebSocket-Version: 13\r\n{cookie}\r\n"
)


def logged_in() -> tuple[Any, str]:
    """The bench user and the key of a database session of theirs (migrated into the
    benchmark's SQLite file): what a browser's session cookie carries."""
    from django.contrib.auth import BACKEND_SESSION_KEY, HASH_SESSION_KEY, SESSION_KEY
    from django.contrib.auth.models import User
    from django.contrib.sessions.backends.db import SessionStore
    from django.core.management import call_command

    call_command("migrate", verbosity=0)
    user, _ = User.objects.get_or_create(username="bench")
    session = SessionStore()
    session[SESSION_KEY] = str(user.pk)
    session[BACKEND_SESSION_KEY] = "django.contrib.auth.backends.ModelBackend"
    session[HASH_SESSION_KEY] = user.get_session_auth_hash()
    session.save()
    return user, session.session_key or ""


def credentials() -> dict[str, bytes]:
    """The bench user's two ways in: a database session and a token. Each way's request
    bytes, ready to send."""
    from ws4redis.tokens import QUERY_KEY, connection_token

    user, session_key = logged_in()
    token = connection_token(user, ["subscribe-user"], "bench", max_age=3600)
    cookie = f"Cookie: sessionid={session_key}\r\n"
    return {
        "cookie": REQUEST.format(query="", host=HOST, cookie=cookie).encode(),
        "token": REQUEST.format(query=f"&{QUERY_KEY}={token}", host=HOST, cookie="").encode(),
    }


async def handshake(port: int, request: bytes) -> None:
    reader, writer = await asyncio.open_connection(HOST, port)
    writer.write(request)
    answer = await reader.readuntil(b"\r\n\r\n")
    writer.transport.abort()
    if not answer.startswith(b"HTTP/1.1 101"):
        raise SystemExit(f"a handshake was refused: {answer.decode(errors='replace')}")


async def rate(port: int, request: bytes, count: int, concurrency: int) -> float:
    """Handshakes per second for ``count`` handshakes, ``concurrency`` at a time."""
    remaining = iter(range(count))

    async def worker() -> None:
        for _ in remaining:
            await handshake(port, request)

    began = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return count / (time.perf_counter() - began)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--handshakes", type=int, default=2000)
    parser.add_argument("--concurrency", type=int, default=20)
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()

    with asyncio.Runner(loop_factory=prepare_clients(CLIENT_CORE)) as runner:
        requests = credentials()
        server = ws4redis_server()
        rates: dict[str, list[float]] = {name: [] for name in requests}
        try:
            runner.run(rate(server.port, requests["cookie"], 200, args.concurrency))  # warm-up
            for run in range(args.runs):
                for name, request in requests.items():
                    rates[name].append(
                        runner.run(rate(server.port, request, args.handshakes, args.concurrency))
                    )
                figures = ", ".join(f"{name} {v[-1]:.0f}/s" for name, v in rates.items())
                print(f"run {run + 1} of {args.runs}: {figures}", flush=True)
        finally:
            stop_process(server.process)
    cookie, token = (statistics.median(rates[name]) for name in ("cookie", "token"))
    ratio = statistics.median(t / c for t, c in zip(rates["token"], rates["cookie"], strict=True))
    print()
    print(f"{args.handshakes} handshakes (subscribe-user), {args.concurrency} at a time, "
          "runwebsocket on one core, database sessions (SQLite); "
          f"medians of {args.runs} runs")  # fmt: skip
    print()
    print("| opening | handshakes/s |")
    print("|---|---|")
    print(f"| session cookie | {cookie:.0f} |")
    print(f"| connection token | {token:.0f} |")
    print(f"| token / cookie (median of the runs' ratios) | {ratio:.2f} |")


if __name__ == "__main__":
    main()
