"""The uWSGI runtime as the behaviour tests run it, in a uWSGI process of its own.

A test's ``override_settings`` cannot reach another process, so the ``uwsgi_server``
fixture mirrors the overridden settings into a JSON file that this wrapper applies around
each websocket request.
"""

import json
import os
from pathlib import Path

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "tests.settings")

from django.test import override_settings

from ws4redis.uwsgi_runserver import uWSGIWebsocketServer

OVERRIDES = Path(os.environ.get("WS4REDIS_TEST_OVERRIDES", "/nonexistent"))
server = uWSGIWebsocketServer()


def application(environ, start_response):
    overrides = json.loads(OVERRIDES.read_text()) if OVERRIDES.exists() else {}
    with override_settings(**overrides):
        return server(environ, start_response)
