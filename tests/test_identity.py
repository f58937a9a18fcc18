"""Django decides who hears and who speaks: what a client claims to be counts for nothing
until Django's own stores confirm it (every runtime)."""

from __future__ import annotations

from django.test import override_settings

from tests.conftest import connected, login, publish_marker, session_cookie

FORGED = "madeup0123456789forgedsessionkey"


def test_a_made_up_session_cookie_is_anonymous(server, rdb, users):
    """An attacker sends a session cookie the store never issued, asks for its session's
    channels and publishes there: it gets no session channel (nothing stored or published
    under the made-up key, nothing of it in Redis), while a real session still has its own."""
    query = "subscribe-session&publish-session&subscribe-broadcast&publish-broadcast&echo"
    forged = [f"Cookie: sessionid={FORGED}"]
    with override_settings(WS4REDIS_CLIENT_EXPIRE=10):
        with connected(server, query, header=forged) as attacker:
            attacker.send("filling Redis")  # one pipeline: the broadcast and any session
            assert attacker.recv() == "filling Redis"
            publish_marker()  # after the whole pipeline, so Redis delivers it last
            assert attacker.recv() == "--marker--"  # no second copy: no session channel
        assert not [key for key in rdb.keys("*") if FORGED.encode() in key]

        client = login("john")
        real = client.session.session_key
        own = "subscribe-session&publish-session&echo"
        with connected(server, own, header=[session_cookie(client)]) as owner:
            owner.send("mine")
            assert owner.recv() == "mine"  # a session's websocket hears its own session
    assert rdb.get(f"ws4redis:session:{real}:unittest") == b"mine"
