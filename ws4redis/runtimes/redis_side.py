"""The Redis side of one websocket, the same for every runtime.

The opening (:func:`ws4redis.runtimes.opening.open_connection`) decided that the request becomes a
websocket; here its subscriber subscribes through the runtime's hub, reads the persisted
messages and publishes what the client sends. Blocking: asyncio runtimes call these in a
thread.
"""

from __future__ import annotations

import logging

from django.http import HttpRequest
from websockets.frames import CloseCode

from ws4redis import settings
from ws4redis.bus import history
from ws4redis.bus.live import reporter
from ws4redis.bus.pool import REDIS_FAILED, get_many, get_redis
from ws4redis.core.handshake import Rejection
from ws4redis.core.history import Position, first_messages, label, wire
from ws4redis.core.history import options as history_options
from ws4redis.core.opening import Accepted, TooManyChannels
from ws4redis.core.relay import Start
from ws4redis.core.stats import STATS
from ws4redis.presence import tracker
from ws4redis.redis_store import key_prefix
from ws4redis.runtimes.opening import client_message_expiry
from ws4redis.subscriber import PubSubFactory, RedisSubscriber

logger = logging.getLogger("ws4redis")


class _Collected(list[bytes]):
    """What ``send_persisted_messages`` sends, kept for the relay to queue first."""

    def send(self, message: bytes) -> None:
        self.append(message)


def subscribe(
    accepted: Accepted, subscription: PubSubFactory
) -> tuple[RedisSubscriber, Start] | Rejection:
    """Subscribe the connection's channels; return its subscriber and what it gets first
    (its persisted messages, or with positions what it missed).

    Never raises: on failure every subscription made so far is released again (the hub
    must not keep delivering to a websocket that never opened) and the runtime answers the
    Rejection instead of the handshake.
    """
    subscriber: RedisSubscriber | None = None
    try:
        subscriber = new_subscriber(subscription)
        subscriber.set_pubsub_channels(accepted.request, accepted.channels)
        if accepted.since is not None:
            start = recover(subscriber, accepted.since)
        else:
            persisted = _Collected()
            subscriber.send_persisted_messages(persisted)
            start = Start(persisted)
        start.control = control_of(subscriber)
        opened(subscriber, accepted.request)
        return subscriber, start
    except Exception as exc:
        return failed(accepted, exc, subscriber)


def control_of(subscriber: RedisSubscriber) -> frozenset[bytes]:
    """The control channels of ``subscriber``'s websocket, as its relay looks them up."""
    return frozenset(name.encode() for name in subscriber.control)


def opened(subscriber: RedisSubscriber, request: HttpRequest) -> None:
    """The websocket of ``subscriber`` opens: its subscriptions hold. It is counted (open,
    per facility, the 101) and told to presence; :meth:`RedisSubscriber.release` undoes it."""
    tracker().opened(subscriber, request)
    subscriber.opened = True
    reporter().change(subscriber.facility or "", +1)


def new_subscriber(subscription: PubSubFactory) -> RedisSubscriber:
    """A ``WS4REDIS_SUBSCRIBER`` whose ``set_pubsub_channels`` subscribes through
    ``subscription``."""
    make = settings.load_callable("WS4REDIS_SUBSCRIBER")
    assert make is not None  # the setting has a default and is never None
    subscriber = make(get_redis())
    subscriber.pubsub_factory = subscription
    return subscriber


def failed(
    accepted: Accepted, exc: Exception, subscriber: RedisSubscriber | None = None
) -> Rejection:
    """What a connection whose subscribing raised ``exc`` is answered instead of the
    handshake; its ``subscriber``, if made, releases what it subscribed."""
    path = accepted.request.get_full_path()
    if isinstance(exc, (*REDIS_FAILED, TimeoutError)):
        logger.error("Cannot subscribe websocket %s: %s", path, exc)
        rejection = Rejection(503, "Redis is unavailable.\n", retry_after=1)
    elif isinstance(exc, TooManyChannels):
        rejection = Rejection(400, f"{exc}\n")
    else:
        logger.error("Cannot start websocket %s", path, exc_info=exc)
        rejection = Rejection(500, "The websocket could not be opened; see the server log.\n")
    if subscriber is not None:
        subscriber.release()
    STATS.handshakes[rejection.status] += 1
    return rejection


def recover(subscriber: RedisSubscriber, since: dict[str, Position]) -> Start:
    """For a client that asked for positions, once its subscriptions are confirmed: per
    channel with history, what it missed since its position (read after subscribing, so
    nothing falls between the two; the relay drops what arrives twice); per channel without,
    the persisted message. Every message as the client's JSON."""
    facility = subscriber.facility or ""
    kept = history_options(settings.WS4REDIS_HISTORY, facility)
    connection = get_redis()
    channels = subscriber.subscribed_channels
    start = Start([], {}, {})
    stored = get_many(connection, channels) if kept is None and channels else []
    for n, channel in enumerate(channels):
        name = label(channel, facility, key_prefix())
        key = channel.encode()
        start.labels[key] = name  # type: ignore[index]
        if kept is None:
            if message := stored[n]:
                start.messages.append(wire(name, message))
            continue
        resume = since.get(name)
        window = history.read(connection, channel, resume.offset if resume else -1)
        messages, start.positions[key] = first_messages(name, resume, window)
        start.messages.extend(messages)
    return start


def publish(subscriber: RedisSubscriber, messages: list[bytes]) -> int | None:
    """Publish what a client sent, in order, stored as long as the core allows for client
    messages. None when all went out; else the close code that tells the client (see
    :meth:`~ws4redis.core.relay.Relay.published`): 1013 when Redis failed, 1011 when the
    subscriber class raised (logged with its traceback), and the rest is not published."""
    expire = client_message_expiry()
    try:
        for message in messages:
            subscriber.publish_message(message, expire=expire)
    except REDIS_FAILED as exc:
        logger.warning("Dropped %d client message(s), Redis failed: %s", len(messages), exc)
        return CloseCode.TRY_AGAIN_LATER
    except Exception:  # a subscriber subclass failed: its traceback, and the loop goes on
        logger.exception("Dropped %d client message(s), publishing failed", len(messages))
        return CloseCode.INTERNAL_ERROR
    return None
