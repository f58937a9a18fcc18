"""Fixtures: a real Redis, a real server per runtime, real websocket clients."""

from __future__ import annotations

import contextlib
import json
import os
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
from django.conf import settings as django_settings
from django.contrib.auth.models import Group, User
from django.test import override_settings

from tests.support.clients import (
    SOCKET_RUNTIMES,
    Server,
)
from tests.support.servers import InProcessServer, in_process_server, running_uwsgi
from ws4redis import settings as ws_settings
from ws4redis.bus.pool import get_redis
from ws4redis.django_runserver import application
from ws4redis.testing import redis_server as redis_server_process


@pytest.fixture(scope="session", autouse=True)
def redis_server() -> Iterator[redis.Redis]:
    """The suite's own Redis: the private one ``scripts/test`` started (``REDIS_PORT``), else
    one started here for the session. Never one somebody else runs: every test empties its
    database. Servers started later (uWSGI, ASGI) find it through the environment."""
    if "REDIS_PORT" in os.environ or "REDIS_HOST" in os.environ:
        yield answering(redis.Redis(**ws_settings.WS4REDIS_CONNECTION_ARGS))
        return
    with contextlib.ExitStack() as stack:
        try:
            port = stack.enter_context(redis_server_process()).port
        except RuntimeError as exc:  # no binary, or it did not start: the message says which
            pytest.exit(str(exc), returncode=2)
        os.environ.update(REDIS_HOST="127.0.0.1", REDIS_PORT=str(port))
        for name in ("REDIS_HOST", "REDIS_PORT"):
            stack.callback(os.environ.pop, name)
        connection = {**django_settings.WS4REDIS_CONNECTION, "host": "127.0.0.1", "port": port}
        session_redis = {**connection, "prefix": "session"}
        stack.enter_context(
            override_settings(WS4REDIS_CONNECTION=connection, SESSION_REDIS=session_redis)
        )
        yield answering(redis.Redis(**ws_settings.WS4REDIS_CONNECTION_ARGS))


def answering(client: redis.Redis) -> redis.Redis:
    """``client``, once its Redis answers; the whole suite needs it, so fail loudly without."""
    try:
        client.ping()
    except redis.ConnectionError as exc:
        pytest.exit(
            f"No Redis answers at {ws_settings.WS4REDIS_CONNECTION_ARGS}: {exc}. "
            "Unset REDIS_HOST and REDIS_PORT: the suite then starts a private redis-server.",
            returncode=2,
        )
    return client


@pytest.fixture
def rdb(redis_server: redis.Redis) -> Iterator[redis.Redis]:
    """The test Redis database, emptied before each test."""
    redis_server.flushdb()
    yield get_redis()


@pytest.fixture(scope="session")
def asyncio_server(redis_server) -> Iterator[InProcessServer]:
    with in_process_server() as running:
        yield running


@pytest.fixture(scope="session")
def asgi_server(redis_server) -> Iterator[str]:
    """``ws4redis.asgi.application`` under uvicorn, in a thread of this process."""
    import uvicorn

    from ws4redis.asgi import application as asgi_application

    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    config = uvicorn.Config(asgi_application, log_level="warning", lifespan="on")
    uvicorn_server = uvicorn.Server(config)
    thread = threading.Thread(target=uvicorn_server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not uvicorn_server.started:
        assert time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.02)
    yield f"ws://127.0.0.1:{sock.getsockname()[1]}"
    uvicorn_server.should_exit = True
    thread.join(10)


@pytest.fixture(scope="session")
def uwsgi_server(redis_server, django_db_setup, tmp_path_factory) -> Iterator[tuple[str, Path]]:
    """``ws4redis.uwsgi_runserver`` under a real uWSGI with gevent (tests/support/uwsgi_app.py):
    its ws:// base and its log file."""
    from django.test.signals import setting_changed

    overrides_file = tmp_path_factory.mktemp("uwsgi") / "overrides.json"
    overrides: dict = {}

    def mirror(setting, value, enter, **kwargs) -> None:
        if enter:
            overrides[setting] = value
        else:
            overrides.pop(setting, None)
        serializable = {}
        for name, item in overrides.items():
            with contextlib.suppress(TypeError):
                serializable[name] = json.loads(json.dumps(item))
        overrides_file.write_text(json.dumps(serializable))

    setting_changed.connect(mirror)
    log = tmp_path_factory.mktemp("uwsgi-log") / "uwsgi.log"
    with running_uwsgi(log, WS4REDIS_TEST_OVERRIDES=str(overrides_file)) as port:
        yield f"ws://127.0.0.1:{port}", log
    setting_changed.disconnect(mirror)


"""Runtimes that own the socket, and so the handshake and the close handshake."""


def _server(request, live_server) -> Server:
    live_server.thread.httpd.set_app(application)
    runtime = request.param
    log = request.getfixturevalue("caplog")
    if runtime == "runserver":
        ws_base = live_server.url.replace("http:", "ws:", 1)
    elif runtime == "asyncio":
        ws_base = request.getfixturevalue("asyncio_server").ws_base
    elif runtime == "asgi":
        ws_base = request.getfixturevalue("asgi_server")
    else:
        ws_base, log_file = request.getfixturevalue("uwsgi_server")
        start = log_file.stat().st_size  # the server lives for the session: this test's part

        def uwsgi_log() -> str:
            return log_file.read_bytes()[start:].decode(errors="replace")

        return Server(runtime, live_server.url, ws_base, uwsgi_log)
    return Server(runtime, live_server.url, ws_base, lambda: log.text)


@pytest.fixture(params=[*SOCKET_RUNTIMES, "asgi", "uwsgi"])
def server(request, live_server, rdb) -> Server:
    """The application under every websocket runtime; pages always come from Django.

    A test marked ``not_under(runtime, reason=...)`` is skipped for that runtime, saying why.
    """
    for mark in request.node.iter_markers("not_under"):
        if request.param in mark.args:
            pytest.skip(f"not under {request.param}: {mark.kwargs['reason']}")
    return _server(request, live_server)


@pytest.fixture(params=SOCKET_RUNTIMES)
def socket_server(request, live_server, rdb) -> Server:
    """Runtimes whose handshake and close handshake are ours. Under ASGI the server answers
    them itself: its statuses, and a close answered before the app has seen it."""
    return _server(request, live_server)


@pytest.fixture
def users(transactional_db) -> dict[str, User]:
    """The example fixture's people: john and mary in group chatters, password secret."""
    chatters = Group.objects.create(name="chatters")
    people = {}
    for name in ("john", "mary"):
        people[name] = User.objects.create_user(name, password="secret")
        people[name].groups.add(chatters)
    people["eve"] = User.objects.create_user("eve", password="secret")
    return people
