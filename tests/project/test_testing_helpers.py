"""ws4redis.testing, used as a project's own tests would use it."""

from __future__ import annotations

import asyncio
from concurrent.futures import ThreadPoolExecutor

from django.contrib.auth.models import User

from ws4redis.publisher import RedisPublisher
from ws4redis.testing import (
    WebsocketLiveServerTestCase,
    aconnect,
    capture_published,
    connect,
    serve_websockets,
)


class HelpersInALiveServerTestCase(WebsocketLiveServerTestCase):
    def setUp(self):
        User.objects.create_user("john", password="secret")

    def test_a_logged_in_client_gets_its_user_channel(self):
        self.assertTrue(self.client.login(username="john", password="secret"))
        with connect(self.live_server_url, "notes", "subscribe-user", client=self.client) as ws:
            with capture_published() as captured:
                RedisPublisher(facility="notes", users=["john"]).publish_message("for john")
            self.assertEqual(ws.recv(timeout=10), "for john")
        captured.assertPublished("for john", facility="notes", users=["john"])
        self.assertEqual(captured.on(facility="notes", users=["john"]), [b"for john"])
        with self.assertRaisesRegex(AssertionError, "ws4redis:user:mary:notes"):
            captured.assertPublished("for john", facility="notes", users=["john", "mary"])

    def test_an_anonymous_client_gets_no_user_channel(self):
        keys = ("subscribe-user", "subscribe-broadcast")
        with connect(self.live_server_url, "notes", *keys) as ws:
            RedisPublisher(facility="notes", users=["john"]).publish_message("for john")
            RedisPublisher(facility="notes", broadcast=True).publish_message("to all")
            self.assertEqual(ws.recv(timeout=10), "to all")  # delivered in order: not john's


def test_async_connect_with_pytest_django(live_server, rdb):
    serve_websockets(live_server.thread)

    async def exchange() -> str:
        async with aconnect(live_server.url, "notes", "subscribe-broadcast") as ws:
            await asyncio.to_thread(
                RedisPublisher(facility="notes", broadcast=True).publish_message, "to all"
            )
            return await asyncio.wait_for(ws.recv(), 10)

    with ThreadPoolExecutor(1) as thread:  # the test's own thread may run a loop already
        assert thread.submit(asyncio.run, exchange()).result() == "to all"


def test_capture_unwraps_history_and_keeps_order(rdb, settings):
    settings.WS4REDIS_HISTORY = {"kept": {"size": 10, "ttl": 60}}
    with capture_published() as captured:
        for text in ("one", "two"):
            RedisPublisher(facility="kept", broadcast=True).publish_message(text)
        RedisPublisher(facility="plain", broadcast=True).publish_message("three")
    assert captured.messages == [
        ("ws4redis:broadcast:kept", b"one"),
        ("ws4redis:broadcast:kept", b"two"),
        ("ws4redis:broadcast:plain", b"three"),
    ]
