"""The state of a hub's Redis subscription connections (its links), without I/O.

A hub (one per process or event loop, :mod:`ws4redis.runtimes`) keeps one connection to the
server, or one to each master of a Redis Cluster that serves a channel somebody listens to.
Every I/O model runs each connection through the same sequence, and this module decides it:

* :class:`LinkState` is one connection. Once connected it subscribes again every channel
  somebody listens to, and once Redis confirmed those the websockets that asked for
  positions catch up on what the channels' history kept meanwhile (:class:`CatchUp`).
  Each reply is a message for the listeners of its channel, or a confirmation that wakes
  whoever waited for it. When the connection is lost, the waits for an unsubscribe are
  done, those for a subscription wait for the next connection, websockets with positions
  hold what arrives until they caught up, and the connection is tried again after the
  backoff (:class:`~ws4redis.core.subscriptions.Reconnection`).
* :class:`HubState` is all of a hub's connections: which to open and to close as channels
  come and go and move between a cluster's masters, and when to read the cluster's slot map
  again: when a node dropped a channel it no longer serves (an unasked unsubscribe), when a
  connection is lost (``MOVED`` ends one too: the node lost a slot), when a channel has no
  known master; with backoff while no node answers, and every :data:`SLOT_POLL` seconds
  while a master is away.

Every call returns a :class:`Plan`: what the hub must do now. The hub only does it: it wakes
the waits, opens and closes connections, sends the commands, reads the slot map when asked
to, and calls back with what happened.
"""

from __future__ import annotations

import logging
from collections.abc import Collection, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

from ws4redis.core.history import Position
from ws4redis.core.relay import Delivery
from ws4redis.core.shards import Address, Shards, SlotMap
from ws4redis.core.stats import Stats
from ws4redis.core.subscriptions import Backoff, Commands, Reconnection, Subscriptions, Wait

Sink = TypeVar("Sink")

SLOT_POLL = 0.25
"""Seconds between two reads of a cluster's slot map while a master's connection is down:
its replica's promotion shows there first, and the channels move at once, not on the
lost connection's backoff."""

Wire = list[tuple[Any, ...]]
"""Redis commands, each as the arguments redis-py packs."""

Missed = dict[bytes, tuple[dict[Sink, Position], list[Delivery]]]
"""Per channel: the positions of its websockets (:meth:`LinkState.positions`) and what its
history kept since the earliest of them."""


@dataclass(eq=False)
class CatchUp:
    """The channels a new connection subscribed again, and the wait for their confirmation:
    once it is done, their websockets with positions are handed what the history kept
    since (what was published while the connection was down would be lost to them)."""

    generation: int
    channels: list[bytes]
    confirmed: Wait


@dataclass(eq=False)
class Plan(Generic[Sink]):
    """What the hub must do now, in this order."""

    done: list[Wait] = field(default_factory=list)
    """Waits now done: wake them."""
    stop: list[LinkState[Sink]] = field(default_factory=list)
    """Connections to close: their node serves nothing of ours any more."""
    start: list[LinkState[Sink]] = field(default_factory=list)
    """Connections to open; each keeps its I/O object in :attr:`LinkState.handle`."""
    send: list[tuple[LinkState[Sink], Wire]] = field(default_factory=list)
    """Commands to send, per connection."""
    read_slots: bool = False
    """Read the cluster's slot map (unless a read is under way: it reads again once done)."""


class LinkState(Generic[Sink]):
    """One subscription connection: to the server, or to one master of a cluster."""

    def __init__(self, hub: HubState[Sink], node: Address, lost_at: float | None) -> None:
        self.hub = hub
        self.node = node
        self.book: Subscriptions[Sink] = hub.shards.books[node]
        self.sharded = hub.cluster
        self.message = b"smessage" if self.sharded else b"message"
        """What a message's reply starts with (a shard channel's on a cluster)."""
        self.reconnection = Reconnection(hub.logger, hub.stats)
        # It carries channels of connections closed as it opens (a master that failed
        # over): their outage ends when it is up.
        self.reconnection.inherit(lost_at)
        self.generation = 0
        """Connections made so far: a catch-up belongs to one of them."""
        self.closed = False
        self.handle: Any = None
        """The I/O layer's object for this connection."""

    @property
    def connected(self) -> bool:
        return self.book.online

    def wire(self, commands: Commands) -> Wire:
        return commands.wire(self.sharded)

    # -- the sequence of one connection ----------------------------------------------------

    def up(self, handle: Any, now: float) -> tuple[Wire, CatchUp | None]:
        """The connection is made at ``now``: what to send first (every channel somebody
        listens to, subscribed again) and their catch-up, if any; ``handle`` is the I/O
        layer's waiting object for its confirmation."""
        self.generation += 1
        confirmed = Wait(handle=handle)
        commands = self.book.connected(confirmed)
        self.reconnection.back(len(commands.subscribe), now)
        if not commands.subscribe:
            return [], None
        return self.wire(commands), CatchUp(self.generation, commands.subscribe, confirmed)

    def delivered(self, reply: Sequence[Any]) -> tuple[Collection[Sink], Delivery]:
        """A message came (a reply that starts with :attr:`message`): its listeners and
        what they get, prepared once for all of them."""
        channel = reply[1]
        sinks = self.book.listeners(channel)
        self.hub.stats.messages += 1
        self.hub.stats.deliveries += len(sinks)
        return sinks, Delivery(channel, reply[2])

    def confirmed(self, reply: Sequence[Any]) -> Plan[Sink]:
        """Any other reply: Redis confirmed a SUBSCRIBE or UNSUBSCRIBE."""
        plan: Plan[Sink] = Plan(done=self.book.confirmed(reply[0], reply[1]))
        if self.book.deaf(reply[1]):  # an unasked unsubscribe: the slot moved
            plan.read_slots = self.hub.stale()
        return plan

    def lost(self, now: float) -> tuple[Plan[Sink], float | None]:
        """The connection is gone at ``now`` (or refused a command: ``MOVED``): the plan,
        and how long to wait before connecting again (None: it was closed, it does not)."""
        if not self.sharded:  # a cluster's channels may move on to another connection
            for sink in self.book.sinks():
                relay = getattr(sink, "relay", None)
                if relay is not None:
                    relay.hold()
        plan: Plan[Sink] = Plan(done=self.book.lost())
        if self.closed:
            return plan, None
        plan.read_slots = self.hub.stale()  # a node that went away may have a successor
        return plan, self.reconnection.lost(now)

    # -- catching up after a reconnection --------------------------------------------------

    def current(self, catch_up: CatchUp) -> bool:
        """Whether ``catch_up`` is still due: lost again, the next connection's covers it."""
        return not self.closed and catch_up.generation == self.generation

    def positions(self, catch_up: CatchUp) -> dict[bytes, dict[Sink, Position]]:
        """Per channel of ``catch_up``, its open websockets that asked for positions, each
        with the last position it got (not those still opening: their recovery covers
        them). What the history kept since is what the hub reads for them."""
        found = {}
        for channel in catch_up.channels:
            offsets = {}
            for sink in self.book.listeners(channel):
                relay = getattr(sink, "relay", None)
                position = relay.position_of(channel) if relay is not None else None
                if position is not None:
                    offsets[sink] = position
            if offsets:
                found[channel] = offsets
        return found

    def caught_up(self, missed: Missed[Sink]) -> list[tuple[Sink, list[Delivery]]]:
        """What each websocket gets once the history was read: per channel, what it kept
        since the websocket's position, then what arrived while it held; each drops what
        it has already."""
        handed = []
        for sink in self.book.sinks():
            relay = getattr(sink, "relay", None)
            held = relay.release_held() if relay is not None else []
            deliveries = [d for offsets, found in missed.values() if sink in offsets for d in found]
            if deliveries or held:
                handed.append((sink, deliveries + held))
        return handed


