"""Channels spread over the nodes of a Redis Cluster, one subscription book per node.

With plain ``PUBLISH`` a cluster copies every message to every node, so only sharded
pub/sub (``SPUBLISH``/``SSUBSCRIBE``) grows with the node count: a shard channel lives in a
hash slot like a key, and only the master serving that slot delivers it. A websocket process
therefore keeps one subscription connection per master it needs, and this module decides,
without doing any I/O, which connection carries which channel:

* :class:`SlotMap` is what ``CLUSTER SLOTS`` said: which master serves each hash slot.
* :class:`Shards` keeps one :class:`~ws4redis.core.subscriptions.Subscriptions` book per
  node and routes every channel by its slot. When the map changes (a failover, a slot
  migration, a node that came back) :meth:`Shards.remap` moves each channel whose master
  changed, with its listeners and whoever waits for its subscription, to the new node's
  book; those waits are settled by the new node's confirmation.
* A single server (standalone or Sentinel) is the same thing with one node serving every
  slot, so both topologies share the hubs' code.

Keys a script touches together with a channel (its history) must share the channel's slot:
:func:`colocated` names them so.
"""

from __future__ import annotations

from binascii import crc_hqx
from collections.abc import Collection, Iterable, Sequence
from typing import Any, Generic, TypeVar

from ws4redis.core.stats import Stats
from ws4redis.core.subscriptions import Commands, Subscriptions, Wait, keys

Sink = TypeVar("Sink")
Address = tuple[str, int]
Routed = dict[Address | None, Commands]
"""Commands per node (``None``: the one server that is not a cluster)."""

SERVER: Address = ("", 0)
"""The node of a single server (standalone, or the master a Sentinel names)."""


SLOTS = 16384


def key_slot(key: bytes) -> int:
    """The hash slot of a key or shard channel: CRC16 (XMODEM) of its hash tag (the part
    between the first ``{`` and the next ``}``, when not empty) or of all of it. The same
    computation as redis-py's, which the core may not import (it brings sockets along)."""
    start = key.find(b"{")
    if start >= 0:
        end = key.find(b"}", start + 1)
        if end > start + 1:
            key = key[start + 1 : end]
    return crc_hqx(key, 0) % SLOTS


class SlotMap:
    """Which master serves each hash slot; a slot nobody serves maps to None."""

    def __init__(self, ranges: Iterable[tuple[int, int, Address]] = ()) -> None:
        self._ranges = sorted(ranges)
        self._starts = [start for start, _, _ in self._ranges]

    @classmethod
    def single(cls, address: Address = SERVER) -> SlotMap:
        """Every slot on one server."""
        return cls([(0, SLOTS - 1, address)])

    @classmethod
    def from_reply(cls, reply: Sequence[Any], asked: Address) -> SlotMap:
        """Read a ``CLUSTER SLOTS`` reply (raw, as RESP2 or RESP3 give it) from ``asked``.

        Each entry is ``[start, end, [host, port, id, ...], replicas...]``; an empty host
        means the node that answered.
        """
        ranges = []
        for start, end, master, *_replicas in reply:
            host = master[0].decode() if isinstance(master[0], bytes) else master[0]
            ranges.append((int(start), int(end), (host or asked[0], int(master[1]))))
        return cls(ranges)

    def node(self, key: bytes) -> Address | None:
        """The master serving ``key``'s slot."""
        slot = key_slot(key)
        low, high = 0, len(self._starts)
        while low < high:  # the last range starting at or before the slot
            middle = (low + high) // 2
            if self._starts[middle] <= slot:
                low = middle + 1
            else:
                high = middle
        if low == 0:
            return None
        start, end, address = self._ranges[low - 1]
        return address if start <= slot <= end else None

    @property
    def nodes(self) -> set[Address]:
        return {address for _, _, address in self._ranges}

    def __eq__(self, other: object) -> bool:
        return isinstance(other, SlotMap) and self._ranges == other._ranges

    def __repr__(self) -> str:
        return f"SlotMap({self._ranges!r})"


