"""Redis topologies started for real: a Sentinel group and a Redis Cluster, each of whose
masters is killed under an open websocket."""

from __future__ import annotations

import contextlib

import pytest
import redis
from django.test import override_settings

from tests.support.clients import FACILITY, assert_retry_later, connected
from tests.support.servers import (
    PASSWORD,
    cluster_group,
    free_port,
    redis_tls_files,
    sentinel_group,
    wait_until,
)
from ws4redis.bus import live
from ws4redis.bus.live import Reporter
from ws4redis.publisher import RedisPublisher
from ws4redis.redis_store import PublishError
from ws4redis.testing import redis_cluster

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


FACILITIES = [f"shard-{n}" for n in range(9)]


def broadcast_channel(facility: str) -> str:
    return f"ws4redis:broadcast:{facility}"


def test_broadcasts_on_facilities_spread_over_every_shard_reach_their_sockets(server, tmp_path):
    """Sharded pub/sub: each channel lives on the master of its hash slot, the hub keeps one
    subscription connection per master, and stored messages and history share the slot."""
    with cluster_group(tmp_path) as group:
        masters = {group.master_of(broadcast_channel(f)) for f in FACILITIES}
        assert masters == set(group.masters)  # the facilities cover every shard
        history = {FACILITIES[0]: {"size": 10, "ttl": 60}}
        with override_settings(WS4REDIS_CONNECTION=group.connection, WS4REDIS_HISTORY=history):
            with contextlib.ExitStack() as stack:
                sockets = {
                    f: stack.enter_context(connected(server, "subscribe-broadcast", facility=f))
                    for f in FACILITIES
                }
                for facility in FACILITIES:
                    publisher = RedisPublisher(facility=facility, broadcast=True)
                    receivers = publisher.publish_message(f"to {facility}", expire=60)
                    assert receivers == {broadcast_channel(facility): 1}
                for facility, ws in sockets.items():
                    assert ws.recv() == f"to {facility}"
                # a socket opened now gets each channel's stored message, from its shard
                for facility in FACILITIES[1:]:
                    with connected(server, "subscribe-broadcast", facility=facility) as late:
                        assert late.recv() == f"to {facility}"
                kept = RedisPublisher(facility=FACILITIES[0], broadcast=True).history()
                assert kept[broadcast_channel(FACILITIES[0])].messages == [(1, b"to shard-0")]


def test_delivery_follows_a_cluster_failover_on_the_same_socket(server, tmp_path):
    """A master dies and the cluster promotes its replica. The hub reads the slot map again
    and subscribes on the new master. During the failover the other shards deliver; on the
    failed shard a publish before the promotion has no receiver (pub/sub keeps nothing: use
    history for that), and the first one after it that Redis counts as received reaches the
    same open websocket, once."""
    with cluster_group(tmp_path) as group:
        with override_settings(WS4REDIS_CONNECTION=group.connection):
            doomed = group.master_of(broadcast_channel(FACILITIES[0]))
            survivor = next(
                f for f in FACILITIES if group.master_of(broadcast_channel(f)) != doomed
            )
            with (
                connected(server, "subscribe-broadcast", facility=FACILITIES[0]) as ws,
                connected(server, "subscribe-broadcast", facility=survivor) as other,
            ):
                publisher = RedisPublisher(facility=FACILITIES[0], broadcast=True)
                assert publisher.publish_message("before", expire=0) == {
                    broadcast_channel(FACILITIES[0]): 1
                }
                assert ws.recv() == "before"
                group.processes[doomed].kill()
                RedisPublisher(facility=survivor, broadcast=True).publish_message("meanwhile")
                assert other.recv() == "meanwhile"
                wait_until(
                    lambda: group.master_of(broadcast_channel(FACILITIES[0])) not in (None, doomed),
                    "a replica promoted",
                    60,
                )

                def delivered() -> bool:
                    try:  # 0 receivers until the hub has subscribed on the new master
                        sent = publisher.publish_message("after", expire=0)
                    except redis.RedisError:  # the cluster client finds the new master
                        return False
                    return sent == {broadcast_channel(FACILITIES[0]): 1}

                wait_until(delivered, "a publish that reaches the websocket", 60)
                assert ws.recv() == "after"
                # on a cluster as on one server, the log says Redis is back (the channels moved
                # to the promoted replica's connection)
                wait_until(lambda: "Redis is back" in server.log(), "the log line", 10)


def test_a_cluster_spoken_to_over_tls_delivers(socket_server, tmp_path):
    """TLS everywhere (clients, replication, the cluster bus), with a password: the hub's
    per-master connections and Django's cluster client use the same options."""
    cert, key = redis_tls_files(tmp_path, "127.0.0.1")
    with redis_cluster(workdir=tmp_path, password=PASSWORD, tls=(cert, key)) as cluster:
        with override_settings(WS4REDIS_CONNECTION=cluster.connection):
            with connected(socket_server, "subscribe-broadcast", facility=FACILITIES[1]) as ws:
                publisher = RedisPublisher(facility=FACILITIES[1], broadcast=True)
                assert publisher.publish_message("sealed", expire=0) == {
                    broadcast_channel(FACILITIES[1]): 1
                }
                assert ws.recv() == "sealed"


