"""HTML fragments for HTMX (docs/reference.md#html-fragments-for-htmx): ``publish_fragment``
renders a template and publishes it named, so that event streams send it as that event (for
``sse-swap``) and websockets get the text as it is (for ``hx-swap-oob``)."""

from __future__ import annotations

import pytest
from django.template.loader import render_to_string
from django.test import override_settings

from tests.connections.test_events import FACILITY, streaming
from tests.messaging.test_async_publishing import on_a_loop
from tests.support.clients import connected
from ws4redis.core.events import named
from ws4redis.publisher import RedisPublisher
from ws4redis.testing import capture_published

ITEM = "chatserver/item.html"
CONTEXT = {"text": "<b>bold</b> & co", "author": "john"}


def test_a_fragment_reaches_an_event_stream_as_its_event_and_a_websocket_as_it_is(server):
    html = render_to_string(ITEM, CONTEXT)
    assert "&lt;b&gt;bold&lt;/b&gt; &amp; co" in html  # rendered by Django, escaped
    publisher = RedisPublisher(facility=FACILITY, broadcast=True)
    with (
        streaming(server, "subscribe-broadcast") as stream,
        connected(server, "subscribe-broadcast", facility=FACILITY) as ws,
    ):
        receivers = publisher.publish_fragment(ITEM, CONTEXT, event="item")
        assert set(receivers) == {f"ws4redis:broadcast:{FACILITY}"}
        assert receivers[f"ws4redis:broadcast:{FACILITY}"] >= 1
        assert stream.next() == {"event": "item", "data": html, "id": None}
        assert ws.recv() == named("item", html) == f"<!-- event: item -->\n{html}"
        # Without an event name it is the stream's default event, "message"
        publisher.publish_fragment(ITEM, {"text": "plain"})
        plain = stream.next()
        assert plain["event"] == "message" and plain["data"] == render_to_string(
            ITEM, {"text": "plain"}
        )


def test_a_fragment_is_stored_like_a_message(server):
    """As with publish_message, the text is stored (``expire``) and the next stream that
    opens gets it first, as its event; ``expire=0`` stores nothing."""
    publisher = RedisPublisher(facility=FACILITY, broadcast=True)
    publisher.publish_fragment(ITEM, CONTEXT, event="item", expire=0)
    assert publisher.fetch_message(None, FACILITY) is None
    publisher.publish_fragment(ITEM, CONTEXT, event="item")
    assert (
        publisher.fetch_message(None, FACILITY)
        == named("item", render_to_string(ITEM, CONTEXT)).encode()
    )
    with streaming(server, "subscribe-broadcast") as stream:
        assert stream.next()["event"] == "item"


@pytest.mark.parametrize("name", ["", "two words", "a\nb", "x" * 65, "é"])
def test_a_bad_event_name_raises_value_error_and_publishes_nothing(rdb, name):
    publisher = RedisPublisher(facility=FACILITY, broadcast=True)
    with capture_published() as captured:
        with pytest.raises(ValueError, match="an event name is"):
            publisher.publish_fragment(ITEM, CONTEXT, event=name)
        # The name is checked before the template is looked for
        with pytest.raises(ValueError, match="an event name is"):
            publisher.publish_fragment("no/such/template.html", event=name)
        with pytest.raises(ValueError, match="an event name is"):
            on_a_loop(publisher.apublish_fragment(ITEM, CONTEXT, event=name))
    assert captured.messages == []


@override_settings(WS4REDIS_HISTORY={FACILITY: {"size": 10, "ttl": 600}})
def test_the_async_twin_publishes_the_same_text_into_the_history(rdb, rf):
    """apublish_fragment renders off the event loop and publishes as apublish_message
    does, history included."""
    publisher = RedisPublisher(facility=FACILITY, broadcast=True)
    request = rf.get("/htmx/")
    html = render_to_string(ITEM, CONTEXT, request)

    async def publish() -> dict[str, int]:
        return await publisher.apublish_fragment(ITEM, CONTEXT, event="item", request=request)

    assert on_a_loop(publish()) == {f"ws4redis:broadcast:{FACILITY}": 0}
    publisher.publish_fragment(ITEM, CONTEXT, event="item", request=request)
    (window,) = publisher.history().values()
    assert [data for _, data in window.messages] == [named("item", html).encode()] * 2
