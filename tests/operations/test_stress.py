"""The manual's stress test, kept: many subscribers on one facility, one publish, every one
of them must receive it. ``bench/stress.py`` runs it with 1,000 and prints the time."""

from __future__ import annotations

import pytest
import websocket

from tests.support.clients import FACILITY
from ws4redis.publisher import RedisPublisher

SUBSCRIBERS = 200


@pytest.mark.parametrize("runtime", ["asyncio", "uwsgi"])
def test_every_subscriber_receives_one_publish(request, runtime, rdb):
    fixture = request.getfixturevalue(f"{runtime}_server")
    ws_base = fixture[0] if isinstance(fixture, tuple) else fixture.ws_base
    url = f"{ws_base}/ws/{FACILITY}?subscribe-broadcast"
    clients = [websocket.create_connection(url, timeout=30) for _ in range(SUBSCRIBERS)]
    try:
        receivers = RedisPublisher(facility=FACILITY, broadcast=True).publish_message(
            "to everybody"
        )
        # one Redis subscription for the whole process (one uWSGI worker), not one per socket
        assert receivers == {f"ws4redis:broadcast:{FACILITY}": 1}
        assert [ws.recv() for ws in clients] == ["to everybody"] * SUBSCRIBERS
    finally:
        for ws in clients:
            ws.close()
