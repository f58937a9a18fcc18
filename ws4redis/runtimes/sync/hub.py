"""Redis subscriptions per process, shared by the websockets of a blocking runtime.

The twin of :mod:`ws4redis.runtimes.asyncio.hub` for threads, method for method: under
``runserver`` a real thread reads each connection (the server's, or one per cluster
master); under uWSGI with gevent the same code runs as greenlets (gevent's monkey-patching
makes ``threading`` and sockets cooperative). :mod:`ws4redis.core.links` decides what to
send, on which connection, when to reconnect, catch up or read the slot map, and when a
websocket may count on its channels; this module only sends, reads and wakes. One lock
guards the core's state: every call into it, and every push to a websocket, holds it."""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Collection
from typing import Any, Protocol

import redis
import redis.exceptions

from ws4redis.bus.pool import ConnectionKey, cluster_seeds, configured_connection
from ws4redis.core.links import CatchUp, HubState, LinkState, Plan, Wire
from ws4redis.core.relay import Delivery
from ws4redis.core.shards import SlotMap
from ws4redis.core.stats import STATS
from ws4redis.core.subscriptions import Wait
from ws4redis.runtimes import hubs


class Sink(Protocol):
    """A local websocket as the hub sees it."""

    def push(self, delivery: Delivery) -> bool:
        """Take a message, from the hub's thread."""
        ...


class Hub:
    """The process's Redis subscription connections and the websockets on each channel."""

    def __init__(self, connection_kwargs: dict[str, Any]) -> None:
        self._kwargs = hubs.subscription_kwargs(connection_kwargs)
        self._state: HubState[Sink] = HubState(cluster_seeds(self._kwargs), STATS, hubs.logger)
        self._lock = threading.Lock()
        self._refresher: threading.Thread | None = None

    # -- membership ------------------------------------------------------------------------

    def add(self, sink: Sink, channels: list[str]) -> None:
        """Deliver ``channels`` to ``sink``; returns once Redis confirmed them (TimeoutError
        after ``CONFIRM_WAIT`` seconds)."""
        with self._lock:
            done = self._send(*self._state.join(sink, channels))
        if not done.wait(hubs.CONFIRM_WAIT):
            raise TimeoutError("Redis did not confirm the subscription")

    def remove(self, sink: Sink, channels: list[str]) -> None:
        """Stop delivering ``channels`` to ``sink``; returns once Redis confirmed the
        unsubscribe of channels nobody wants any more (or after ``CONFIRM_WAIT``)."""
        with self._lock:
            done = self._send(*self._state.leave(sink, channels))
        done.wait(hubs.CONFIRM_WAIT)

    def _send(self, plan: Plan[Sink], wait: Wait) -> threading.Event:
        """Under the lock: carry out ``plan``; an event set once ``wait`` is done."""
        wait.handle = threading.Event()
        if wait.done:
            wait.handle.set()
        self._apply(plan)
        return wait.handle

    def _apply(self, plan: Plan[Sink]) -> None:
        """Under the lock: do what the core decided."""
        for wait in plan.done:
            wait.handle.set()
        for state in plan.stop:
            state.handle.close()
        for state in plan.start:
            state.handle = Link(self, state)
        for state, wire in plan.send:
            state.handle.write(wire)
        if plan.read_slots and (self._refresher is None or not self._refresher.is_alive()):
            self._refresher = threading.Thread(
                target=self._refresh, name="ws4redis-slots", daemon=True
            )
            self._refresher.start()

    # -- the cluster's slot map ------------------------------------------------------------

    def _refresh(self) -> None:
        """Read the cluster's slot map (retrying with backoff) as long as the core wants it
        read, and move the channels whose master changed."""
        state = self._state
        while True:
            with self._lock:
                pause = state.next_read()
                if pause is None:
                    self._refresher = None
                    return
            time.sleep(pause)
            while (slots := self._read_slots()) is None:
                time.sleep(state.unread())
            with self._lock:
                self._apply(state.remap(slots))

    def _read_slots(self) -> SlotMap | None:
        """The slot map from the first node that gives one."""
        with self._lock:
            nodes = self._state.sources()
        for node in nodes:
            client = hubs.node_client(self._kwargs, node)
            try:
                reply = client.execute_command("CLUSTER", "SLOTS")
            except (*hubs.LOST, redis.exceptions.ResponseError):
                continue
            finally:
                client.close()
            if reply:
                return SlotMap.from_reply(reply, node)
        return None

    # -- delivery --------------------------------------------------------------------------

    @staticmethod
    def hand(sinks: Collection[Sink], delivery: Delivery) -> None:
        """Under the lock: give ``delivery`` to ``sinks`` (their writers send it)."""
        for sink in sinks:
            sink.push(delivery)


