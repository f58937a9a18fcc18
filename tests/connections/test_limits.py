"""Bounds on what one anonymous request may make the server do, over real websockets on
every runtime (docs/reference.md#limits-and-safety): positions out of range, facility names
and channel counts, each refused with a status and a body that names the limit."""

from __future__ import annotations

import logging

import pytest
import websocket
from django.contrib.auth.models import Group
from django.test import override_settings

from tests.support.clients import Server, connected, login, session_cookie
from ws4redis.core.stats import STATS


def refusal(server: Server, query: str, facility: str = "kept", **kwargs) -> tuple[int, str]:
    """The status and body a websocket request is refused with."""
    with pytest.raises(websocket.WebSocketBadStatusException) as refused:
        server.connect(query, facility=facility, **kwargs)
    return refused.value.status_code, refused.value.resp_body.decode()


@pytest.mark.parametrize(
    ("since", "named"),
    [
        ("broadcast:abcd:100000000000000", "offset 100000000000000"),
        (f"broadcast:abcd:{2**53 + 1}", f"offset {2**53 + 1}"),
        ("broadcast:not-an-epoch:1", "not an epoch"),
        (f"broadcast:{'e' * 200}:1", "not an epoch"),
    ],
    ids=["the-issue's", "over-2**53", "punctuated-epoch", "long-epoch"],
)
def test_since_out_of_range_is_400_not_a_fake_outage(server, rdb, caplog, since, named):
    """A position no channel can have is the client's mistake: 400 naming it, never the
    503 "Redis is unavailable" (with an ERROR logged and counted) that reaching Lua gave."""
    outages = STATS.handshakes[503]
    with override_settings(WS4REDIS_HISTORY={"kept": {"size": 10, "ttl": 60}}):
        with caplog.at_level(logging.INFO):
            status, body = refusal(server, f"subscribe-broadcast&recover&since={since}")
    assert status == 400 and named in body and "since" in body
    assert "ERROR" not in server.log() and "Redis is unavailable" not in server.log()
    assert STATS.handshakes[503] == outages  # uWSGI counts in its own process: 0 there too


def test_facility_name_length_is_bounded(server, rdb):
    with override_settings(WS4REDIS_MAX_FACILITY_LENGTH=64):
        with connected(server, "subscribe-broadcast", facility="f" * 64) as ws:
            assert ws.connected
        status, body = refusal(server, "subscribe-broadcast", facility="f" * 65)
        assert status == 414 and "WS4REDIS_MAX_FACILITY_LENGTH (64 bytes)" in body
        # bytes, not characters: 33 two-byte letters are 66 bytes
        assert refusal(server, "subscribe-broadcast", facility="%C3%A9" * 33)[0] == 414
    assert refusal(server, "subscribe-broadcast", facility="f" * 256)[0] == 414  # default 255


def test_channels_per_websocket_are_bounded_for_a_user_in_many_groups(server, users, rdb):
    """What yields many channels is a user in many groups: past ``WS4REDIS_MAX_CHANNELS``
    (channels subscribed plus published to) the websocket is refused with 400 before
    anything is subscribed."""
    eve = users["eve"]
    for n in range(6):
        eve.groups.add(Group.objects.create(name=f"team{n}"))
    cookie = session_cookie(login("eve"))
    with override_settings(WS4REDIS_MAX_CHANNELS=6):
        with connected(server, "subscribe-group", facility="many", header=[cookie]) as ws:
            assert ws.connected
        status, body = refusal(server, "subscribe-group&subscribe-broadcast", "many",
                               header=[cookie])  # fmt: skip
        assert status == 400 and "7 channels" in body and "WS4REDIS_MAX_CHANNELS (6)" in body
        assert refusal(server, "subscribe-group&publish-session", "many", header=[cookie])[0] == 400
    assert rdb.pubsub_numsub("ws4redis:group:team0:many")[0][1] == 0
    assert "Traceback" not in server.log()
