"""A hub's Redis links, fed by hand what Redis would answer and what the connections do."""

from __future__ import annotations

import logging
from dataclasses import dataclass

from tests.core.test_recovery import CHANNEL, HISTORY, live
from tests.core.test_relay import relay
from ws4redis.core.history import Position
from ws4redis.core.links import SLOT_POLL, HubState, LinkState, Plan
from ws4redis.core.relay import Start
from ws4redis.core.shards import SERVER, SlotMap
from ws4redis.core.stats import Stats
from ws4redis.core.websocket import FramedRelay

A, B, C = ("10.0.0.1", 7000), ("10.0.0.2", 7000), ("10.0.0.3", 7000)
logger = logging.getLogger("ws4redis.hub")


@dataclass(eq=False)
class Sink:
    """A websocket as a hub sees it; with a relay when it may have positions."""

    relay: FramedRelay | None = None


def server() -> HubState[Sink]:
    return HubState(None, Stats(), logger)


def cluster() -> HubState[Sink]:
    return HubState([A], Stats(), logger)


def only(plan: Plan[Sink]) -> LinkState[Sink]:
    (link,) = plan.start
    return link


def test_a_single_server_link_subscribes_once_up_and_wakes_the_websocket_on_confirmation():
    hub = server()
    plan, wait = hub.join(Sink(), ["news"])
    link = only(plan)
    assert link.node == SERVER and not link.connected and not plan.send and not plan.read_slots
    wire, catch_up = link.up("handle", now=0.0)
    assert wire == [("SUBSCRIBE", b"news")] and link.connected
    assert catch_up is not None and catch_up.channels == [b"news"]
    assert catch_up.confirmed.handle == "handle"
    confirmed = link.confirmed([b"subscribe", b"news", 1])
    assert confirmed.done == [wait, catch_up.confirmed] and not confirmed.read_slots


def test_once_connected_commands_go_out_on_the_link_and_an_empty_connection_sends_nothing():
    hub = server()
    sink = Sink()
    link = only(hub.join(sink, ["a"])[0])
    hub.leave(sink, ["a"])  # gone before the connection was up
    assert link.up(None, now=0.0) == ([], None)
    plan, _ = hub.join(Sink(), ["b"])
    assert plan.send == [(link, [("SUBSCRIBE", b"b")])] and not plan.start


def test_a_message_goes_to_the_listeners_of_its_channel_prepared_once_and_counted():
    hub = server()
    first, second = Sink(), Sink()
    link = only(hub.join(first, ["news"])[0])
    hub.join(second, ["news"])
    link.up(None, now=0.0)
    sinks, delivery = link.delivered([b"message", b"news", b"hello"])
    assert set(sinks) == {first, second}
    assert (delivery.channel, delivery.data) == (b"news", b"hello")
    link.delivered([b"message", b"nobody", b"x"])
    assert (hub.stats.messages, hub.stats.deliveries) == (2, 2)


def test_a_lost_connection_backs_off_doubling_and_is_back_once_up(caplog):
    hub = server()
    sink = Sink()
    link = only(hub.join(sink, ["news"])[0])
    link.up(None, now=0.0)
    link.confirmed([b"subscribe", b"news", 1])
    _, leaving = hub.leave(sink, ["news"])
    plan, pause = link.lost(now=1.0)
    assert plan.done == [leaving] and pause == 0.1  # a lost connection listens to nothing
    assert not plan.read_slots  # a single server has no slot map
    assert [link.lost(now)[1] for now in (1.1, 1.3)] == [0.2, 0.4]
    link.up(None, now=5.0)
    assert link.lost(now=6.0)[1] == 0.1  # the next outage starts from the bottom again
    assert [r.getMessage() for r in caplog.records][:2] == [
        "Lost the Redis subscription connection; reconnecting",
        "Redis is back after 4.0 s; 0 channels resubscribed",
    ]


def test_a_subscription_waits_through_an_outage_for_the_next_connection():
    hub = server()
    first_plan, first = hub.join(Sink(), ["news"])
    link = only(first_plan)
    _, unconfirmed = link.up(None, now=0.0)
    link.lost(now=1.0)
    plan, wait = hub.join(Sink(), ["news"])
    assert not plan.send and not wait.done  # nothing goes out on a lost connection
    wire, catch_up = link.up(None, now=2.0)
    assert wire == [("SUBSCRIBE", b"news")]
    assert catch_up is not None and unconfirmed is not None
    done = link.confirmed([b"subscribe", b"news", 1]).done
    assert {id(w) for w in done} == {
        id(first),
        id(wait),
        id(unconfirmed.confirmed),
        id(catch_up.confirmed),
    }
    assert not link.current(unconfirmed)  # its websockets catch up with the new connection


def positioned_sink() -> Sink:
    """An open websocket that asked for positions and got offset 2 of CHANNEL."""
    framed = relay("subscribe-broadcast&recover", opened=False, history=HISTORY)
    framed.opened(Start([], {CHANNEL: "broadcast"}, {CHANNEL: Position("e", 2)}))
    framed.data_to_send()  # the 101
    return Sink(framed)


