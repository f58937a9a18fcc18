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

import asyncio
import contextlib
import functools
import inspect
import time
from collections.abc import Callable, Generator, Sequence
from typing import Any

import redis
import redis.asyncio.cluster
import redis.cluster
import redis.exceptions

from ws4redis.bus.pool import REDIS_FAILED, is_cluster

RETRY_FOR = 5.0
"""Seconds a command Redis refused (or that could not be sent) is tried again: about what
a cluster needs to promote a replica (``cluster-node-timeout`` plus the election)."""

LOST = (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError, OSError)
NOT_SENT_ON: tuple[type[Exception], ...] = (*LOST, *REDIS_FAILED)
"""What keeps a command from being sent: the connection, or the cluster, failing."""
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

Step = Callable[[], Any]
"""One piece of I/O of :func:`_rounds`: its value, awaited first when it is awaitable
(``redis.asyncio``), or the exception it raised, is what the ``yield`` gives back."""

Rounds = Generator[Step, Any, list[Any]]


def run_once(client: Any, commands: list[Command]) -> list[Any]:
    """Run ``commands`` on ``client`` (a server, Sentinel's master or a cluster): one
    pipelined round trip per node, each command at most once. Returns, in order, each
    command's reply, or the exception that says why it has none (``NotSent``, ``Unknown``,
    or Redis's error)."""
    steps = _Steps(_rounds(client, commands, time.sleep))
    while (step := steps.next()) is not None:
        steps.settle(step)
    return steps.results


async def arun_once(client: Any, commands: list[Command]) -> list[Any]:
    """:func:`run_once` for a ``redis.asyncio`` client: the same rounds and the same rules,
    awaiting each piece of I/O instead of blocking the event loop on it."""
    steps = _Steps(_rounds(client, commands, asyncio.sleep))
    while (step := steps.next()) is not None:
        if inspect.isawaitable(pending := steps.settle(step)):
            try:
                steps.reply = await pending
            except BaseException as exc:  # handed to _rounds, which decides what it means
                steps.failure = exc
    return steps.results


class _Steps:
    """Drives :func:`_rounds`: feeds each step's value (or exception) back into it, so the
    blocking and the event-loop runners share every decision and differ only in waiting."""

    def __init__(self, rounds: Rounds) -> None:
        self._rounds = rounds
        self.reply: Any = None
        self.failure: BaseException | None = None
        """What the last step raised; a cancellation too, so that :func:`_rounds` closes
        the connections it holds before letting it through."""
        self.results: list[Any] = []

    def next(self) -> Step | None:
        """The next step, or None once the rounds are over (then :attr:`results` is set)."""
        reply, failure = self.reply, self.failure
        self.reply, self.failure = None, None
        try:
            return self._rounds.throw(failure) if failure else self._rounds.send(reply)
        except StopIteration as done:
            self.results = done.value
            return None

    def settle(self, step: Step) -> Any:
        """Run ``step``, keeping its value or exception for :meth:`next`; returns the value
        (an awaitable that the async runner awaits)."""
        try:
            self.reply = step()
        except BaseException as exc:  # handed to _rounds, which decides what it means
            self.failure = exc
        return self.reply


Held = dict[int, tuple[Any, Any]]
"""The connections taken from their pools and not given back yet, with their pools."""


def _rounds(client: Any, commands: list[Command], sleep: Callable[[float], Any]) -> Rounds:
    """The rounds of :func:`run_once`, written once for both kinds of client: each piece of
    I/O is yielded as a :data:`Step`, and ``sleep`` is the runner's way of waiting.

    Stopped half-way (a cancelled task, an interrupt), it closes the connections it holds:
    they may have replies on the way, so they cannot serve anyone else, nor stay taken.
    """
    held: Held = {}
    try:
        return (yield from _attempts(client, commands, sleep, held))
    except GeneratorExit:
        raise
    except BaseException:
        for pool, connection in list(held.values()):
            with contextlib.suppress(Exception):
                yield from _give_back(pool, connection, held, broken=True)
        raise


