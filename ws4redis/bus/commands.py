"""Commands that must run at most once: publishing.

A ``PUBLISH`` that Redis ran reached its subscribers; sending it again delivers the message
twice. redis-py retries on its own (a pipeline after a lost connection; a cluster pipeline
re-sends the *whole* batch when one command is refused, so that during a cluster failover
the channels of the healthy masters were published again and again). Here a command is
sent again only when Redis certainly did not run it: it was never sent (no connection could
be made, its slot has no master right now), or Redis refused it with an error that means
"not here, not now" (``MOVED``, ``ASK``, ``TRYAGAIN``, ``CLUSTERDOWN``, ``LOADING``,
``READONLY``, ``MASTERDOWN``). A connection lost after the commands went out leaves their
fate unknown: they are not sent again, and the caller is told.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

import redis
import redis.cluster
import redis.exceptions

from ws4redis.bus.pool import is_cluster

RETRY_FOR = 5.0
"""Seconds a command Redis refused (or that could not be sent) is tried again: about what
a cluster needs to promote a replica (``cluster-node-timeout`` plus the election)."""

LOST = (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError, OSError)
REFUSED = (
    redis.exceptions.MovedError,
    redis.exceptions.AskError,
    redis.exceptions.TryAgainError,
    redis.exceptions.ClusterDownError,
    redis.exceptions.BusyLoadingError,
    redis.exceptions.ReadOnlyError,
    redis.exceptions.MasterDownError,
)
"""Replies that say Redis did not run the command (it may run elsewhere, or later)."""


class NotSent(redis.exceptions.ConnectionError):
    """The command never reached Redis (no connection, or no master for its slot)."""


class Unknown(redis.exceptions.ConnectionError):
    """The connection was lost after the command went out: Redis may or may not have run
    it, so it is not sent again."""


Command = tuple[str, Sequence[Any]]
"""The key a command is routed by (its slot on a cluster), and its arguments."""


def run_once(client: Any, commands: list[Command]) -> list[Any]:
    """Run ``commands`` on ``client`` (a server, Sentinel's master or a cluster): one
    pipelined round trip per node, each command at most once. Returns, in order, each
    command's reply, or the exception that says why it has none (``NotSent``, ``Unknown``,
    or Redis's error)."""
    results: list[Any] = [None] * len(commands)
    pending = list(range(len(commands)))
    deadline = time.monotonic() + RETRY_FOR
    delay = 0.05
    while True:
        batches = _route(client, commands, pending, results)
        sent = [(node, indexes, _send(node, [commands[i][1] for i in indexes]))
                for node, indexes in batches]  # fmt: skip
        for node, indexes, connection in sent:
            for index, reply in zip(indexes, _read(node, connection, len(indexes)), strict=True):
                results[index] = reply
        pending = [i for i in pending if isinstance(results[i], (*REFUSED, NotSent))]
        if not pending or time.monotonic() + delay > deadline:
            return results
        time.sleep(delay)
        delay = min(delay * 2, 1.0)
        if is_cluster(client):
            _reread_slots(client)


def _route(
    client: Any, commands: list[Command], pending: list[int], results: list[Any]
) -> list[tuple[redis.Redis, list[int]]]:
    """The pending commands grouped by the node that serves their key; a command whose
    slot has no master now gets :class:`NotSent`."""
    if not is_cluster(client):
        return [(client, pending)]
    batches: dict[str, tuple[redis.Redis, list[int]]] = {}
    for index in pending:
        try:
            node = client.get_node_from_key(commands[index][0])
        except redis.exceptions.RedisError as exc:  # SlotNotCoveredError during a failover
            results[index] = NotSent(str(exc))
            continue
        batch = batches.setdefault(node.name, (client.get_redis_connection(node), []))
        batch[1].append(index)
    return list(batches.values())


def _send(node: redis.Redis, commands: list[Sequence[Any]]) -> Any:
    """Write ``commands`` on a connection of ``node``'s pool: the connection, or the
    exception that kept them from being sent (a half-sent batch is :class:`Unknown`)."""
    pool = node.connection_pool
    try:
        connection = pool.get_connection()  # connects, or checks a pooled connection
    except (*LOST, redis.exceptions.RedisError) as exc:
        return NotSent(str(exc))
    try:
        connection.send_packed_command(connection.pack_commands(commands), check_health=False)
    except LOST as exc:
        connection.disconnect()
        pool.release(connection)
        return Unknown(str(exc))
    return connection


def _read(node: redis.Redis, connection: Any, count: int) -> list[Any]:
    """The replies of ``count`` commands written on ``connection`` (see :func:`_send`)."""
    if isinstance(connection, Exception):
        return [connection] * count
    replies: list[Any] = []
    try:
        while len(replies) < count:
            try:
                replies.append(connection.read_response())
            except redis.exceptions.ResponseError as exc:
                replies.append(exc)
    except LOST as exc:
        connection.disconnect()
        replies += [Unknown(str(exc))] * (count - len(replies))
    finally:
        node.connection_pool.release(connection)
    return replies


def _reread_slots(client: redis.cluster.RedisCluster) -> None:
    """Ask the cluster for its slot map again (a master failed over, a slot moved)."""
    try:
        client.nodes_manager.initialize()
    except (*LOST, redis.exceptions.RedisError):
        pass  # the next round routes by what is known, and tries again
