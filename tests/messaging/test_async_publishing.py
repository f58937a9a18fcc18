"""Publishing from async code (docs/reference.md#publishing-from-async-code): async views
under uvicorn, the event loop kept free while Redis stalls, and the same history, at-most-once
rules and errors as the blocking calls."""

from __future__ import annotations

import asyncio
import concurrent.futures
import json
import threading
import urllib.error
import urllib.request
from collections.abc import Callable, Coroutine, Iterator
from typing import Any

import pytest
import redis
import redis.asyncio
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.test import override_settings
from django.urls import path

from tests.support.clients import FACILITY, Server, connected, login, session_cookie
from tests.support.servers import free_port, private_redis, wait_until
from ws4redis.bus import commands
from ws4redis.bus.commands import NotSent, Unknown
from ws4redis.bus.pool import connection_kwargs
from ws4redis.publisher import RedisPublisher
from ws4redis.redis_store import PublishError
from ws4redis.testing import redis_cluster

CHANNEL = f"ws4redis:broadcast:{FACILITY}"


async def apublish_view(request: HttpRequest) -> HttpResponse:
    """Publishes the ``message`` parameter to the broadcast audience, awaiting Redis."""
    publisher = RedisPublisher(facility=FACILITY, broadcast=True)
    try:
        receivers = await publisher.apublish_message(request.GET["message"])
    except PublishError as exc:
        return JsonResponse({"failed": sorted(exc.outcome.failed)}, status=503)
    return JsonResponse(receivers)


async def afetch_view(request: HttpRequest) -> HttpResponse:
    """The stored message this request would receive first (session, user, groups, all)."""
    message = await RedisPublisher().afetch_message(request, FACILITY)
    return HttpResponse(message or b"(none)")


async def ping_view(request: HttpRequest) -> HttpResponse:
    """Answers on the event loop without Redis: it shows that the loop is free."""
    return HttpResponse("pong")


urlpatterns = [
    path("apublish/", apublish_view),
    path("afetch/", afetch_view),
    path("ping/", ping_view),
]


@pytest.fixture
def asgi(asgi_server: str, rdb: redis.Redis) -> Iterator[Server]:
    """uvicorn serving this module's async views and the websockets, in this process."""
    with override_settings(ROOT_URLCONF=__name__):
        http_url = asgi_server.replace("ws:", "http:", 1)
        yield Server("asgi", http_url, asgi_server, lambda: "")


def get(url: str, *headers: str) -> tuple[int, bytes]:
    """GET ``url`` (headers as ``Name: value`` lines): the status and the body."""
    request = urllib.request.Request(url, headers=dict(h.split(": ", 1) for h in headers))
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as error:
        return error.code, error.read()


def in_a_thread(function: Callable[..., Any], *args: Any) -> Any:
    """``function(*args)`` in a thread of its own: the browser tests' Playwright keeps an
    event loop running in the main thread, where no other loop may run."""
    with concurrent.futures.ThreadPoolExecutor(1) as thread:
        return thread.submit(function, *args).result()


def on_a_loop(coroutine: Coroutine[Any, Any, Any]) -> Any:
    """Run ``coroutine`` to its end on a new event loop, as async code runs."""
    return in_a_thread(asyncio.run, coroutine)


def publish(how: str, publisher: RedisPublisher, message: str, **kwargs: Any) -> dict[str, int]:
    """``publish_message`` (``sync``) or ``await apublish_message`` on a loop (``async``)."""
    if how == "sync":
        return publisher.publish_message(message, **kwargs)
    return on_a_loop(publisher.apublish_message(message, **kwargs))


def heard(listener: redis.client.PubSub) -> list[bytes]:
    """What ``listener`` received up to a marker published now on the same Redis: Redis
    delivers in order, so this is everything published before, without waiting."""
    redis.Redis(connection_pool=listener.connection_pool).publish(CHANNEL, "--marker--")
    messages = []
    while (message := listener.get_message(timeout=10)) is None or message["data"] != b"--marker--":
        if message is not None:
            messages.append(message["data"])
    return messages


both = pytest.mark.parametrize("how", ["sync", "async"])


