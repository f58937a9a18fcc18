"""Routing channels over cluster masters, fed with what Redis would answer."""

from __future__ import annotations

import redis.crc

from ws4redis.core.shards import SERVER, Shards, SlotMap, colocated, key_slot

A, B = ("10.0.0.1", 7000), ("10.0.0.2", 7000)
SSUBSCRIBE, SUNSUBSCRIBE = b"ssubscribe", b"sunsubscribe"


def halves(low: tuple[str, int], high: tuple[str, int]) -> SlotMap:
    return SlotMap([(0, 8191, low), (8192, 16383, high)])


def channel_on(node, slots: SlotMap, stem: str = "ch") -> bytes:
    return next(key for n in range(100) if slots.node(key := f"{stem}{n}".encode()) == node)


def test_key_slot_is_the_cluster_hash_with_hash_tags():
    for key in [b"ws4redis:broadcast:foo", b"a{user1000}.following", b"{}x", b"x{}{y}", b""]:
        assert key_slot(key) == redis.crc.key_slot(key)


def test_colocated_keys_share_the_slot_of_their_name():
    for name in ["ws4redis:broadcast:foo", "p:user:{joe}:chat", "a{b", "{"]:
        key = colocated("p:history:", name)
        assert key.startswith("p:history:")
        assert key_slot(key.encode()) == key_slot(name.encode())
    for name in ["a}b", "{}x"]:  # cannot be: the caller checks the slot
        assert colocated("p:", name) == f"p:{name}"


def test_slot_map_read_from_a_cluster_slots_reply():
    reply = [
        [0, 5460, [b"127.0.0.1", 7001, b"id1"], [b"127.0.0.1", 7004, b"id4"]],
        [5461, 16383, [b"", 7002, b"id2"]],  # an empty host: the node asked
    ]
    slots = SlotMap.from_reply(reply, ("10.1.1.1", 7002))
    assert slots.nodes == {("127.0.0.1", 7001), ("10.1.1.1", 7002)}
    assert slots.node(b"{\x00}") is not None
    assert SlotMap([(0, 99, A)]).node(channel_on(None, SlotMap([(0, 99, A)]))) is None
    assert SlotMap.single().node(b"anything") == SERVER


def test_join_sends_each_channel_to_the_master_of_its_slot_and_waits_for_all():
    slots = halves(A, B)
    shards: Shards[str] = Shards(slots)
    on_a, on_b = channel_on(A, slots), channel_on(B, slots)
    for node in (A, B):
        shards.book(node).connected()
    commands, wait = shards.join("ws", [on_a, on_b])
    assert {node: c.subscribe for node, c in commands.items()} == {A: [on_a], B: [on_b]}
    assert commands[A].wire(sharded=True) == [("SSUBSCRIBE", on_a)]
    assert shards.books[A].confirmed(SSUBSCRIBE, on_a) == []
    assert shards.books[B].confirmed(SSUBSCRIBE, on_b) == [wait]
    assert shards.listeners(B, on_b) == {"ws"}


def test_unmapped_channels_wait_until_a_map_routes_them():
    shards: Shards[str] = Shards()
    key = b"news"
    commands, wait = shards.join("ws", [key])
    assert commands == {} and not wait.done
    slots = SlotMap.single(A)
    shards.book(A).connected()
    commands, done = shards.remap(slots)
    assert commands[A].subscribe == [key] and done == []
    assert None not in shards.books
    assert shards.books[A].confirmed(SSUBSCRIBE, key) == [wait]


def test_remap_moves_listeners_and_waits_to_the_new_master():
    """A failover: the slot's new master subscribes the channel; its listener keeps
    getting it, and whoever waited for the subscription is woken by the new master."""
    before = halves(A, B)
    key = channel_on(A, before)
    shards: Shards[str] = Shards(before)
    shards.book(A).connected()
    shards.book(B).connected()
    _, first = shards.join("one", [key])
    shards.books[A].confirmed(SSUBSCRIBE, key)
    assert first.done
    _, second = shards.join("two", [key])  # nothing to send: subscribed already
    assert second.done
    shards.books[A].lost()  # the master dies
    _, third = shards.join("three", [key])
    assert not third.done
    commands, done = shards.remap(SlotMap.single(B))
    assert commands == {B: commands[B]} and commands[B].subscribe == [key]
    assert done == [] and A not in shards.books
    assert shards.listeners(B, key) == {"one", "two", "three"}
    assert shards.books[B].confirmed(SSUBSCRIBE, key) == [third]


def test_an_unasked_unsubscribe_leaves_a_deaf_channel_that_a_remap_subscribes_again():
    slots = SlotMap.single(A)
    shards: Shards[str] = Shards(slots)
    book = shards.book(A)
    book.connected()
    key = b"news"
    shards.join("ws", [key])
    book.confirmed(SSUBSCRIBE, key)
    assert not book.deaf(key)
    assert book.confirmed(SUNSUBSCRIBE, key) == []  # the node lost the slot
    assert book.deaf(key)
    commands, _ = shards.remap(slots)  # the map says the slot is here after all
    assert commands[A].subscribe == [key]


def test_leaving_while_unmapped_and_after_a_remap_sends_nothing_to_the_old_node():
    before = halves(A, B)
    key = channel_on(A, before)
    shards: Shards[str] = Shards(before)
    shards.book(A).connected()
    shards.join("ws", [key])
    shards.books[A].confirmed(SSUBSCRIBE, key)
    shards.remap(SlotMap.single(B))  # B is not connected yet: parked there
    commands, wait = shards.leave("ws", [key])
    assert commands == {} and wait.done
    assert shards.listeners(B, key) == ()


def test_reconcile_names_the_connections_to_open_and_to_close():
    shards: Shards[str] = Shards()
    shards.join("ws", [b"news"])
    assert shards.reconcile([]) == ([], [], True)  # waits for a map
    shards.remap(SlotMap.single(A))
    assert shards.reconcile([]) == ([A], [], False)
    shards.remap(SlotMap.single(B))  # a failover: A serves nothing any more
    assert shards.reconcile([A]) == ([B], [A], False)
