"""Signed connection tokens (docs/reference.md#connection-tokens), on every runtime: a client
without the session cookie opens with a token, for exactly what the token grants, as the
user Django has now; anything forged, expired, tampered or stretched is refused with 403."""

from __future__ import annotations

import json
import time

import pytest
import websocket
from django.contrib.auth.models import AnonymousUser
from django.core import signing
from django.test import RequestFactory

import ws4redis
from tests.support.clients import FACILITY, connected, login, recv_close, session_cookie
from ws4redis import tokens
from ws4redis.publisher import RedisPublisher
from ws4redis.tokens import QUERY_KEY, connection_token

FOREIGN = "https://app.elsewhere.example"


def with_token(query: str, token: str) -> str:
    return f"{query}&{QUERY_KEY}={token}"


def refusal(server, query: str, facility: str = FACILITY, **kwargs) -> tuple[int, str]:
    """The HTTP status and body answering a websocket request that must be refused."""
    with pytest.raises(websocket.WebSocketBadStatusException) as refused:
        server.connect(query, facility=facility, **kwargs)
    return refused.value.status_code, (refused.value.resp_body or b"").decode()


def past_token(claims: dict, seconds_ago: int) -> str:
    """A token signed ``seconds_ago`` seconds ago, through signing's own signer (its
    ``timestamp`` is when a signature is made)."""

    class Earlier(signing.TimestampSigner):
        def timestamp(self) -> str:
            return signing.b62_encode(int(time.time()) - seconds_ago)

    return Earlier(salt=tokens.SALT).sign_object(claims)


def test_a_token_client_without_cookie_hears_its_user_and_groups(server, rdb, users):
    """john's token, from another origin and without a cookie, receives what is published
    to john and to his group (read from the database now), and not what is mary's."""
    token = connection_token(users["john"], ["subscribe-user", "subscribe-group"], FACILITY)
    with connected(
        server, with_token("subscribe-user&subscribe-group", token), origin=FOREIGN
    ) as ws:
        RedisPublisher(facility=FACILITY, users=["mary"]).publish_message("for mary")
        RedisPublisher(facility=FACILITY, users=["john"]).publish_message("for john")
        assert ws.recv() == "for john"
        RedisPublisher(facility=FACILITY, groups=["chatters"]).publish_message("for chatters")
        assert ws.recv() == "for chatters"


def test_a_token_grants_only_its_channels_and_facilities(server, rdb, users):
    token = connection_token(users["john"], ["subscribe-user"], [FACILITY, "other"])
    with connected(server, with_token("subscribe-user", token), facility="other"):
        pass
    status, body = refusal(server, with_token("subscribe-user&subscribe-broadcast", token))
    assert status == 403 and "does not grant subscribe-broadcast" in body
    status, body = refusal(server, with_token("subscribe-user&publish-user", token))
    assert status == 403 and "does not grant publish-user" in body
    status, body = refusal(server, with_token("subscribe-user", token), facility="third")
    assert status == 403 and "does not grant facility 'third'" in body


def test_expired_tampered_and_foreign_tokens_are_refused(server, rdb, users):
    claims = tokens.claims(users["john"], ["subscribe-user"], FACILITY, max_age=60)
    assert server.connect(with_token("subscribe-user", past_token(claims, 30))).close() is None
    status, body = refusal(server, with_token("subscribe-user", past_token(claims, 120)))
    assert status == 403 and "expired" in body

    token = connection_token(users["john"], ["subscribe-user"], FACILITY)
    rest = token.split(":", 1)[1]
    mary = tokens.claims(users["mary"], ["subscribe-user"], FACILITY)
    forged_payload = signing.dumps(mary, salt=tokens.SALT).split(":", 1)[0]
    for forged in (
        f"{forged_payload}:{rest}",  # mary's claims under john's signature
        token[:-1] + ("A" if token[-1] != "A" else "B"),  # a signature altered
        signing.dumps(claims, salt="another.purpose"),  # signed for something else
        signing.dumps(claims, key="not-the-secret-key", salt=tokens.SALT),
        "garbage",
        "",
    ):
        status, body = refusal(server, with_token("subscribe-user", forged))
        assert status == 403 and "not valid" in body, forged