@pytest.fixture
def short_retries(monkeypatch: pytest.MonkeyPatch) -> None:
    """Refused or unsent commands are retried for 0.3 s instead of 5 s (a cluster's
    failover), so that a Redis that stays down fails the publish soon."""
    monkeypatch.setattr(commands, "RETRY_FOR", 0.3)


def test_an_async_view_publishes_to_a_websocket(asgi):
    with connected(asgi, "subscribe-broadcast") as ws:
        status, body = get(f"{asgi.http_url}/apublish/?message=hello")
        assert (status, json.loads(body)) == (200, {CHANNEL: 1})
        assert ws.recv() == "hello"


def test_an_async_view_fetches_the_requesters_stored_message(asgi, users):
    RedisPublisher(facility=FACILITY, broadcast=True).publish_message("to all")
    RedisPublisher(facility=FACILITY, users=["john"]).publish_message("to john")
    john = login("john")
    assert get(f"{asgi.http_url}/afetch/", session_cookie(john)) == (200, b"to john")
    assert get(f"{asgi.http_url}/afetch/") == (200, b"to all")  # anonymous


def test_a_publish_waiting_for_a_paused_redis_leaves_the_loop_free(asgi, tmp_path):
    port = free_port()
    with (
        private_redis(tmp_path, port=port) as _,
        override_settings(WS4REDIS_CONNECTION={"host": "127.0.0.1", "port": port}),
    ):
        admin = redis.Redis(port=port)
        admin.execute_command("CLIENT", "PAUSE", 120_000, "WRITE")
        first: dict[str, tuple[int, bytes]] = {}
        waiting = threading.Thread(
            target=lambda: first.update(reply=get(f"{asgi.http_url}/apublish/?message=m"))
        )
        waiting.start()
        try:
            # the view's PUBLISH has reached Redis, which holds it: the view awaits it
            wait_until(lambda: admin.info("clients")["blocked_clients"] == 1, "a held publish")
            assert get(f"{asgi.http_url}/ping/") == (200, b"pong")  # served meanwhile
            assert "reply" not in first  # and the publish is still waiting
        finally:
            admin.execute_command("CLIENT", "UNPAUSE")
            waiting.join(30)
        status, body = first["reply"]
        assert (status, json.loads(body)) == (200, {CHANNEL: 0})


@both
def test_history_positions_are_shared_by_both_paths(rdb, how):
    publisher = RedisPublisher(facility=FACILITY, broadcast=True)
    with override_settings(WS4REDIS_HISTORY={FACILITY: {"size": 10, "ttl": 60}}):
        listener = rdb.pubsub(ignore_subscribe_messages=True)
        listener.subscribe(CHANNEL)
        wait_until(lambda: rdb.pubsub_numsub(CHANNEL)[0][1] == 1, "the subscription")
        publisher.publish_message("one")
        assert publish(how, publisher, "two") == {CHANNEL: 1}
        assert publish(how, publisher, "two") == {CHANNEL: 1}  # twice: two entries
        window = publisher.history()[CHANNEL]
        assert window.messages == [(1, b"one"), (2, b"two"), (3, b"two")]
        assert [m.rsplit(b":", 2)[-2:] for m in heard(listener)] == [
            [b"1", b"one"],
            [b"2", b"two"],
            [b"3", b"two"],
        ]  # published in the envelope with the stored position
        assert rdb.get(CHANNEL) == b"two"
        listener.close()


@both
def test_a_refused_store_is_not_published_again(tmp_path, short_retries, how):
    """A replica takes PUBLISH but refuses SET (READONLY): the store is retried, the publish
    is not, and the outcome says both."""
    port = free_port()
    replica_of = ("--replicaof", "127.0.0.1", str(free_port()))
    with (
        private_redis(tmp_path, *replica_of, port=port) as _,
        override_settings(WS4REDIS_CONNECTION={"host": "127.0.0.1", "port": port}),
    ):
        listener = redis.Redis(port=port).pubsub(ignore_subscribe_messages=True)
        listener.subscribe(CHANNEL)
        publisher = RedisPublisher(facility=FACILITY, broadcast=True)
        with pytest.raises(PublishError, match="published but not stored") as raised:
            publish(how, publisher, "once", expire=60)
        outcome = raised.value.outcome
        assert outcome.published == {CHANNEL: 1} and not outcome.failed
        assert isinstance(outcome.unstored[CHANNEL], redis.exceptions.ReadOnlyError)
        assert heard(listener) == [b"once"]
        listener.close()


