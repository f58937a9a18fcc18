"""What is made of the settings once is made again when a setting changes."""

from __future__ import annotations

from django.test import override_settings

from ws4redis.bus.pool import configured_connection
from ws4redis.runtimes.opening import read_options


def test_the_options_of_an_opening_are_made_once_and_again_after_a_change():
    before = read_options()
    assert read_options() is before
    with override_settings(WS4REDIS_HEARTBEAT="beat", ALLOWED_HOSTS=["example.com"]):
        changed = read_options()
        assert changed.heartbeat == "beat"
        assert changed.handshake.allowed_hosts == ("example.com",)
    assert read_options() == before and read_options() is not changed


def test_the_connection_follows_ws4redis_connection():
    kwargs, key = configured_connection()
    with override_settings(WS4REDIS_CONNECTION={**kwargs, "db": 3}):
        assert configured_connection()[0]["db"] == 3
        assert configured_connection()[1] != key
    assert configured_connection() == (kwargs, key)