def _attempts(
    client: Any, commands: list[Command], sleep: Callable[[float], Any], held: Held
) -> Rounds:
    """Send what is pending, read the replies, and again while something was refused or
    not sent, until :data:`RETRY_FOR` is over."""
    results: list[Any] = [None] * len(commands)
    pending = list(range(len(commands)))
    deadline = time.monotonic() + RETRY_FOR
    delay = 0.05
    while True:
        batches = yield from _route(client, commands, pending, results)
        sent = []
        for pool, indexes in batches:
            connection = yield from _send(pool, [commands[i][1] for i in indexes], held)
            sent.append((pool, indexes, connection))
        for pool, indexes, connection in sent:
            replies = yield from _read(pool, connection, len(indexes), held)
            for index, reply in zip(indexes, replies, strict=True):
                results[index] = reply
        pending = [i for i in pending if isinstance(results[i], (*REFUSED, NotSent))]
        if not pending or time.monotonic() + delay > deadline:
            return results
        yield functools.partial(sleep, delay)
        delay = min(delay * 2, 1.0)
        if is_cluster(client):
            yield from _reread_slots(client)


def _route(
    client: Any, commands: list[Command], pending: list[int], results: list[Any]
) -> Generator[Step, Any, list[tuple[Any, list[int]]]]:
    """The pending commands grouped by the connection pool of the node that serves their
    key; a command whose slot has no master now gets :class:`NotSent`."""
    if not is_cluster(client):
        return [(client.connection_pool, pending)]
    if isinstance(client, redis.asyncio.cluster.RedisCluster):
        try:
            yield client.initialize  # learns the slot map once; at once afterwards
        except NOT_SENT_ON as exc:
            for index in pending:
                results[index] = NotSent(str(exc))
            return []
    batches: dict[str, tuple[Any, list[int]]] = {}
    for index in pending:
        try:
            node = client.get_node_from_key(commands[index][0])
        except redis.exceptions.RedisError as exc:  # SlotNotCoveredError during a failover
            results[index] = NotSent(str(exc))
            continue
        batch = batches.setdefault(node.name, (_node_pool(client, node), []))
        batch[1].append(index)
    return list(batches.values())


def _node_pool(client: Any, node: Any) -> Any:
    """What hands out connections to one cluster node: the pool of the blocking client's
    node, or the asyncio cluster node itself behind the same two calls."""
    if isinstance(node, redis.asyncio.cluster.ClusterNode):
        return _AsyncNodePool(node)
    return client.get_redis_connection(node).connection_pool


class _AsyncNodePool:
    """An asyncio cluster node as a connection pool: ``get_connection`` connects (so a
    failure there means not sent), ``release`` gives the connection back."""

    def __init__(self, node: redis.asyncio.cluster.ClusterNode) -> None:
        self._node = node

    async def get_connection(self) -> Any:
        connection = self._node.acquire_connection()
        try:
            await connection.connect()
        except BaseException:
            self._node.release(connection)
            raise
        return connection

    def release(self, connection: Any) -> None:
        self._node.release(connection)


def _send(pool: Any, commands: list[Sequence[Any]], held: Held) -> Generator[Step, Any, Any]:
    """Write ``commands`` on a connection of ``pool``: the connection, or the exception
    that kept them from being sent (a half-sent batch is :class:`Unknown`)."""
    try:
        connection = yield pool.get_connection  # connects, or checks a pooled connection
    except NOT_SENT_ON as exc:
        return NotSent(str(exc))
    held[id(connection)] = (pool, connection)
    packed = connection.pack_commands(commands)
    try:
        yield functools.partial(connection.send_packed_command, packed, check_health=False)
    except LOST as exc:
        yield from _give_back(pool, connection, held, broken=True)
        return Unknown(str(exc))
    return connection


def _read(pool: Any, connection: Any, count: int, held: Held) -> Generator[Step, Any, list[Any]]:
    """The replies of ``count`` commands written on ``connection`` (see :func:`_send`)."""
    if isinstance(connection, Exception):
        return [connection] * count
    replies: list[Any] = []
    broken = False
    try:
        while len(replies) < count:
            try:
                replies.append((yield connection.read_response))
            except redis.exceptions.ResponseError as exc:
                replies.append(exc)
    except LOST as exc:
        broken = True
        replies += [Unknown(str(exc))] * (count - len(replies))
    yield from _give_back(pool, connection, held, broken=broken)
    return replies


def _give_back(
    pool: Any, connection: Any, held: Held, *, broken: bool
) -> Generator[Step, Any, None]:
    """Return ``connection`` to ``pool``, closed first when ``broken`` (lost, or with
    replies that will never be read)."""
    if broken:
        yield connection.disconnect
    yield functools.partial(pool.release, connection)
    held.pop(id(connection), None)


def _reread_slots(client: Any) -> Generator[Step, Any, None]:
    """Ask the cluster for its slot map again (a master failed over, a slot moved)."""
    with contextlib.suppress(*NOT_SENT_ON):  # the next round routes by what is known
        yield client.nodes_manager.initialize