class Shards(Generic[Sink]):
    """Subscription books per node, and the channel routing between them.

    A channel whose slot no known master serves waits in the book of node ``None``, which is
    never online: its listeners' waits stay parked until a new map routes it somewhere.
    """

    def __init__(self, slots: SlotMap | None = None, stats: Stats | None = None) -> None:
        self.slots = slots or SlotMap()
        self.stats = stats if stats is not None else Stats()
        """Where every book counts its subscriptions and channels."""
        self.books: dict[Address | None, Subscriptions[Sink]] = {}

    def book(self, node: Address | None) -> Subscriptions[Sink]:
        """The book of ``node``, made on first use."""
        book = self.books.get(node)
        if book is None:
            book = self.books[node] = Subscriptions(self.stats)
        return book

    def join(self, sink: Sink, channels: Iterable[str | bytes]) -> tuple[Routed, Wait]:
        """Add ``sink`` to ``channels``: the commands per node, and one wait done once every
        channel is subscribed on its node."""
        wait = Wait()
        commands: dict[Address | None, Commands] = {}
        for node, routed in self._route(channels).items():
            commands[node] = self.book(node).join(sink, routed, wait)[0]
        return _nonempty(commands), wait

    def leave(self, sink: Sink, channels: Iterable[str | bytes]) -> tuple[Routed, Wait]:
        """Take ``sink`` off ``channels``: the commands per node, and one wait done once the
        channels nobody listens to any more are unsubscribed."""
        wait = Wait()
        commands: dict[Address | None, Commands] = {}
        for node, routed in self._route(channels).items():
            if node in self.books:
                commands[node] = self.books[node].leave(sink, routed, wait)[0]
        return _nonempty(commands), wait

    def _route(self, channels: Iterable[str | bytes]) -> dict[Address | None, list[bytes]]:
        routed: dict[Address | None, list[bytes]] = {}
        for key in keys(channels):
            routed.setdefault(self.slots.node(key), []).append(key)
        return routed

    def remap(self, slots: SlotMap) -> tuple[Routed, list[Wait]]:
        """Follow a new slot map: every channel whose master changed moves to the new
        master's book. Returns the commands per node and the waits now done (those of
        unsubscribes on the old node: a node that lost the slot delivers it no more).

        Nothing is sent to the old node: it no longer serves the slot, so it has dropped
        the subscription itself (and would answer ``MOVED``).
        """
        self.slots = slots
        commands: dict[Address | None, Commands] = {}
        done: list[Wait] = []
        for node, book in list(self.books.items()):
            for key in [key for key in book.channels() if slots.node(key) != node]:
                sinks, waits, settled = book.evict(key)
                done += settled
                if sinks:
                    target = slots.node(key)
                    adopted = self.book(target).adopt(key, sinks, waits)
                    commands.setdefault(target, Commands()).subscribe += adopted.subscribe
        for node, book in self.books.items():
            commands.setdefault(node, Commands()).subscribe += book.resync().subscribe
        for node in [node for node, book in self.books.items() if not book.channels()]:
            if node not in slots.nodes:
                del self.books[node]
        return _nonempty(commands), done

    def reconcile(self, links: Collection[Address]) -> tuple[list[Address], list[Address], bool]:
        """Given the nodes that have a connection: those that need one (their book has
        channels), those whose connection can go (no book any more), and whether some
        channels wait for a slot map (the book of node None)."""
        start = [node for node in self.books if node is not None and node not in links]
        stop = [node for node in links if node not in self.books]
        return start, stop, None in self.books

    def listeners(self, node: Address | None, key: bytes) -> Collection[Sink]:
        book = self.books.get(node)
        return book.listeners(key) if book is not None else ()


def _nonempty(commands: Routed) -> Routed:
    return {node: each for node, each in commands.items() if each}


def colocated(prefix: str, name: str) -> str:
    """A key made of ``prefix`` and ``name`` that lives in ``name``'s hash slot, wherever
    that can be: Redis Cluster hashes only the part between the first ``{`` and the next
    ``}`` when there is one, so ``name`` is wrapped in braces unless it carries such a tag
    already. A name with a ``}`` and no tag cannot be wrapped; its key is returned as it is
    (the caller checks the slot when it matters). ``prefix`` must not contain braces.
    """
    start = name.find("{")
    if (start >= 0 and name.find("}", start + 1) > start + 1) or "}" in name:
        return prefix + name
    return f"{prefix}{{{name}}}"