class HubState(Generic[Sink]):
    """Every subscription connection of one hub, and the cluster's slot map.

    ``seeds``: the cluster's nodes to ask for the map, or None for a single server (one
    connection, which carries every channel). ``stats``: where messages are counted.
    """

    def __init__(
        self, seeds: Iterable[Address] | None, stats: Stats, logger: logging.Logger
    ) -> None:
        self.cluster = seeds is not None
        self._seeds = list(seeds or ())
        self.stats = stats
        self.logger = logger
        self.shards: Shards[Sink] = Shards(None if self.cluster else SlotMap.single(), stats)
        self.links: dict[Address, LinkState[Sink]] = {}
        self._stale = False
        self._backoff = Backoff()

    # -- what the websockets want ----------------------------------------------------------

    def join(self, sink: Sink, channels: Iterable[str | bytes]) -> tuple[Plan[Sink], Wait]:
        """Add ``sink`` to ``channels``; the wait is done once Redis confirmed them all."""
        commands, wait = self.shards.join(sink, channels)
        return self._dispatch(commands, Plan()), wait

    def leave(self, sink: Sink, channels: Iterable[str | bytes]) -> tuple[Plan[Sink], Wait]:
        """Take ``sink`` off ``channels``; the wait is done once Redis confirmed the
        unsubscribe of those nobody listens to any more."""
        commands, wait = self.shards.leave(sink, channels)
        return self._dispatch(commands, Plan()), wait

    def _dispatch(self, commands: dict[Address | None, Commands], plan: Plan[Sink]) -> Plan[Sink]:
        """Send each node's commands on its connection; open the connections the books
        need and close those of nodes that serve nothing any more."""
        start, stop, unmapped = self.shards.reconcile(self.links.keys())
        if unmapped:  # channels no known node serves
            plan.read_slots = self.stale()
        lost_at = Reconnection.earliest(self.links[node].reconnection for node in stop)
        for node in stop:
            link = self.links.pop(node)
            link.closed = True
            plan.stop.append(link)
        for node in start:
            self.links[node] = LinkState(self, node, lost_at)
            plan.start.append(self.links[node])
        for target, each in commands.items():
            if target is not None:
                link = self.links[target]
                plan.send.append((link, link.wire(each)))
        return plan

    # -- the cluster's slot map ------------------------------------------------------------

    def stale(self) -> bool:
        """The slot map must be read again; False on a single server, which has none."""
        self._stale = self.cluster
        return self.cluster

    def next_read(self) -> float | None:
        """For the hub's reader of the map: in how many seconds to read it next, or None
        to stop (it is read again when :meth:`stale` says so)."""
        if self._stale:
            return 0.0
        if any(not link.connected for link in self.links.values()):
            return SLOT_POLL  # a master is away: watch for its successor
        return None

    def sources(self) -> list[Address]:
        """A read of the map begins: the nodes to ask, in order (the known masters, then
        the seeds). What made the map stale before now, this read covers."""
        self._stale = False
        return [*self.shards.slots.nodes, *self._seeds]

    def unread(self) -> float:
        """No node gave the map: how long to wait before asking again."""
        return self._backoff.next()

    def remap(self, slots: SlotMap) -> Plan[Sink]:
        """The map was read: move each channel whose master changed to the new master's
        connection (see :meth:`~ws4redis.core.shards.Shards.remap`)."""
        self._backoff.reset()
        commands, done = self.shards.remap(slots)
        return self._dispatch(commands, Plan(done=done))
