"""The uWSGI runtime as the behaviour tests run it, in a uWSGI process of its own.

A test's ``override_settings`` cannot reach another process, so the ``uwsgi_server``
fixture mirrors the overridden settings into a JSON file that this wrapper applies when a
request arrives. They stay applied until a request finds the file changed: websockets of
one gevent process run side by side, and one that ends must not undo the settings another
one still reads.
"""

import json
import os
from pathlib import Path

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "tests.support.settings")

from django.test import override_settings

from ws4redis.uwsgi_runserver import uWSGIWebsocketServer

OVERRIDES = Path(os.environ.get("WS4REDIS_TEST_OVERRIDES", "/nonexistent"))
server = uWSGIWebsocketServer()
applied: list = [{}, None]  # the overrides in force, and their override_settings


def application(environ, start_response):
    overrides = json.loads(OVERRIDES.read_text()) if OVERRIDES.exists() else {}
    if overrides != applied[0]:
        if applied[1] is not None:
            applied[1].disable()
        applied[:] = [overrides, override_settings(**overrides)]
        applied[1].enable()
    return server(environ, start_response)
