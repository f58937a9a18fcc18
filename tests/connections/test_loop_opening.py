"""runwebsocket opens a websocket on its event loop when nothing can block (no session
cookie, no request or channel hooks, the default subscriber): the same outcome as through
a thread, for many clients at once. A session cookie is decided in a thread, and
subscribed on the loop all the same."""

from __future__ import annotations

import threading

import pytest
import websocket
from django.test import override_settings

from tests.support.clients import FACILITY, login, session_cookie
from ws4redis.core.stats import STATS
from ws4redis.publisher import RedisPublisher
from ws4redis.runtimes.asyncio import opening as asyncio_opening
from ws4redis.runtimes.asyncio import server

NO_HOOKS = {"WS4REDIS_ALLOWED_CHANNELS": None, "WS4REDIS_PROCESS_REQUEST": None}
URL = f"/ws/{FACILITY}?subscribe-broadcast"


@pytest.fixture
def threads_used(monkeypatch) -> list[str]:
    """The paths of the websockets that were decided in a thread."""
    used: list[str] = []
    deciding = asyncio_opening.decide

    def recording(request, opening, *, framing):
        if threading.current_thread().name.startswith("ws4redis-open"):
            used.append(request.get_full_path())
        return deciding(request, opening, framing=framing)

    monkeypatch.setattr(asyncio_opening, "decide", recording)  # the custom subscriber's path
    monkeypatch.setattr(server, "decide", recording)
    return used


def test_many_clients_opening_at_once_each_get_the_persisted_then_live_messages(
    asyncio_server, rdb, threads_used
):
    publisher = RedisPublisher(facility=FACILITY, broadcast=True)
    publisher.publish_message("persisted", expire=10)
    sockets: list[websocket.WebSocket] = []
    lock = threading.Lock()

    def connect() -> None:
        ws = websocket.create_connection(asyncio_server.ws_base + URL, timeout=10)
        with lock:
            sockets.append(ws)

    opened_before, open_before = STATS.handshakes[101], STATS.facilities[FACILITY]
    with override_settings(**NO_HOOKS):
        openers = [threading.Thread(target=connect) for _ in range(40)]
        for opener in openers:
            opener.start()
        for opener in openers:
            opener.join(20)
        try:
            assert len(sockets) == 40
            # Each handshake came after its subscription: a publish now reaches all of them.
            publisher.publish_message("live")
            for ws in sockets:
                assert (ws.recv(), ws.recv()) == ("persisted", "live")
            # counted as the thread path counts them (metrics, the admin's live page)
            assert STATS.handshakes[101] - opened_before == 40
            assert STATS.facilities[FACILITY] - open_before == 40
        finally:
            for ws in sockets:
                ws.close()
    assert threads_used == []


def test_a_session_cookie_is_decided_in_a_thread(asyncio_server, rdb, users, threads_used):
    cookie = session_cookie(login("john"))
    publisher = RedisPublisher(facility=FACILITY, users=["john"])
    publisher.publish_message("persisted", expire=10)
    with override_settings(**NO_HOOKS):
        ws = websocket.create_connection(
            asyncio_server.ws_base + f"/ws/{FACILITY}?subscribe-user", header=[cookie], timeout=10
        )
        try:
            publisher.publish_message("for john")
            assert (ws.recv(), ws.recv()) == ("persisted", "for john")
        finally:
            ws.close()
    assert threads_used == [f"/ws/{FACILITY}?subscribe-user"]