def test_a_failover_inside_a_publish_loop_delivers_no_message_twice(socket_server, tmp_path):
    """Django publishes (and stores) on 12 facilities over all shards, round after round,
    while a master is killed and its replica promoted. While the cluster is down, Redis
    takes SPUBLISH but refuses SET: no message may reach a websocket twice (redis-py's
    cluster pipeline used to send the whole batch again, up to 10 times), every publish the
    caller was told went out reached its websocket, and the caller learns per channel what
    did not."""
    facilities = [f"loop-{n}" for n in range(12)]
    with cluster_group(tmp_path) as group, override_settings(WS4REDIS_CONNECTION=group.connection):
        assert {group.master_of(broadcast_channel(f)) for f in facilities} == set(group.masters)
        doomed = group.master_of(broadcast_channel(facilities[0]))
        with contextlib.ExitStack() as stack:
            sockets = {
                f: stack.enter_context(connected(socket_server, "subscribe-broadcast", facility=f))
                for f in facilities
            }
            went_out: dict[str, set[str]] = {f: set() for f in facilities}
            promoted_in_round = None
            for round_ in range(2000):
                if round_ == 5:
                    group.processes[doomed].kill()
                for facility in facilities:
                    text = f"{facility}:{round_}"
                    publisher = RedisPublisher(facility=facility, broadcast=True)
                    try:
                        receivers = publisher.publish_message(text, expire=60)
                    except PublishError as exc:  # told what went out: the rest did not
                        receivers = exc.outcome.published
                    if receivers.get(broadcast_channel(facility)) == 1:
                        went_out[facility].add(text)
                if promoted_in_round is None and group.master_of(
                    broadcast_channel(facilities[0])
                ) not in (None, doomed):
                    promoted_in_round = round_
                if promoted_in_round is not None and round_ > promoted_in_round + 20:
                    break
            assert promoted_in_round is not None, "no replica was promoted"
            for facility, ws in sockets.items():
                wait_until(
                    lambda f=facility: (
                        RedisPublisher(facility=f, broadcast=True).publish_message(
                            "--end--", expire=0
                        )
                        == {broadcast_channel(f): 1}
                    ),
                    f"{facility} to be delivered again",
                    60,
                )
                seen = []
                while (text := ws.recv()) != "--end--":
                    seen.append(text)
                assert len(seen) == len(set(seen)), f"{facility} got a message twice"
                assert went_out[facility] <= set(seen), f"{facility} missed what went out"


def test_a_cluster_none_of_whose_nodes_answers_is_a_redis_error_to_a_view():
    """A view that publishes while no node of the cluster answers gets a ``RedisError``, as
    with one server: redis-py's cluster client raises its own errors, which are not."""
    dead = ("127.0.0.1", free_port())  # nothing listens: every connection is refused
    with override_settings(WS4REDIS_CONNECTION={"cluster_nodes": [dead]}):
        with pytest.raises(redis.RedisError, match="Redis Cluster"):
            RedisPublisher(facility=FACILITY, broadcast=True).publish_message("lost")


def test_the_live_counts_outlive_a_cluster_that_goes_away(tmp_path, caplog):
    """Every node of the cluster is killed under the writer of the live counts: it says so
    and tries again, where redis-py's cluster error (no ``RedisError``) used to end its
    thread, and the admin's live page stayed stale for the life of the process."""
    reporter = Reporter()  # this test's own: the process's reporter stays as it was
    with redis_cluster(masters=1, replicas=0, workdir=tmp_path) as cluster:
        with override_settings(WS4REDIS_CONNECTION=cluster.connection):
            reporter.change("outlived", +1)
            wait_until(lambda: live.facilities()[0]["outlived"] == 1, "the first report")
            for process in cluster.processes.values():
                process.kill()
                process.wait()
            reporter.change("outlived", -1)  # report again: the cluster is gone now
            assert reporter.thread is not None
            wait_until(
                lambda: (
                    "Cannot write the live counts" in caplog.text or not reporter.thread.is_alive()
                ),
                "the writer to meet the dead cluster",
            )
            assert reporter.thread.is_alive()


def test_an_opening_while_the_cluster_is_gone_is_503(socket_server, tmp_path):
    """An anonymous client opens while every node of the cluster is dead, after the server
    had spoken to it: the answer is 503 with Retry-After, as with one Redis server, not a
    500 (redis-py's cluster errors are no ``RedisError``)."""
    with redis_cluster(masters=1, replicas=0, workdir=tmp_path) as cluster:
        with override_settings(WS4REDIS_CONNECTION=cluster.connection):
            with connected(socket_server, "subscribe-broadcast") as ws:
                RedisPublisher(facility=FACILITY, broadcast=True).publish_message("up")
                assert ws.recv() == "up"
            for process in cluster.processes.values():
                process.kill()
                process.wait()
            assert_retry_later(lambda: socket_server.connect("subscribe-broadcast"))
