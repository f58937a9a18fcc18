"""The documented way to test pages with websockets: Django's own LiveServerTestCase."""

from __future__ import annotations

import requests
import websocket
from django.conf import settings
from django.test import LiveServerTestCase

from tests.support.clients import chat_line
from ws4redis.bus.pool import get_redis
from ws4redis.django_runserver import application
from ws4redis.publisher import RedisPublisher


class ChatLiveServerTests(LiveServerTestCase):
    fixtures = ("data.json",)  # the example project's admin, john and mary

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.server_thread.httpd.set_app(application)

    def setUp(self):
        get_redis().flushdb()
        self.ws_url = self.live_server_url.replace("http:", "ws:", 1) + "/ws/foobar"

    def test_page_and_websocket_from_one_server(self):
        browser = requests.Session()
        self.assertEqual(browser.get(self.live_server_url + "/chat/", timeout=10).status_code, 200)
        cookie = f"{settings.SESSION_COOKIE_NAME}={browser.cookies['sessionid']}"
        ws = websocket.create_connection(
            self.ws_url + "?subscribe-session", header=[f"Cookie: {cookie}"], timeout=10
        )
        self.assertIn("Welcome", chat_line(ws))  # the view's stored publish
        response = browser.get(self.live_server_url + "/chat/", timeout=10)
        self.assertEqual(response.status_code, 200)
        self.assertIn("Welcome", chat_line(ws))  # the view's publish reached the websocket
        ws.close()
        self.assertFalse(ws.connected)

    def test_user_channel_with_fixture_login(self):
        self.assertTrue(self.client.login(username="mary", password="secret"))
        cookie = f"{settings.SESSION_COOKIE_NAME}={self.client.cookies['sessionid'].value}"
        ws = websocket.create_connection(
            self.ws_url + "?subscribe-user&subscribe-group", header=[f"Cookie: {cookie}"]
        )
        RedisPublisher(facility="foobar", users=["mary"]).publish_message("to mary")
        self.assertEqual(ws.recv(), "to mary")
        RedisPublisher(facility="foobar", groups=["chatters"]).publish_message("to chatters")
        self.assertEqual(ws.recv(), "to chatters")
        ws.close()
