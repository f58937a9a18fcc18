"""The subscription bookkeeping of a shared Redis connection, fed replies by hand."""

from __future__ import annotations

import logging

from ws4redis.core.subscriptions import Reconnection, Subscriptions, Wait

SUBSCRIBE, UNSUBSCRIBE = b"subscribe", b"unsubscribe"  # the confirmations Redis sends


def online() -> Subscriptions[str]:
    book: Subscriptions[str] = Subscriptions()
    assert not book.connected()  # nothing wanted yet: nothing to send
    return book


def test_first_listener_subscribes_and_waits_for_the_confirmation():
    book = online()
    commands, wait = book.join("a", ["news"])
    assert commands.subscribe == [b"news"] and not commands.unsubscribe
    assert not wait.done
    assert book.confirmed(SUBSCRIBE, b"news") == [wait]
    assert wait.done


def test_second_listener_sends_nothing_and_waits_for_the_same_confirmation():
    book = online()
    _, first = book.join("a", ["news"])
    commands, second = book.join("b", ["news"])
    assert not commands
    assert book.confirmed(SUBSCRIBE, b"news") == [first, second]
    commands, third = book.join("c", ["news"])
    assert not commands and third.done  # already subscribed: nothing to wait for
    assert set(book.listeners(b"news")) == {"a", "b", "c"}


def test_last_listener_unsubscribes_and_waits_for_the_confirmation():
    book = online()
    book.join("a", ["news"])
    book.join("b", ["news"])
    book.confirmed(SUBSCRIBE, b"news")
    commands, wait = book.leave("a", ["news"])
    assert not commands and wait.done
    commands, wait = book.leave("b", ["news"])
    assert commands.unsubscribe == [b"news"] and not wait.done
    assert book.confirmed(UNSUBSCRIBE, b"news") == [wait]
    assert book.listeners(b"news") == ()
    assert not book.connected()  # after a reconnect nothing would be subscribed again


def test_listener_arriving_while_the_unsubscribe_is_in_flight_is_not_deaf():
    book = online()
    book.join("a", ["news"])
    book.confirmed(SUBSCRIBE, b"news")
    left, leaving = book.leave("a", ["news"])
    joined, wait = book.join("b", ["news"])
    assert left.unsubscribe == [b"news"] and joined.subscribe == [b"news"]
    assert book.confirmed(UNSUBSCRIBE, b"news") == [leaving]  # b waits for its SUBSCRIBE
    assert not wait.done
    assert book.confirmed(SUBSCRIBE, b"news") == [wait]
    assert list(book.listeners(b"news")) == ["b"]
    # Subscribed now: the next listener waits for nothing, the last one unsubscribes.
    assert book.join("c", ["news"])[1].done
    book.leave("b", ["news"])
    assert book.leave("c", ["news"])[0].unsubscribe == [b"news"]


def test_leave_and_return_before_the_subscribe_is_confirmed():
    book = online()
    book.join("a", ["news"])
    assert book.leave("a", ["news"])[0].unsubscribe == [b"news"]
    commands, wait = book.join("a", ["news"])
    assert commands.subscribe == [b"news"]
    book.confirmed(SUBSCRIBE, b"news")
    book.confirmed(UNSUBSCRIBE, b"news")
    assert book.confirmed(SUBSCRIBE, b"news") == [wait]


def test_confirmation_nobody_asked_for_is_ignored():
    book = online()
    assert book.confirmed(SUBSCRIBE, b"other") == []
    book.join("a", ["news"])
    assert book.confirmed(UNSUBSCRIBE, b"news") == []  # not what is in flight
    assert len(book.confirmed(SUBSCRIBE, b"news")) == 1


def test_lost_connection_parks_subscribe_waits_and_resubscribes_everything():
    book = online()
    book.join("a", ["news", "sport"])
    book.confirmed(SUBSCRIBE, b"news")
    book.confirmed(SUBSCRIBE, b"sport")
    book.join("b", ["weather"])  # in flight when the connection drops
    book.leave("a", ["sport"])  # unsubscribe in flight too
    _, opening = book.join("c", ["weather"])
    done = book.lost()
    assert not book.online
    assert len(done) == 1  # the unsubscribe: a closed connection listens to nothing
    assert not opening.done
    commands, waiting = book.join("d", ["tv"])  # while offline: nothing is sent
    assert not commands and not waiting.done
    commands = book.connected()
    assert sorted(commands.subscribe) == [b"news", b"tv", b"weather"]
    woken = []
    for key in commands.subscribe:
        woken += book.confirmed(SUBSCRIBE, key)
    assert opening in woken and waiting in woken


def test_channel_abandoned_while_offline_is_not_resubscribed():
    book = online()
    book.join("a", ["news"])
    book.lost()
    book.leave("a", ["news"])
    assert not book.connected()


def test_channels_are_named_as_redis_names_them():
    book = online()
    book.join("a", ["ünï"])
    assert book.connected().subscribe == ["ünï".encode()]
    assert list(book.listeners("ünï".encode())) == ["a"]


def test_an_outage_is_logged_once_when_lost_and_once_when_back_with_its_length(caplog):
    reconnection = Reconnection(logging.getLogger("ws4redis"))
    delays = [reconnection.lost(now) for now in (5.0, 5.1, 5.3, 5.7)]
    assert delays == [0.1, 0.2, 0.4, 0.8]  # backoff doubles
    reconnection.back(3, now=17.5)
    assert [r.getMessage() for r in caplog.records] == [
        "Lost the Redis subscription connection; reconnecting",
        "Redis is back after 12.5 s; 3 channels resubscribed",
    ]
    assert reconnection.lost(20.0) == 0.1  # the next outage starts from the bottom again


def test_a_wait_for_the_resubscriptions_of_a_new_connection():
    book: Subscriptions[str] = Subscriptions()
    book.connected()
    book.join("ws", [b"news", b"sport"])
    book.lost()
    resumed = Wait()
    commands = book.connected(resumed)
    assert sorted(commands.subscribe) == [b"news", b"sport"] and not resumed.done
    book.confirmed(SUBSCRIBE, b"news")
    assert book.confirmed(SUBSCRIBE, b"sport")[-1] is resumed and resumed.done