def test_after_an_outage_websockets_with_positions_catch_up_then_get_what_they_held():
    hub = server()
    sink, plain = positioned_sink(), Sink()
    link = only(hub.join(sink, [CHANNEL])[0])
    hub.join(plain, [CHANNEL])
    link.up(None, now=0.0)
    link.lost(now=1.0)  # from here what arrives is held
    _, catch_up = link.up(None, now=2.0)
    assert catch_up is not None and link.current(catch_up)
    assert sink.relay is not None and not sink.relay.deliver(live("e", 5, "m5"))
    positions = link.positions(catch_up)
    assert positions == {CHANNEL: {sink: Position("e", 2)}}  # not the one without positions
    history = [live("e", n, f"m{n}") for n in (3, 4, 5)]
    ((got, deliveries),) = link.caught_up({CHANNEL: (positions[CHANNEL], history)})
    assert got is sink
    assert [d.data for d in deliveries] == [d.data for d in history] + [live("e", 5, "m5").data]


def test_a_catch_up_of_a_connection_lost_again_is_void_the_next_covers_it():
    hub = server()
    link = only(hub.join(Sink(), ["news"])[0])
    link.up(None, now=0.0)
    link.lost(now=1.0)
    _, first = link.up(None, now=2.0)
    link.lost(now=3.0)
    _, second = link.up(None, now=4.0)
    assert first is not None and second is not None
    assert not link.current(first) and link.current(second)


def test_cluster_channels_wait_for_the_slot_map_which_is_read_with_backoff():
    hub = cluster()
    plan, wait = hub.join(Sink(), [b"ch"])
    assert plan.read_slots and not plan.start  # no known master serves it yet
    assert hub.next_read() == 0.0
    assert hub.sources() == [A]  # nothing known yet: the seeds
    assert hub.next_read() is None  # this read covers what made the map stale
    assert [hub.unread() for _ in range(3)] == [0.1, 0.2, 0.4]
    plan = hub.remap(SlotMap([(0, 16383, B)]))
    link = only(plan)
    assert link.node == B and link.sharded and link.message == b"smessage"
    assert hub.next_read() == SLOT_POLL  # a master is not connected yet: watch the map
    assert hub.sources() == [B, A]  # the known masters first
    wire, _ = link.up(None, now=0.0)
    assert wire == [("SSUBSCRIBE", b"ch")] and hub.next_read() is None
    assert link.confirmed([b"ssubscribe", b"ch", 1]).done[0] is wait
    hub.stale()
    hub.remap(SlotMap([(0, 16383, B)]))
    assert hub.unread() == 0.1  # a map was read: the backoff starts from the bottom


def test_a_node_that_drops_a_channel_unasked_has_the_map_read_again():
    hub = cluster()
    hub.join(Sink(), [b"ch"])
    link = only(hub.remap(SlotMap([(0, 16383, B)])))
    link.up(None, now=0.0)
    link.confirmed([b"ssubscribe", b"ch", 1])
    plan = link.confirmed([b"sunsubscribe", b"ch", 0])  # the slot moved away from B
    assert plan.read_slots and hub.next_read() == 0.0


def test_a_failover_moves_the_channels_to_the_new_master_which_ends_the_outage(caplog):
    hub = cluster()
    hub.join(Sink(), [b"ch"])
    old = only(hub.remap(SlotMap([(0, 16383, A)])))
    old.up(None, now=0.0)
    old.confirmed([b"ssubscribe", b"ch", 1])
    plan, pause = old.lost(now=10.0)  # the master dies
    assert plan.read_slots and pause == 0.1  # its successor may be in the map already
    assert hub.next_read() == 0.0
    hub.sources()
    plan = hub.remap(SlotMap([(0, 16383, C)]))
    assert plan.stop == [old] and old.closed
    new = only(plan)
    assert new.node == C and new.reconnection.lost_at == 10.0
    assert old.lost(now=11.0)[1] is None  # closed: it does not connect again
    wire, _ = new.up(None, now=12.5)
    assert wire == [("SSUBSCRIBE", b"ch")]
    assert "Redis is back after 2.5 s; 1 channels resubscribed" in caplog.text


def test_cluster_links_lost_do_not_hold_what_arrives():
    """Its channels may move to another master's connection, whose own catch-up hands over
    nothing held here."""
    hub = cluster()
    sink = positioned_sink()
    hub.join(sink, [CHANNEL])
    link = only(hub.remap(SlotMap([(0, 16383, A)])))
    link.up(None, now=0.0)
    link.lost(now=1.0)
    assert sink.relay is not None and sink.relay.deliver(live("e", 3, "m3"))


def test_the_last_listener_leaving_closes_the_link_of_its_node():
    hub = cluster()
    sink = Sink()
    hub.join(sink, [b"ch"])
    link = only(hub.remap(SlotMap([(0, 16383, A)])))
    link.up(None, now=0.0)
    link.confirmed([b"ssubscribe", b"ch", 1])
    plan, wait = hub.leave(sink, [b"ch"])
    assert plan.send == [(link, [("SUNSUBSCRIBE", b"ch")])]
    assert link.confirmed([b"sunsubscribe", b"ch", 0]).done == [wait]
    assert hub.remap(SlotMap([(0, 16383, B)])).stop == [link]
