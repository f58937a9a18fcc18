"""The websocket loop's side of Redis, and the documented override point.

Set ``WS4REDIS_SUBSCRIBER`` to a subclass to change which channels a websocket subscribes
and publishes to (``set_pubsub_channels``) or what it receives on connect
(``send_persisted_messages``). Every runtime uses this class; what differs between runtimes
is only the *subscription* object behind it: the runtime's hub, one Redis connection shared
by every websocket of the process.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Collection
from typing import Any, ClassVar, Protocol

import redis
from django.http import HttpRequest

from ws4redis import settings
from ws4redis.bus.pool import get_many
from ws4redis.core.history import CLIENT
from ws4redis.core.names import ARGUMENTS, PUBLISH_KEYS, SUBSCRIBE_KEYS
from ws4redis.core.opening import Kept, TooManyChannels
from ws4redis.redis_store import SELF, RedisStore, control_channels


class Subscription(Protocol):
    """What a subscriber needs of its subscription (redis-py's ``PubSub`` has it all)."""

    @property
    def channels(self) -> Collection[Any]:
        """The channels it is subscribed to."""

    def subscribe(self, *channels: Any) -> Any: ...

    def unsubscribe(self, *channels: Any) -> Any: ...

    def close(self) -> None: ...


PubSubFactory = Callable[[], Subscription]


NO_CHANNELS: frozenset[str] = frozenset()
"""The publish channels of every subscriber that publishes nowhere."""

Names = tuple[tuple[str, ...], tuple[str, ...]]
"""The channel names a websocket publishes to and subscribes to."""


@settings.derived
def anonymous_names() -> Kept[tuple[str, tuple[str, ...]], Names]:
    """The names the default subscriber gives a client with neither session nor user, by
    facility and channel keys (``WS4REDIS_DECISIONS_KEPT`` of them): they follow from those
    and the settings alone, and thousands of clients opening one URL would compute the
    same ones each. Forgotten whenever a setting changes (the prefix is one)."""
    return Kept(settings.WS4REDIS_DECISIONS_KEPT)


class RedisSubscriber(RedisStore):
    """Channels of one websocket: where its messages are published, what it listens to."""

    origin = CLIENT
    """What it publishes comes from its websocket's client (the envelope says so)."""

    subscription_channels: ClassVar[list[str]] = list(SUBSCRIBE_KEYS)
    publish_channels: ClassVar[list[str]] = list(PUBLISH_KEYS)

    # One per websocket: no instance dict (a subclass of a project's may still have one).
    __slots__ = ("_subscription", "control", "opened", "presence_id", "pubsub_factory")

    def __init__(self, connection: redis.Redis | None = None) -> None:
        super().__init__(connection)
        self._subscription: Subscription | None = None
        self.pubsub_factory: PubSubFactory | None = None
        """Set by a runtime that shares one Redis subscription among its websockets."""
        self.opened = False
        """Whether its websocket opened (counted among the open ones until released)."""
        self.presence_id: str | None = None
        """Its entry in presence, while it is told there."""
        self.control: tuple[str, ...] = ()
        """Its control channels (:func:`ws4redis.disconnect` closes it through them)."""

    @staticmethod
    def _audience(action: str, channels: list[str]) -> dict[str, Any]:
        """The audiences the channel keys of ``action`` (``subscribe``, ``publish``) ask for:
        the requester itself in each, and everybody for ``broadcast``."""
        audiences: dict[str, Any] = {}
        for kind, argument in ARGUMENTS.items():
            wanted = f"{action}-{kind}" in channels
            audiences[argument] = wanted if kind == "broadcast" else [SELF] if wanted else []
        return audiences

    def _new_subscription(self) -> Subscription:
        if self.pubsub_factory is not None:
            return self.pubsub_factory()
        return self._connection.pubsub(ignore_subscribe_messages=True)

    def set_pubsub_channels(self, request: HttpRequest, channels: list[str]) -> None:
        """Set the publish channels and subscribe to the channels the keys ask for."""
        # Interned, as the channel names are: thousands of websockets on one facility share
        # one string. Frozen: most websockets publish nowhere, and all of those then share
        # one empty frozenset instead of holding an empty set each.
        facility = self.facility = sys.intern(request.path_info[len(settings.WEBSOCKET_URL) :])
        # None without a known session or a user: the client is anonymous. A project's
        # subclass may name channels from anything in the request: it is always asked.
        self.control = tuple(control_channels(request))
        if not self.control and type(self) is RedisSubscriber:
            publishers, keys = self._anonymous_names(facility, channels)
        else:
            publishers, keys = self._names(request, facility, channels)
        TooManyChannels.check(len(publishers) + len(keys), settings.WS4REDIS_MAX_CHANNELS)
        self._publishers = frozenset(publishers) if publishers else NO_CHANNELS  # type: ignore[assignment]
        self._subscription = self._new_subscription()
        if keys or self.control:
            self._subscription.subscribe(*keys, *self.control)

    def _names(self, request: HttpRequest | None, facility: str, channels: list[str]) -> Names:
        """The channels the keys ``channels`` name on ``facility`` for ``request``."""
        publish = self._audience("publish", channels)
        subscribe = self._audience("subscribe", channels)
        return (
            tuple(self._get_message_channels(request, facility, **publish)),
            tuple(self._get_message_channels(request, facility, **subscribe)),
        )

    def _anonymous_names(self, facility: str, channels: list[str]) -> Names:
        """:meth:`_names` for a client without session or user, as kept."""
        kept = anonymous_names()
        key = (facility, tuple(channels))
        names = kept.get(key)
        if names is None:
            names = self._names(None, facility, channels)
            kept.keep(key, names)
        return names

    @property
    def publishes(self) -> bool:
        """Whether its channel keys let its client publish anywhere."""
        return bool(self._publishers)

    @property
    def subscribed_channels(self) -> list[str]:
        """Names of the channels this websocket listens to (not its control channels,
        which carry no messages for it)."""
        if self._subscription is None:
            return []
        names = [c.decode() if isinstance(c, bytes) else c for c in self._subscription.channels]
        return [name for name in names if name not in self.control] if self.control else names

    def send_persisted_messages(self, websocket: Any) -> None:
        """Send the persisted message of every subscribed channel right after connecting.

        ``websocket`` is anything with ``send(message)``; runtimes pass their relay.
        """
        channels = self.subscribed_channels
        if channels:
            for message in get_many(self._connection, channels):
                if message:
                    websocket.send(message)

    def release(self) -> None:
        """Drop every subscription of this websocket when it closes (again: no effect)."""
        from ws4redis.presence import tracker

        subscription, self._subscription = self._subscription, None
        if subscription is not None:
            subscription.close()
        tracker().closed(self)
        if self.opened:
            from ws4redis.bus.live import reporter

            self.opened = False
            reporter().change(self.facility or "", -1)
