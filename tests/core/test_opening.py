"""Deciding whether an upgrade becomes a websocket, from plain values: statuses, channel
keys, hosts and origins, subprotocols (the Django side:
``tests/connections/test_opening_in_django.py``)."""

from __future__ import annotations

import base64
import dataclasses

import pytest
from websockets.client import ClientProtocol
from websockets.protocol import OPEN
from websockets.uri import parse_uri

from tests.core.test_relay import OPTIONS, opening, upgrade
from ws4redis.core.handshake import (
    Rejection,
    check_request,
    host_allowed,
    origin_allowed,
    over_capacity,
)
from ws4redis.core.opening import (
    DECISION_KEY_SIZE,
    Accepted,
    Decided,
    Kept,
    TooManyChannels,
    accept,
    decision_key,
    requested_keys,
)
from ws4redis.core.relay import Start
from ws4redis.core.stats import Stats


def decided(request) -> Accepted | Rejection:
    """The core's checks, then the handshake, of an anonymous request for no channels."""
    rejection = check_request(request, OPTIONS.handshake)
    if rejection is not None:
        return rejection
    return accept(request, Accepted(None, "chat", [], False, OPTIONS))


@pytest.mark.parametrize(
    "target, method, headers, status",
    [
        ("/elsewhere", "GET", {}, 404),
        ("/ws/chat", "POST", {}, 400),
        ("/ws/chat", "GET", {"Upgrade": "h2c"}, 400),
        ("/ws/chat", "GET", {"Sec_WebSocket_Version": None}, 426),
        ("/ws/chat", "GET", {"Sec_WebSocket_Version": "8"}, 400),
        ("/ws/chat", "GET", {"Sec_WebSocket_Key": "short"}, 400),
        ("/ws/chat", "GET", {"Origin": "https://evil.example"}, 403),
        ("/ws/" + "f" * 256, "GET", {}, 414),
    ],
)
def test_refusals_and_their_statuses(target, method, headers, status):
    outcome = decided(upgrade(target, method, **headers))
    assert isinstance(outcome, Rejection)
    assert outcome.status == status
    assert outcome.body  # says what is wrong


def test_channel_keys_are_case_insensitive_and_unknown_ones_ignored():
    keys = ["Subscribe-Broadcast", "PUBLISH-user", "nonsense", "Echo"]
    assert requested_keys(keys) == (["publish-user", "subscribe-broadcast"], True)
    outcome = opening("/ws/chat?Subscribe-Broadcast&PUBLISH-user&nonsense&Echo")
    assert isinstance(outcome, Accepted)
    assert outcome.channels == ["publish-user", "subscribe-broadcast"] and outcome.echo


def test_requested_subprotocol_is_answered_with_the_first_offered():
    outcome = decided(upgrade(Sec_WebSocket_Protocol="chat, superchat"))
    assert isinstance(outcome, Accepted) and outcome.response is not None
    assert outcome.response.headers["Sec-WebSocket-Protocol"] == "chat"
    plain = decided(upgrade())
    assert isinstance(plain, Accepted) and plain.response is not None
    assert "Sec-WebSocket-Protocol" not in plain.response.headers


def test_unframed_opening_has_no_handshake_for_asgi_servers():
    outcome = opening("/ws/chat?subscribe-broadcast", framing=False)
    assert isinstance(outcome, Accepted) and outcome.protocol is None


def test_long_query_is_refused_with_414():
    short = dataclasses.replace(OPTIONS.handshake, max_query_size=64)
    outcome = check_request(upgrade("/ws/chat?subscribe-broadcast&" + "x" * 100), short)
    assert isinstance(outcome, Rejection) and outcome.status == 414


def test_too_many_channels_says_the_limit_and_a_full_process_says_when_to_retry():
    TooManyChannels.check(100, 100)
    with pytest.raises(TooManyChannels, match=r"101 channels.*\(100\)"):
        TooManyChannels.check(101, 100)
    assert over_capacity(10, 10) is None
    full = over_capacity(11, 10)
    assert full is not None and full.status == 503 and full.headers == [("Retry-After", "1")]


@pytest.mark.parametrize(
    "host, allowed",
    [
        ("testserver", True),
        ("TestServer:8000", True),
        ("testserver.", True),
        ("evil.example", False),
        ("testserver@evil", False),
        ("", False),
    ],
)
def test_hosts_are_matched_as_django_matches_allowed_hosts(host, allowed):
    assert host_allowed(host, ("testserver",)) is allowed


def test_host_patterns_admit_subdomains_and_any_host():
    assert host_allowed("chat.example.com", (".example.com",))
    assert host_allowed("example.com", (".example.com",))
    assert not host_allowed("badexample.com", (".example.com",))
    assert host_allowed("anything", ("*",))
    assert host_allowed("[::1]:8000", ("[::1]",))


