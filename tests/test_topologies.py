"""Redis topologies started for real: a Sentinel group whose master is killed."""

from __future__ import annotations

import redis
from django.test import override_settings

from tests.conftest import FACILITY, connected
from tests.servers import sentinel_group, wait_until
from ws4redis.publisher import RedisPublisher

CHANNEL = f"ws4redis:broadcast:{FACILITY}"


def test_delivery_follows_a_sentinel_failover_on_the_same_socket(server, tmp_path):
    """The master dies; the Sentinels promote its replica. The hub finds the new master and
    subscribes again there, and what Django publishes afterwards reaches the same open
    websocket."""
    with sentinel_group(tmp_path) as group:
        with override_settings(WS4REDIS_CONNECTION=group.connection):
            with connected(server, "subscribe-broadcast") as ws:
                publisher = RedisPublisher(facility=FACILITY, broadcast=True)
                assert publisher.publish_message("before", expire=0) == {CHANNEL: 1}
                assert ws.recv() == "before"
                old = group.master_address()
                group.master.kill()
                wait_until(lambda: group.master_address() not in (None, old), "a failover", 60)

                def delivered() -> bool:
                    try:  # 0 receivers until the hub has subscribed on the new master
                        return publisher.publish_message("after", expire=0) == {CHANNEL: 1}
                    except redis.RedisError:  # the publisher's pool still finds its way
                        return False

                wait_until(delivered, "a publish that reaches the websocket", 60)
                assert ws.recv() == "after"