def test_a_bad_token_never_falls_back_to_the_cookie_or_anonymous(server, rdb, users):
    """A session cookie next to a bad token does not open the websocket: the token decides
    alone. (A plain anonymous opening of the same query is allowed, so 403 is the token's.)"""
    with connected(server, "subscribe-broadcast"):
        pass
    cookie = [session_cookie(login("john"))]
    status, body = refusal(server, with_token("subscribe-broadcast", "x:y:z"), header=cookie)
    assert status == 403 and "connection token is not valid" in body


def test_an_inactive_or_deleted_user_token_is_refused(server, rdb, users):
    john, eve = users["john"], users["eve"]
    tokens_of = {u.username: connection_token(u, ["subscribe-user"], FACILITY) for u in (john, eve)}
    john.is_active = False
    john.save()
    status, body = refusal(server, with_token("subscribe-user", tokens_of["john"]))
    assert status == 403 and "inactive" in body
    eve.delete()
    status, body = refusal(server, with_token("subscribe-user", tokens_of["eve"]))
    assert status == 403 and "does not exist" in body


def test_a_password_change_ends_the_users_tokens(server, rdb, users):
    john = users["john"]
    old = connection_token(john, ["subscribe-user"], FACILITY)
    john.set_password("changed")
    john.save()
    status, body = refusal(server, with_token("subscribe-user", old))
    assert status == 403 and "password change" in body
    with connected(
        server, with_token("subscribe-user", connection_token(john, ["subscribe-user"], FACILITY))
    ):
        pass


def test_disconnect_user_closes_a_token_websocket(server, rdb, users):
    token = connection_token(users["john"], ["subscribe-user"], FACILITY)
    with connected(server, with_token("subscribe-user", token)) as ws:
        RedisPublisher(facility=FACILITY, users=["john"]).publish_message("opened")
        assert ws.recv() == "opened"  # subscribed, its control channel too
        assert ws4redis.disconnect(user="john")
        assert recv_close(ws) == 4001


def test_the_origin_rule_still_holds_for_cookie_openings(server, rdb, users):
    """Cross-origin is allowed for token openings only: a foreign page using its visitor's
    cookie is refused as before."""
    cookie = [session_cookie(login("john"))]
    status, body = refusal(server, "subscribe-user", header=cookie, origin=FOREIGN)
    assert status == 403 and FOREIGN in body


def test_the_token_view_gives_logged_in_users_a_token_that_opens(server, rdb, users):
    view = tokens.token_view(["subscribe-user"], facility=FACILITY, max_age=30)
    request = RequestFactory().get("/ws-token/")
    request.user = AnonymousUser()
    assert view(request).status_code == 403
    request.user = users["mary"]
    response = view(request)
    assert response["Cache-Control"] == "no-store"
    answer = json.loads(response.content)
    assert answer["max_age"] == 30
    with connected(server, with_token("subscribe-user", answer["token"])) as ws:
        RedisPublisher(facility=FACILITY, users=["mary"]).publish_message("for mary")
        assert ws.recv() == "for mary"


def test_minting_refuses_unknown_channel_keys_and_bad_lifetimes(users):
    with pytest.raises(ValueError, match="unknown channel keys"):
        connection_token(users["john"], ["subscribe-everything"], FACILITY)
    with pytest.raises(ValueError, match="max_age"):
        connection_token(users["john"], ["subscribe-user"], FACILITY, max_age=0)
    with pytest.raises(ValueError, match="has no session"):
        connection_token(users["john"], ["subscribe-user", "subscribe-session"], FACILITY)
    with pytest.raises(ValueError, match="facility"):
        connection_token(users["john"], ["subscribe-user"], [])
