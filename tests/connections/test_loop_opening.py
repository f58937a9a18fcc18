"""runwebsocket opens a websocket on its event loop when nothing can block (no session
cookie, no request or channel hooks, the default subscriber): the same outcome as through
a thread, for many clients at once. A session cookie is decided in a thread, and
subscribed on the loop all the same."""

from __future__ import annotations

import asyncio
import threading
import uuid
import warnings
from collections.abc import Callable

import pytest
import redis
import websocket
from django.test import override_settings

from tests.messaging.test_async_publishing import on_a_loop
from tests.support.clients import FACILITY, login, session_cookie
from ws4redis.bus.pool import get_redis
from ws4redis.core.relay import Delivery
from ws4redis.core.stats import STATS
from ws4redis.publisher import RedisPublisher
from ws4redis.runtimes.asyncio import hub, server
from ws4redis.runtimes.asyncio import opening as asyncio_opening
from ws4redis.testing import free_port

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


class Listener(hub.Queueing):
    """A websocket as the loop's hub sees it: it notes what Redis delivered."""

    def __init__(self) -> None:
        self.received: list[bytes] = []

    def push(self, delivery: Delivery) -> bool:
        self.received.append(delivery.data)
        return False  # nothing to write


async def until(condition: Callable[[], object]) -> None:
    while not condition():
        await asyncio.sleep(0.01)


def test_the_loop_hub_connects_to_redis_without_a_warning(redis_server):
    """Handed a blocking ``Retry``, redis-py's asyncio client converts it and warns, on every
    connection the hub makes: a warning in the server's log each time Redis comes back."""
    channel = f"ws4redis-test:{uuid.uuid4().hex}"

    async def hear_one() -> list[bytes]:
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            listener = Listener()
            try:
                await asyncio.wait_for(hub.get_hub().add(listener, [channel]), 10)
                get_redis().publish(channel, "heard")
                await asyncio.wait_for(until(lambda: listener.received), 10)
            finally:
                await hub.close_hubs()
        return listener.received

    assert on_a_loop(hear_one()) == [b"heard"]


class Recorder:
    """A websocket as the loop's hub sees it, noting how the hub hands it each message."""

    relay = None

    def __init__(self) -> None:
        self.calls: list[tuple[str, bytes]] = []
        self.dirty = False

    def push(self, delivery: Delivery) -> bool:
        """True only for the first message since the last flush, as a websocket says."""
        self.calls.append(("push", delivery.data))
        wanted, self.dirty = not self.dirty, True
        return wanted

    def flush(self, now: float) -> None:
        self.calls.append(("flush", b""))
        self.dirty = False

    def deliver(self, delivery: Delivery, now: float) -> None:
        self.calls.append(("deliver", delivery.data))


def test_a_lone_message_is_delivered_at_once_and_a_burst_is_queued_for_one_write(redis_server):
    """A message alone in its round of the loop goes to each websocket in one call; the
    messages Redis delivered together are queued, the first of them too, and written once,
    in order."""
    channel = f"ws4redis-test:{uuid.uuid4().hex}"
    burst = [f"m{number}".encode() for number in range(20)]

    async def hand_out() -> list[tuple[str, bytes]]:
        recorder = Recorder()
        try:
            await asyncio.wait_for(hub.get_hub().add(recorder, [channel]), 10)
            get_redis().publish(channel, "alone")
            await asyncio.wait_for(until(lambda: recorder.calls), 10)
            # Published while the loop is held here: Redis has sent all of them by the time
            # the hub reads, so they come in one round.
            with get_redis().pipeline(transaction=False) as pipeline:
                for message in burst:
                    pipeline.publish(channel, message)
                pipeline.execute()
            await asyncio.wait_for(until(lambda: ("flush", b"") in recorder.calls), 10)
        finally:
            await hub.close_hubs()
        return recorder.calls

    calls = on_a_loop(hand_out())
    assert calls == [("deliver", b"alone"), *(("push", m) for m in burst), ("flush", b"")]


def mget_calls(rdb) -> int:
    """How many MGETs the test Redis has run."""
    return rdb.info("commandstats").get("cmdstat_mget", {}).get("calls", 0)


def test_persisted_reads_asked_within_the_spacing_share_one_mget(rdb):
    """Clients connecting under load ask for their persisted messages one after the other:
    those that ask within the spacing after a read started wait and share the next MGET,
    instead of the first of them reading alone as soon as the read before was answered
    (a read costs the loop far more than an opening's share of it). The spacing here is
    far longer than a round trip to Redis, so the first read is answered before the others
    ask."""
    rdb.set("ws4redis-test:first", "1")
    rdb.set("ws4redis-test:second", "2")

    async def ask() -> tuple[list, list, list]:
        reads = server.PersistedReads(spacing=1.0)
        first = await reads.read(["ws4redis-test:first"])
        second = reads.read(["ws4redis-test:second", "ws4redis-test:none"])
        third = reads.read(["ws4redis-test:first", "ws4redis-test:second"])
        return first, await second, await third

    before = mget_calls(rdb)
    first, second, third = on_a_loop(ask())
    assert (first, second, third) == ([b"1"], [b"2", None], [b"1", b"2"])
    assert mget_calls(rdb) - before == 2


def test_a_batch_whose_read_fails_fails_each_opening_in_it_and_the_next_batch_reads(rdb):
    """Redis refuses the read of a batch: every opening of it gets the error (and is
    answered 503 by the server), none waits for ever, and the next batch is read once
    Redis answers again. The first read opens the spacing, so that the two asked after it
    share the failing batch."""
    rdb.set("ws4redis-test:first", "1")
    dead = {"host": "127.0.0.1", "port": free_port()}  # nothing listens there

    async def ask() -> tuple[list, list, list]:
        reads = server.PersistedReads(spacing=0.2)
        first = await reads.read(["ws4redis-test:first"])
        with override_settings(WS4REDIS_CONNECTION=dead):
            batch = asyncio.gather(
                *(reads.read(["ws4redis-test:first"]) for _ in range(2)), return_exceptions=True
            )
            # bounded: an opening left waiting fails the test instead of hanging it
            failures = await asyncio.wait_for(batch, 30)
        return first, failures, await asyncio.wait_for(reads.read(["ws4redis-test:first"]), 30)

    first, failures, later = on_a_loop(ask())
    assert first == later == [b"1"]
    assert [type(failure) for failure in failures] == [redis.exceptions.ConnectionError] * 2