@both
def test_redis_down_gives_the_same_publish_error(settings, short_retries, how):
    settings.WS4REDIS_CONNECTION = {"host": "127.0.0.1", "port": free_port()}
    publisher = RedisPublisher(facility=FACILITY, broadcast=True, users=["john"])
    with pytest.raises(PublishError, match=r"not published on 2 channel\(s\)") as raised:
        publish(how, publisher, "lost")
    outcome = raised.value.outcome
    channels = {CHANNEL, f"ws4redis:user:john:{FACILITY}"}
    assert outcome.published == {}
    assert set(outcome.failed) == set(outcome.unstored) == channels  # neither sent nor stored
    assert all(
        isinstance(e, NotSent) for e in [*outcome.failed.values(), *outcome.unstored.values()]
    )


def test_a_publish_whose_connection_is_lost_after_sending_is_not_sent_again(tmp_path):
    """Redis holds the publish (paused), then its connection is killed: whether Redis ran it
    is unknown, so it is reported as such and not sent again."""
    port = free_port()
    with (
        private_redis(tmp_path, port=port) as _,
        override_settings(WS4REDIS_CONNECTION={"host": "127.0.0.1", "port": port}),
    ):
        admin = redis.Redis(port=port)
        listener = admin.pubsub(ignore_subscribe_messages=True)
        listener.subscribe(CHANNEL)
        admin.execute_command("CLIENT", "PAUSE", 120_000, "WRITE")

        async def publish_and_kill() -> PublishError:
            publisher = RedisPublisher(facility=FACILITY, broadcast=True)
            task = asyncio.create_task(publisher.apublish_message("maybe", expire=0))
            while admin.info("clients")["blocked_clients"] == 0:
                await asyncio.sleep(0.02)  # until Redis holds the publish
            admin.execute_command("CLIENT", "KILL", "TYPE", "normal", "SKIPME", "yes")
            with pytest.raises(PublishError) as raised:
                await task
            return raised.value

        try:
            error = on_a_loop(publish_and_kill())
        finally:
            admin.execute_command("CLIENT", "UNPAUSE")
        assert isinstance(error.outcome.failed[CHANNEL], Unknown)
        assert heard(listener) == []
        listener.close()


def test_a_cancelled_publish_gives_its_connection_back_and_publishes_nothing(tmp_path):
    """A view cancelled (its client went away) while Redis holds its publish: the connection,
    with a reply on the way, is closed and returned to the pool (of one connection here), so
    the next publish has one, and Redis dropped the cancelled command."""
    port = free_port()
    with (
        private_redis(tmp_path, port=port) as _,
        override_settings(
            WS4REDIS_CONNECTION={"host": "127.0.0.1", "port": port, "max_connections": 1}
        ),
    ):
        admin = redis.Redis(port=port)
        listener = admin.pubsub(ignore_subscribe_messages=True)
        listener.subscribe(CHANNEL)
        admin.execute_command("CLIENT", "PAUSE", 120_000, "WRITE")
        publisher = RedisPublisher(facility=FACILITY, broadcast=True)

        async def cancel_then_publish() -> dict[str, int]:
            task = asyncio.create_task(publisher.apublish_message("never", expire=0))
            while admin.info("clients")["blocked_clients"] == 0:
                await asyncio.sleep(0.02)  # until Redis holds the publish
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
            closed = lambda: admin.info("clients")["blocked_clients"] == 0  # noqa: E731
            await asyncio.to_thread(wait_until, closed, "the cancelled publish's connection")
            admin.execute_command("CLIENT", "UNPAUSE")
            return await publisher.apublish_message("after", expire=0)

        try:
            assert on_a_loop(cancel_then_publish()) == {CHANNEL: 1}
        finally:
            admin.execute_command("CLIENT", "UNPAUSE")
        assert heard(listener) == [b"after"]
        listener.close()


