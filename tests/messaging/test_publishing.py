"""The Django loop: publishing, storing, fetching, settings (docs/reference.md#settings,
#redis-layout, #identity)."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import threading

import pytest
from django.contrib.auth.models import User
from django.core.exceptions import ImproperlyConfigured
from django.db import transaction
from django.test import override_settings

from tests.support.clients import FACILITY, connected, login
from tests.support.servers import free_port, private_redis, redis_tls_files
from ws4redis import settings as ws_settings
from ws4redis.bus.pool import get_redis
from ws4redis.bus.process import per_process
from ws4redis.context_processors import default as context_processor
from ws4redis.publisher import RedisPublisher
from ws4redis.redis_store import SELF, RedisMessage


def test_channel_names_follow_the_documented_layout():
    publisher = RedisPublisher(
        facility="f", broadcast=True, users=["john"], groups=["chatters"], sessions=["abc"]
    )
    assert publisher._publishers == {
        "ws4redis:broadcast:f",
        "ws4redis:user:john:f",
        "ws4redis:group:chatters:f",
        "ws4redis:session:abc:f",
    }
    assert RedisPublisher.get_prefix() == "ws4redis:"
    # A ':' in a name cannot make it collide with another name's channel on another facility
    assert RedisPublisher(facility="c", groups=["a:b"])._publishers == {"ws4redis:group:a%3Ab:c"}
    assert RedisPublisher(facility="b:c", groups=["a"])._publishers == {"ws4redis:group:a:b:c"}
    assert RedisPublisher(facility="f", users=["50%"])._publishers == {"ws4redis:user:50%25:f"}
    with override_settings(WS4REDIS_PREFIX=None):
        assert RedisPublisher(facility="f", broadcast=True)._publishers == {"broadcast:f"}
        assert RedisPublisher.get_prefix() == ""
    with pytest.raises(TypeError, match=r"unknown audience argument.*: user$"):
        RedisPublisher(facility="f", user=["john"])  # misspelt: it would publish nowhere


def test_self_means_the_requester(users, rf):
    john = login("john")
    request = rf.get("/")
    request.user, request.session = users["john"], john.session
    publisher = RedisPublisher(
        facility="f", users=[SELF, "mary"], groups=[SELF], sessions=[SELF], request=request
    )
    assert publisher._publishers == {
        "ws4redis:user:john:f",
        "ws4redis:user:mary:f",
        "ws4redis:group:chatters:f",
        f"ws4redis:session:{john.session.session_key}:f",
    }


def test_self_without_a_user_adds_nothing(rf):
    request = rf.get("/")
    request.user = None
    assert RedisPublisher(facility="f", users=[SELF], request=request)._publishers == set()


def test_old_spellings_still_work_with_a_warning(users, rf):
    request = rf.get("/")
    request.user = users["mary"]
    with pytest.warns(DeprecationWarning):
        publisher = RedisPublisher(facility="f", users=True, groups="chatters", request=request)
    assert publisher._publishers == {"ws4redis:user:mary:f", "ws4redis:group:chatters:f"}


@pytest.mark.parametrize("message", [RedisMessage("hi"), "hi", b"hi"], ids=type)
def test_publish_accepts_redismessage_str_and_bytes(rdb, message):
    RedisPublisher(facility=FACILITY, broadcast=True).publish_message(message)
    assert rdb.get(f"ws4redis:broadcast:{FACILITY}") == b"hi"


def test_publish_refuses_other_types(rdb):
    with pytest.raises(ValueError, match="RedisMessage, str or bytes"):
        RedisPublisher(facility=FACILITY, broadcast=True).publish_message(42)


def test_expire_argument_setting_and_zero(rdb):
    key = f"ws4redis:broadcast:{FACILITY}"
    publisher = RedisPublisher(facility=FACILITY, broadcast=True)
    publisher.publish_message("default")
    assert 0 < rdb.ttl(key) <= 10  # WS4REDIS_EXPIRE of the test settings
    publisher.publish_message("longer", expire=500)
    assert 10 < rdb.ttl(key) <= 500
    rdb.delete(key)
    publisher.publish_message("kept nowhere", expire=0)
    assert rdb.get(key) is None
    with override_settings(WS4REDIS_EXPIRE=None):
        publisher.publish_message("kept nowhere either")
    assert rdb.get(key) is None


def test_pipeline_publish_matches_publish(rdb):
    publisher = RedisPublisher(facility=FACILITY, broadcast=True, users=["john", "mary"])
    with rdb.pubsub() as pubsub:
        pubsub.subscribe(f"ws4redis:user:john:{FACILITY}")
        receivers = publisher.pipeline_publish_message("piped", expire=100)
    assert receivers == {
        f"ws4redis:broadcast:{FACILITY}": 0,
        f"ws4redis:user:john:{FACILITY}": 1,
        f"ws4redis:user:mary:{FACILITY}": 0,
    }
    assert rdb.get(f"ws4redis:user:mary:{FACILITY}") == b"piped"


def test_fetch_message_prefers_session_then_user_then_group_then_broadcast(rdb, users, rf):
    john = login("john")
    request = rf.get("/")
    request.user, request.session = users["john"], john.session
    fetch = RedisPublisher().fetch_message
    assert fetch(request, FACILITY) is None
    audiences = [
        ("broadcast", {"broadcast": True}),
        ("group", {"groups": ["chatters"]}),
        ("user", {"users": ["john"]}),
        ("session", {"sessions": [SELF]}),
    ]
    for kind, audience in audiences:
        RedisPublisher(facility=FACILITY, request=request, **audience).publish_message(kind)
        assert fetch(request, FACILITY) == kind.encode()
    for kind, _ in audiences:
        assert fetch(request, FACILITY, kind) == kind.encode()
    with pytest.raises(ValueError, match="audience"):
        fetch(request, FACILITY, "everybody")


def test_redismessage_drops_heartbeats_and_unwraps_pubsub_replies():
    assert RedisMessage([b"message", b"chan", b"data"]) == b"data"
    assert RedisMessage([b"subscribe", b"chan", 1]) is None
    with override_settings(WS4REDIS_HEARTBEAT="--hb--"):
        assert RedisMessage("--hb--") is None
        assert RedisMessage(b"--hb--") is None
        assert RedisMessage("ok") == b"ok"


def test_one_pool_per_process(rdb):
    first, second = RedisPublisher(broadcast=True), RedisPublisher(users=["x"])
    assert first._connection is second._connection is get_redis()
    pool = get_redis().connection_pool
    first.publish_message("warm up")
    opened = pool._created_connections
    for n in range(20):
        first.publish_message(f"m{n}")
    assert pool._created_connections == opened


def test_a_forked_worker_makes_its_own_per_process_values():
    """A worker forked from a process that already made one (``runwebsocket --workers``,
    uWSGI) gets its own, and can make one even where a thread of its parent was making it
    as it forked (that thread and its lock stay behind); the parent keeps its own."""
    parent_pid = os.getpid()
    made = per_process(object)
    parent = made()
    holding, release = threading.Event(), threading.Event()

    def make_slowly() -> object:
        if os.getpid() == parent_pid:  # the parent's maker: holds the lock until released
            holding.set()
            release.wait(10)
        return object()

    slow = per_process(make_slowly)
    maker = threading.Thread(target=slow)
    maker.start()
    holding.wait(10)
    pid = os.fork()
    if pid == 0:  # the child: exit 0 only if both hold; a lock never released ends it
        signal.alarm(10)
        os._exit(0 if made() is not parent and slow() is not None else 1)
    release.set()
    maker.join()
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    assert made() is parent


def test_context_processor(rf):
    with override_settings(WS4REDIS_HEARTBEAT="--hb</script>--"):
        context = context_processor(rf.get("/", secure=True))
    assert context["WEBSOCKET_URI"] == "wss://testserver/ws/"
    assert context["EVENT_STREAM_URI"] == "https://testserver/ws/"
    assert context_processor(rf.get("/"))["EVENT_STREAM_URI"] == "http://testserver/ws/"
    assert context["WS4REDIS_HEARTBEAT"] == '"--hb\\u003c/script>--"'
    assert context_processor(rf.get("/"))["WS4REDIS_HEARTBEAT"] == "null"


def test_groups_are_stored_in_session_at_login(users):
    assert login("mary").session["ws4redis:memberof"] == ["chatters"]
    assert login("eve").session["ws4redis:memberof"] == []


# -- settings ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("WS4REDIS_EXPIRE", "3600"),
        ("WS4REDIS_CONNECTION", "localhost"),
        ("WEBSOCKET_URL", "ws"),
        ("WS4REDIS_HEARTBEAT", 5),
        ("WS4REDIS_ALLOWED_CHANNELS", 3),
        ("WS4REDIS_MAX_MESSAGE_SIZE", -1),
    ],
)
def test_wrong_type_names_the_setting(name, value):
    with override_settings(**{name: value}):
        ((named, message),) = ws_settings.problems()
        assert named == name and name in message
        with pytest.raises(ImproperlyConfigured, match=name):
            ws_settings.get(name)


def test_wrong_type_stops_manage_py_with_a_system_check_error():
    script = (
        "import django; from django.conf import settings;"
        "settings.configure(INSTALLED_APPS=['django.contrib.auth',"
        "'django.contrib.contenttypes', 'ws4redis'], WS4REDIS_EXPIRE='soon');"
        "django.setup(); from django.core.management import execute_from_command_line;"
        "execute_from_command_line(['manage.py', 'check'])"
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert result.returncode != 0
    assert "ws4redis.E001" in result.stderr and "WS4REDIS_EXPIRE must be" in result.stderr


def test_unknown_connection_argument_is_reported(rdb):
    with override_settings(WS4REDIS_CONNECTION={"hostname": "x"}):
        with pytest.raises(ImproperlyConfigured, match="WS4REDIS_CONNECTION"):
            RedisPublisher(broadcast=True)


# -- connection settings against private servers -----------------------------------------


def publish_and_read(expected_key: str = f"ws4redis:broadcast:{FACILITY}") -> bytes | None:
    RedisPublisher(facility=FACILITY, broadcast=True).publish_message("private")
    return get_redis().get(expected_key)


def test_password_and_db(tmp_path):
    port = free_port()
    with private_redis(
        tmp_path, "--port", str(port), "--requirepass", "s3cret", port=port, password="s3cret"
    ):
        with override_settings(WS4REDIS_CONNECTION={"port": port, "password": "s3cret", "db": 3}):
            assert publish_and_read() == b"private"
            assert get_redis().connection_pool.connection_kwargs["db"] == 3


def test_unix_socket_path(tmp_path):
    path = str(tmp_path / "redis.sock")
    with private_redis(tmp_path, "--port", "0", "--unixsocket", path, unix_socket_path=path):
        with override_settings(WS4REDIS_CONNECTION={"unix_socket_path": path}):
            assert publish_and_read() == b"private"


def test_ssl(tmp_path):
    cert, key = redis_tls_files(tmp_path, "localhost")
    port = free_port()
    tls = {"host": "localhost", "port": port, "ssl": True, "ssl_ca_certs": str(cert)}
    with private_redis(
        tmp_path, "--port", "0", "--tls-port", str(port), "--tls-cert-file", str(cert),
        "--tls-key-file", str(key), "--tls-ca-cert-file", str(cert), "--tls-auth-clients", "no",
        **tls,
    ):  # fmt: skip
        with override_settings(WS4REDIS_CONNECTION=tls):
            assert publish_and_read() == b"private"


def test_context_processor_with_separate_websocket_host(rf):
    with override_settings(WS4REDIS_WEBSOCKET_HOST="wss://ws.example.com/"):
        context = context_processor(rf.get("/"))
    assert context["WEBSOCKET_URI"] == "wss://ws.example.com/ws/"
    assert context["EVENT_STREAM_URI"] == "https://ws.example.com/ws/"


def test_publish_on_commit_waits_for_the_commit_and_drops_a_rollback(socket_server):
    """A message about a saved row goes out once the row is committed, and not at all when
    the transaction rolls back; a plain publish inside the transaction goes out at once."""
    publisher = RedisPublisher(facility=FACILITY, broadcast=True)
    with connected(socket_server, "subscribe-broadcast") as ws:
        with contextlib.suppress(RuntimeError), transaction.atomic():
            User.objects.create_user("ghost")
            publisher.publish_on_commit("about ghost")
            raise RuntimeError("roll back")
        with transaction.atomic():
            User.objects.create_user("kept")
            publisher.publish_on_commit("about kept")
            publisher.publish_message("at once")
            assert ws.recv() == "at once"
        assert ws.recv() == "about kept"  # not "about ghost": it was never published
        assert not User.objects.filter(username="ghost").exists()
