"""Every name ws4redis gives to something in Redis or in a websocket's URL.

Channels, the keys of history, presence and the live report, the audiences and the query
keys that choose channels are built here and nowhere else, so that two of them can never
meet by accident: every key continues the prefix (``WS4REDIS_PREFIX`` and a ``:``, handed in
by the caller) with one word, an audience kind for a channel, ``history``, ``presence`` or
``live`` for the rest, and no user, group or session name can make one look like another.
"""

from __future__ import annotations

import sys

from ws4redis.core.shards import colocated

AUDIENCES = ("session", "user", "group", "broadcast")
"""Who a channel reaches, most particular first: the order in which a persisted message is
looked for. ``broadcast`` is the one audience without names (everybody)."""
ARGUMENTS = {"session": "sessions", "user": "users", "group": "groups", "broadcast": "broadcast"}
"""The keyword argument of a publisher that names each audience."""
SUBSCRIBE_KEYS = ("subscribe-session", "subscribe-group", "subscribe-user", "subscribe-broadcast")
PUBLISH_KEYS = ("publish-session", "publish-group", "publish-user", "publish-broadcast")
CHANNEL_KEYS = frozenset(SUBSCRIBE_KEYS + PUBLISH_KEYS)
"""The query keys that choose channels (``docs/reference.md#url-and-channel-keys``)."""
CONTROL = "control"
"""Kind of the channels Django closes websockets through (``<prefix>control:<key>:session``
and ``<prefix>control:<username>:user``): no channel key names it, so no client can publish
there."""


def prefix_of(setting: str | None) -> str:
    """The prefix every name starts with: the ``WS4REDIS_PREFIX`` setting and a ``:``, or
    nothing when it is unset."""
    return f"{setting}:" if setting else ""


def channel_name(prefix: str, kind: str, facility: str, name: str | None = None) -> str:
    """The Redis channel (and key of the persisted message) for one audience and facility.

    A ``:`` (or ``%``) in a user, group or session name is percent-encoded, so that group
    ``a:b`` on facility ``c`` and group ``a`` on facility ``b:c`` never share a channel.
    """
    who = "" if name is None else f"{name.replace('%', '%25').replace(':', '%3A')}:"
    # Interned: every websocket on a channel keeps its name, and they then share one string.
    return sys.intern(f"{prefix}{kind}:{who}{facility}")


def control_channel(prefix: str, kind: str, name: str) -> str:
    """The channel Django closes the websockets of one session (``kind`` ``"session"``) or
    one user (``"user"``) through."""
    return channel_name(prefix, CONTROL, kind, name)


def history_keys(prefix: str, channel: str) -> list[str]:
    """The stream and the hash of ``channel``'s history, in the channel's hash slot (the
    script publishes on the channel: a cluster runs it on the channel's master)."""
    return [colocated(f"{prefix}history:", channel), colocated(f"{prefix}history-meta:", channel)]


def presence_keys(prefix: str, facility: str) -> list[str]:
    """The sorted set and the hash of a facility's presence, in one hash slot, so that a
    Redis Cluster runs the scripts that touch both."""
    return [
        colocated(f"{prefix}presence:", facility),
        colocated(f"{prefix}presence-info:", facility),
    ]


def live_registry(prefix: str) -> str:
    """The sorted set of the processes that report their open websockets, scored by when
    each report expires."""
    return f"{prefix}live:processes"


def live_report(prefix: str, process: str) -> str:
    """The hash of one process's open websockets per facility."""
    return f"{prefix}live:process:{process}"