class Link:
    """The subscription connection to one node, read by a thread of its own."""

    def __init__(self, hub: Hub, state: LinkState[Sink]) -> None:
        self.hub = hub
        self.state = state
        # The client stays referenced: a Sentinel connection asks its pool for the master.
        self._client = hubs.node_client(hub._kwargs, state.node)
        self.connection = self._client.connection_pool.make_connection()
        threading.Thread(target=self._run, name="ws4redis-hub", daemon=True).start()

    def close(self) -> None:
        """Under the hub's lock: stop (the core closed the state already)."""
        self.connection.disconnect()

    def write(self, wire: Wire) -> None:
        """Under the hub's lock: send ``wire``."""
        if not wire:
            return
        try:
            self.connection.send_packed_command(self.connection.pack_commands(wire))
        except hubs.LOST:  # the reader sees the closed connection and starts over
            self.connection.disconnect()

    def _run(self) -> None:
        """Connect, subscribe what is wanted, read; after a loss, again with backoff."""
        state, lock = self.state, self.hub._lock
        while True:
            try:
                self.connection.connect()
                with lock:
                    if state.closed:  # closed while connecting: its node serves us no more
                        self.connection.disconnect()
                        return
                    wire, catch_up = state.up(threading.Event(), time.monotonic())
                    self.write(wire)
                if catch_up is not None:
                    threading.Thread(target=self._catch_up, args=(catch_up,), daemon=True).start()
                self._read_forever()
            except hubs.LOST:
                pass
            except Exception:  # a fault of ours: log it, and the websockets keep a reader
                hubs.restarted()
            with lock:
                plan, pause = state.lost(time.monotonic())
                self.hub._apply(plan)
                self.connection.disconnect()
            if pause is None:
                return
            time.sleep(pause)

    def _catch_up(self, catch_up: CatchUp) -> None:
        """Once Redis confirmed the channels of a new connection: hand each websocket that
        asked for positions what the history kept since its position."""
        state, lock = self.state, self.hub._lock
        while not catch_up.confirmed.handle.wait(hubs.CONFIRM_WAIT):
            if not state.current(catch_up):
                return
        with lock:
            if not state.current(catch_up):
                return  # lost again: the next connection catches up
            positions = state.positions(catch_up)
        missed = hubs.read_missed(positions)
        with lock:  # see _read_forever: nothing live is pushed meanwhile
            for sink, deliveries in state.caught_up(missed):
                for delivery in deliveries:
                    self.hub.hand((sink,), delivery)

    def _read_forever(self) -> None:
        read, state, lock = self.connection.read_response, self.state, self.hub._lock
        hand, apply = self.hub.hand, self.hub._apply
        while True:
            try:
                reply = read(push_request=True)  # with RESP3, messages are pushes
            except redis.exceptions.ResponseError as exc:  # MOVED: this node lost a slot
                # Start this connection over: the refused command's waits are parked, and
                # the map read again sends each channel where it lives now.
                raise redis.exceptions.ConnectionError(f"the slot map changed: {exc}") from exc
            # Under the lock: a catch-up hands over what its websockets missed, and stops
            # holding what arrives live, in one step that this must not split.
            with lock:
                hubs.received(reply, state, hand, apply)


_hubs: dict[tuple[int, ConnectionKey], Hub] = {}
_hubs_lock = threading.Lock()


def get_hub() -> Hub:
    """The hub of this process for the configured Redis (uWSGI forks its workers after
    loading the application, so the process id is part of the key)."""
    kwargs, connection = configured_connection()
    key = (os.getpid(), connection)
    with _hubs_lock:
        hub = _hubs.get(key)
        if hub is None:
            hub = _hubs[key] = Hub(kwargs)
        return hub


class HubSubscription(hubs.SharedSubscription):
    """A websocket's subscription, served by the process's :class:`Hub`."""

    __slots__ = ("hub", "sink")

    def __init__(self, hub: Hub, sink: Sink) -> None:
        super().__init__()
        self.hub = hub
        self.sink = sink

    def _add(self, names: list[str]) -> None:
        self.hub.add(self.sink, names)

    def _remove(self, names: list[str]) -> None:
        self.hub.remove(self.sink, names)