@pytest.mark.parametrize(
    "origin, allowed",
    [
        ("http://testserver", True),  # the request's own origin
        ("https://testserver", False),  # another scheme
        ("http://testserver:8001", False),  # another port
        ("http://trusted.example", True),  # CSRF_TRUSTED_ORIGINS
        ("http://sub.wild.example", True),
        ("http://otherhost", True),  # in ALLOWED_HOSTS, on the scheme's default port
        ("null", False),
    ],
)
def test_origins_are_allowed_as_django_s_csrf_check_allows_them(origin, allowed):
    options = dataclasses.replace(
        OPTIONS.handshake,
        trusted_origins=("http://trusted.example", "http://*.wild.example"),
        allowed_hosts=("testserver", "otherhost"),
    )
    assert origin_allowed(upgrade(Origin=origin), options) is allowed
    listed = dataclasses.replace(options, allowed_origins=("https://app.example",))
    assert origin_allowed(upgrade(Origin="https://app.example"), listed)
    assert not origin_allowed(upgrade(Origin="http://testserver"), listed)


def test_the_handshake_response_is_written_by_the_relay_and_frames_parse_right_after():
    """The protocol starts open (the server parsed the request): the 101 response is the
    relay's first output, and a frame the client sends next is a message."""
    outcome = opening("/ws/chat?publish-broadcast")
    assert isinstance(outcome, Accepted)
    relay = outcome.relay(0.0, Stats())
    relay.opened(Start([b"persisted"]))
    first, persisted = relay.data_to_send()[:2]
    assert first.startswith(b"HTTP/1.1 101 ") and persisted == b"\x81\x09persisted"
    client = ClientProtocol(parse_uri("ws://testserver/ws/chat"))
    client.state = OPEN
    client.send_text(b"hello")
    assert relay.receive_data(client.data_to_send()[0]) == [b"hello"]


def test_a_decision_key_leaves_out_only_what_differs_per_browser():
    """Two browsers opening the same URL from the same page share a key whatever their
    handshake key, cookies, language or user agent; anything a check before the handshake
    reads (the query, the Origin, the Host, the scheme, a subprotocol) makes another."""
    first = decision_key(upgrade("/ws/chat?subscribe-broadcast", Origin="http://a.test"))
    same = upgrade(
        "/ws/chat?subscribe-broadcast", Origin="http://a.test", Cookie="csrftoken=x",
        Sec_WebSocket_Key=base64.b64encode(b"fedcba9876543210").decode(),
        User_Agent="other", Accept_Language="fr", Accept_Encoding="br",
        Cache_Control="no-cache", Pragma="no-cache",
    )  # fmt: skip
    assert first is not None and decision_key(same) == first
    others = [
        upgrade("/ws/chat?subscribe-broadcast&publish-broadcast", Origin="http://a.test"),
        upgrade("/ws/chat?subscribe-broadcast", Origin="http://b.test"),
        upgrade("/ws/chat?subscribe-broadcast", Origin="http://a.test", Host="b.test"),
        dataclasses.replace(
            upgrade("/ws/chat?subscribe-broadcast", Origin="http://a.test"), secure=True
        ),
        upgrade(
            "/ws/chat?subscribe-broadcast",
            Origin="http://a.test",
            Sec_WebSocket_Protocol="ws4redis.v1",
        ),
        upgrade("/ws/other?subscribe-broadcast", Origin="http://a.test"),
        upgrade("/ws/chat?subscribe-broadcast", "POST", Origin="http://a.test"),
    ]
    assert all(decision_key(other) not in (None, first) for other in others)


def test_a_request_larger_than_the_key_bound_gets_no_key():
    assert decision_key(upgrade("/ws/chat?" + "x" * DECISION_KEY_SIZE)) is None
    assert decision_key(upgrade("/ws/chat?x", X_Padding="x" * DECISION_KEY_SIZE)) is None


def plain(facility: str = "chat", **changes) -> Accepted:
    return dataclasses.replace(
        Accepted(None, facility, ["subscribe-broadcast"], True, OPTIONS), **changes
    )


def test_a_plain_opening_is_kept_and_given_to_the_next_request():
    known = Decided.of(plain())
    assert known is not None
    again = known.accepted("the next request", OPTIONS)
    assert (again.request, again.facility, again.channels, again.echo, again.options) == (
        "the next request", "chat", ["subscribe-broadcast"], True, OPTIONS,
    )  # fmt: skip
    assert again.since is None and again.grant is None and not again.multiplex


@pytest.mark.parametrize(
    "changes",
    [{"multiplex": True}, {"events": True}, {"grant": object()}, {"since": {}}],
    ids=["multiplexed", "event stream", "token", "positions"],
)
def test_no_opening_that_depends_on_more_than_its_url_is_kept(changes):
    assert Decided.of(plain(**changes)) is None


def test_what_is_kept_is_bounded():
    kept: Kept[str, int] = Kept(2)
    for number, key in enumerate("abc"):
        kept.keep(key, number)
        assert len(kept) <= 2
    assert kept.get("c") == 2
    none: Kept[str, int] = Kept(0)
    none.keep("key", 1)
    assert len(none) == 0 and none.get("key") is None