def test_async_methods_use_the_asyncio_client_they_were_given(rdb):
    elsewhere = {**connection_kwargs(), "db": 14}  # not the database of the settings
    other = redis.Redis(**elsewhere)
    other.delete(CHANNEL)

    async def publish_on_it() -> dict[str, int]:
        client = redis.asyncio.Redis(**elsewhere)
        publisher = RedisPublisher(connection=client, facility=FACILITY, broadcast=True)
        try:
            return await publisher.apublish_message("given")
        finally:
            await client.aclose()

    assert on_a_loop(publish_on_it()) == {CHANNEL: 0}
    assert (rdb.get(CHANNEL), other.get(CHANNEL)) == (None, b"given")
    other.delete(CHANNEL)


def test_async_methods_refuse_a_blocking_client_they_were_given(rdb):
    publisher = RedisPublisher(connection=rdb, facility=FACILITY, broadcast=True)
    with pytest.raises(TypeError, match=r"need a redis\.asyncio client"):
        on_a_loop(publisher.apublish_message("x"))


def test_blocking_methods_refuse_an_asyncio_client_they_were_given(rdb):
    """Rather than a coroutine never awaited deep inside redis-py, the caller is told which
    methods fit the client it passed; nothing is published."""
    client = redis.asyncio.Redis(**connection_kwargs())
    publisher = RedisPublisher(connection=client, facility=FACILITY, broadcast=True)
    for call in (
        lambda: publisher.publish_message("x"),
        lambda: publisher.fetch_message(None, FACILITY),
        lambda: publisher.history(),
    ):
        with pytest.raises(TypeError, match="await its async twins"):
            call()
    assert rdb.get(CHANNEL) is None


def test_on_commit_publishes_after_the_commit_only(rdb, transactional_db):
    from asgiref.sync import async_to_sync
    from django.db import connection, transaction

    publisher = RedisPublisher(facility=FACILITY, broadcast=True)

    def in_transaction(message: str, fail: bool) -> None:
        """Sync code in a transaction that calls async code, which publishes on commit."""
        try:
            with transaction.atomic():
                async_to_sync(publisher.apublish_on_commit)(message)
                assert rdb.get(CHANNEL) is None  # not before the commit
                if fail:
                    raise RuntimeError("rolled back")
        finally:
            connection.close()  # this thread's

    with pytest.raises(RuntimeError):
        in_a_thread(in_transaction, "rolled back", True)
    assert rdb.get(CHANNEL) is None
    in_a_thread(in_transaction, "committed", False)
    assert rdb.get(CHANNEL) == b"committed"
    on_a_loop(publisher.apublish_on_commit("outside"))  # no transaction: at once
    assert rdb.get(CHANNEL) == b"outside"


def test_a_cluster_routes_each_async_publish_to_its_slot_once(tmp_path, short_retries):
    names = [f"user-{n}" for n in range(12)]  # their channels spread over the shards
    with (
        redis_cluster(workdir=tmp_path) as cluster,
        override_settings(
            WS4REDIS_CONNECTION=cluster.connection,
            WS4REDIS_HISTORY={FACILITY: {"size": 10, "ttl": 60}},
        ),
    ):
        channels = {f"ws4redis:user:{name}:{FACILITY}" for name in names}
        assert len({cluster.master_of(channel) for channel in channels}) > 1
        publisher = RedisPublisher(facility=FACILITY, users=names)
        for message in ("one", "two"):
            assert publish("async", publisher, message, expire=60) == dict.fromkeys(channels, 0)
        kept = publisher.history()
        assert {channel: kept[channel].messages for channel in channels} == {
            channel: [(1, b"one"), (2, b"two")] for channel in channels
        }
        publish("async", RedisPublisher(facility=FACILITY, broadcast=True), "all", expire=60)
        fetched = on_a_loop(RedisPublisher().afetch_message(None, FACILITY))
        assert fetched == b"all"  # read from the broadcast channel's shard
