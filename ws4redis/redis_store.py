"""Names and messages shared by both loops: how an audience maps to Redis channels.

The Django loop (``RedisPublisher``) and the websocket loop (``RedisSubscriber``) never talk to
each other; they agree only on channel names, so those are built in exactly one place here.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, TypeGuard

import redis
import redis.asyncio
from asgiref.sync import sync_to_async
from django.contrib.sessions.backends import signed_cookies
from django.db import transaction
from django.http import HttpRequest

from ws4redis import settings
from ws4redis.bus.commands import Command, arun_once, run_once
from ws4redis.bus.history import publish_command
from ws4redis.bus.history import read as read_history
from ws4redis.bus.pool import aget_redis, get_redis, is_cluster
from ws4redis.core.history import CLIENT, PRESENCE, SERVER, Window, envelope, enveloped_facility
from ws4redis.core.history import options as history_options
from ws4redis.core.names import ARGUMENTS, AUDIENCES, channel_name, control_channel
from ws4redis.settings import key_prefix

AUDIENCE_ARGUMENTS = frozenset(ARGUMENTS.values())
"""The audience keyword arguments a store knows."""

__all__ = ["SELF", "PublishError", "PublishOutcome", "RedisMessage", "RedisStore"]

MEMBEROF_SESSION_KEY = "ws4redis:memberof"
"""Session key under which the ``user_logged_in`` handler stores the user's group names."""


class _SelfType:
    """Type of :data:`SELF`: stands for "whoever made this request" in an audience list."""

    def __repr__(self) -> str:
        return "SELF"


SELF = _SelfType()


class RedisMessage(bytes):
    """A message as stored in Redis: always bytes, whatever it was built from.

    Built from ``str`` (encoded as UTF-8), ``bytes``, or a pub/sub reply
    ``[b'message', channel, data]``. As in the original project, the heartbeat string and
    anything else that is not a message give ``None`` instead of an instance, so callers can
    write ``message = RedisMessage(x); if message: ...``.
    """

    def __new__(cls, value: Any) -> RedisMessage | None:  # type: ignore[misc]
        if isinstance(value, list | tuple):
            if len(value) >= 3 and value[0] in (b"message", "message"):
                value = value[2]
            elif len(value) == 2 and value[0] in (b"message", "message"):
                value = value[1]
            else:
                return None
        if isinstance(value, str):
            value = value.encode()
        elif isinstance(value, bytearray | memoryview):
            value = bytes(value)
        elif not isinstance(value, bytes):
            return None
        heartbeat = settings.WS4REDIS_HEARTBEAT
        if heartbeat is not None and value == heartbeat.encode():
            return None
        return super().__new__(cls, value)


def is_authenticated(request: HttpRequest | None) -> TypeGuard[HttpRequest]:
    """True when ``request`` carries a logged-in user (``None`` users are anonymous)."""
    user = getattr(request, "user", None)
    return bool(user is not None and user.is_authenticated)


def own_names(kind: str, request: HttpRequest | None) -> list[str]:
    """What :data:`SELF` means for one audience kind and request (empty when unknown)."""
    if kind == "user":
        return [request.user.get_username()] if is_authenticated(request) else []
    if kind == "group":
        if not is_authenticated(request):
            return []
        user = request.user
        if hasattr(user, "groups"):  # the groups as they are now (run off the event loop)
            return list(user.groups.values_list("name", flat=True))
        session = getattr(request, "session", None)  # a user model without groups
        return list(session.get(MEMBEROF_SESSION_KEY, ())) if session is not None else []
    if kind == "session":
        return [key] if (key := known_session_key(request)) else []
    raise ValueError(f"unknown audience kind {kind!r}")


def known_session_key(request: HttpRequest | None) -> str | None:
    """The key of ``request``'s session if the session store knows it, else ``None``.

    A cookie is whatever the client chose to send: as with Django's ``SessionMiddleware``, a
    key the store does not know is anonymous, so it must not name a session channel (else
    any made-up cookie of 8+ characters gets a channel, and a history, of its own). Loading
    the session drops an unknown key (database, cache and file stores set it to ``None``);
    the signed-cookie store keeps the key of a bad signature but resets the session, which
    leaves it empty and modified.
    """
    session = getattr(request, "session", None)
    if session is None or not session.session_key:
        return None
    loaded = bool(session.keys())  # loads it through the store, once per request
    key = session.session_key
    if isinstance(session, signed_cookies.SessionStore) and not loaded and session.modified:
        return None  # a bad signature reset it (a view's new session has no key yet)
    return key or None


def control_channels(request: HttpRequest | None) -> list[str]:
    """The control channels of a websocket of ``request``: its known session's and its
    user's. None for an anonymous client without a session (no extra subscription)."""
    channels = []
    if key := known_session_key(request):
        channels.append(control_channel(key_prefix(), "session", key))
    if is_authenticated(request):
        channels.append(control_channel(key_prefix(), "user", request.user.get_username()))
    return channels


def _audience_names(kind: str, value: Any, request: HttpRequest | None) -> list[str]:
    """Resolve one audience argument (list with names and/or SELF) to a list of names."""
    if value is True or isinstance(value, str):
        # Spellings of the original's early releases: True meant SELF, a string one name.
        warnings.warn(
            f"pass {kind}s as a list, using SELF for the requester", DeprecationWarning, 2
        )
        value = [SELF] if value is True else [value]
    if value is False or value is None:
        return []
    # A list or tuple is what every caller passes: the ABC's isinstance is for the rest.
    if not isinstance(value, list | tuple) and not isinstance(value, Iterable):
        raise ValueError(f"argument `{kind}s` must be a list or tuple, got {value!r}")
    names: list[str] = []
    for item in value:
        for name in own_names(kind, request) if item is SELF else [item]:
            if name not in names:
                names.append(name)
    return names


@dataclass
class PublishOutcome:
    """What one ``publish_message`` did, per channel: ``published`` the channels that went
    out, with how many Redis subscribers got the message; ``failed`` those that did not, or
    whose fate is unknown (the connection was lost after the command was sent), with the
    error; ``unstored`` those whose stored copy could not be written."""

    published: dict[str, int]
    failed: dict[str, Exception]
    unstored: dict[str, Exception]


class PublishError(redis.RedisError):
    """A ``publish_message`` that did not fully succeed; ``outcome`` says, per channel, what
    went out. Nothing is ever published twice: publishing again is the caller's choice, and
    should target only the channels in ``outcome.failed``."""

    def __init__(self, outcome: PublishOutcome) -> None:
        failed = {**outcome.failed, **outcome.unstored}
        details = "; ".join(f"{channel}: {exc}" for channel, exc in failed.items())
        what = "not published" if outcome.failed else "published but not stored"
        super().__init__(f"message {what} on {len(failed)} channel(s): {details}")
        self.outcome = outcome


@dataclass
class _Plan:
    """The commands of one publish, and how to read their replies: the same for the
    blocking and the async runner (:mod:`ws4redis.bus.commands`)."""

    channels: list[str]
    commands: list[Command]
    kept: bool
    """Whether the message goes through the history script (its reply is a list)."""
    stored: bool
    """Whether a ``SET`` follows each channel's publish."""

    def outcome(self, replies: list[Any]) -> dict[str, int]:
        """Receivers per channel, or :class:`PublishError` saying what did not go out."""
        step = 2 if self.stored else 1
        outcome = PublishOutcome({}, {}, {})
        for n, channel in enumerate(self.channels):
            reply = replies[n * step]
            if isinstance(reply, Exception):
                outcome.failed[channel] = reply
            else:
                outcome.published[channel] = reply[0] if self.kept else reply
            if self.stored and isinstance(replies[n * step + 1], Exception):
                outcome.unstored[channel] = replies[n * step + 1]
        if outcome.failed or outcome.unstored:
            raise PublishError(outcome)
        return outcome.published


class RedisStore:
    """Base of publisher and subscriber: a Redis connection plus the channels to publish on."""

    __slots__ = ("_connection", "_given", "_publishers", "facility")

    def __init__(self, connection: redis.Redis | None = None) -> None:
        self._connection = connection if connection is not None else get_redis()
        self._given = connection is not None
        """Whether ``connection`` was chosen by the caller (else the async methods take the
        running loop's shared client)."""
        self._publishers: set[str] = set()
        self.facility: str | None = None
        """The facility published to; it decides whether messages keep a history."""

    origin = SERVER
    """Who its messages come from, as the envelope says (a subscriber publishes a client's)."""

    get_prefix = staticmethod(key_prefix)
    """Kept from the original API."""

    def _get_message_channels(
        self,
        request: HttpRequest | None = None,
        facility: str = "{facility}",
        **audiences: Any,
    ) -> list[str]:
        """The channels of the union of the given audiences on ``facility``: ``broadcast``
        (True or False) and the names of ``groups``, ``users`` and ``sessions``
        (:data:`~ws4redis.core.names.ARGUMENTS`)."""
        if unknown := audiences.keys() - AUDIENCE_ARGUMENTS:
            raise TypeError(f"unknown audience argument(s): {', '.join(sorted(unknown))}")
        prefix = key_prefix()
        channels: list[str] = []
        for kind in reversed(AUDIENCES):  # broadcast first, as the original published
            value = audiences.get(ARGUMENTS[kind], ())
            if kind == "broadcast":
                names: list[str | None] = [None] if value is True else []
            else:
                names = list(_audience_names(kind, value, request))
            if names:  # every subscriber asks for each audience, most of them for none
                channels.extend(channel_name(prefix, kind, facility, name) for name in names)
        return channels

    def publish_message(self, message: Any, expire: int | None = None) -> dict[str, int]:
        """Publish ``message`` on every channel of this store and persist it for ``expire``
        seconds (default ``WS4REDIS_EXPIRE``; 0 or None: not persisted).

        On a facility with history (``WS4REDIS_HISTORY``) the message is also appended to
        each channel's history and published with its position. All commands go out in one
        pipelined round trip per Redis node, and each reaches Redis at most once: nothing is
        published twice, whatever fails in between (:mod:`ws4redis.bus.commands`).
        Returns, per channel, how many Redis subscribers received the message; raises
        :class:`PublishError`, which says per channel what went out, when not everything did.
        """
        data = _message_bytes(message)
        if expire is None:
            expire = settings.WS4REDIS_EXPIRE
        return self._publish(data, expire, self.origin)

    async def apublish_message(self, message: Any, expire: int | None = None) -> dict[str, int]:
        """:meth:`publish_message` for async code (views, tasks, ASGI apps): the same
        commands, the same at-most-once rules and the same :class:`PublishError`, on the
        ``redis.asyncio`` client of the running event loop, which it never blocks."""
        data = _message_bytes(message)
        if expire is None:
            expire = settings.WS4REDIS_EXPIRE
        client = self._async_client()
        plan = self._plan(data, expire, self.origin, cluster=is_cluster(client))
        return plan.outcome(await arun_once(client, plan.commands))

    def _publish(self, data: bytes, expire: int | None, origin: bytes) -> dict[str, int]:
        """:meth:`publish_message` for messages of ``origin``."""
        client = self._blocking_client()
        plan = self._plan(data, expire, origin, cluster=is_cluster(client))
        return plan.outcome(run_once(client, plan.commands))

    def _plan(self, data: bytes, expire: int | None, origin: bytes, *, cluster: bool) -> _Plan:
        """The commands that publish ``data`` from ``origin`` on this store's channels. On
        a facility with history or presence every message travels in the envelope that says
        who made it. A client's message is kept in the history only while client messages
        are stored at all (``expire``), and never keeps the history alive longer than that;
        presence announcements are never kept."""
        facility = self.facility
        kept_by = settings.WS4REDIS_HISTORY
        kept = history_options(kept_by, facility) if facility is not None else None
        wrapped = facility is not None and enveloped_facility(
            facility, kept_by, settings.WS4REDIS_PRESENCE
        )
        client_ttl = 0
        if origin == PRESENCE or (origin == CLIENT and not expire):
            kept = None
        elif origin == CLIENT and kept is not None:
            client_ttl = min(kept.ttl, expire or 0)
        payload = envelope(origin, None, data) if wrapped else data
        verb = "SPUBLISH" if cluster else "PUBLISH"  # sharded pub/sub
        plan = _Plan(list(self._publishers), [], kept is not None, bool(expire))
        for channel in plan.channels:
            if kept is None:
                plan.commands.append((channel, (verb, channel, payload)))
            else:
                command = publish_command(
                    channel, data, kept, cluster=cluster, origin=origin, client_ttl=client_ttl
                )
                plan.commands.append((channel, command))
            if expire:  # stored apart: a store Redis refused is retried without publishing
                plan.commands.append((channel, ("SET", channel, data, "EX", expire)))
        return plan

    def _async_client(self) -> Any:
        """The ``redis.asyncio`` client the async methods use: the one this store was given,
        else the running loop's shared one."""
        if _is_async_client(self._connection):
            return self._connection
        if not self._given:
            return aget_redis()
        raise TypeError(
            "the async methods need a redis.asyncio client: this store was given a blocking "
            f"one ({type(self._connection).__name__}); pass connection=None for the shared one"
        )

    def _blocking_client(self) -> Any:
        """The client the blocking methods use; one given a ``redis.asyncio`` client says
        which methods are for it, instead of failing somewhere inside redis-py."""
        if _is_async_client(self._connection):
            raise TypeError(
                "this store was given a redis.asyncio client: await its async twins "
                "(apublish_message, afetch_message) instead"
            )
        return self._connection

    def history(self, since: int = 0) -> dict[str, Window]:
        """What each channel of this store keeps of its history after offset ``since``:
        epoch, first and last offsets, and the messages (offset, bytes) in order. Its
        ``epoch`` and ``last`` are the current position; with no history kept (none
        configured, or expired) the epoch is ``""``."""
        client = self._blocking_client()
        return {channel: read_history(client, channel, since) for channel in self._publishers}

    pipeline_publish_message = publish_message
    """Kept from the original API, where only this spelling saved round trips."""

    def publish_on_commit(
        self, message: Any, expire: int | None = None, using: str | None = None
    ) -> None:
        """Publish ``message`` once the current transaction of database ``using`` commits,
        and never if it rolls back: browsers must not hear of a row that was not saved.
        Outside a transaction it publishes at once, as ``transaction.on_commit`` does.

        The message is taken as it is now. A failure to publish after the commit is logged
        (the ``django.db.backends.base`` logger), not raised: the data is saved by then.
        """
        data = _message_bytes(message)
        transaction.on_commit(lambda: self.publish_message(data, expire), using, robust=True)

    async def apublish_on_commit(
        self, message: Any, expire: int | None = None, using: str | None = None
    ) -> None:
        """:meth:`publish_on_commit` for async code. Django runs transactions in its thread
        for synchronous code (``sync_to_async``), never on the event loop, so the callback
        is registered there, with the transaction that thread has open (that of the sync
        code which called this through ``async_to_sync``, if any), and publishes there when
        it commits: at once, outside a transaction. The event loop is never blocked."""
        await sync_to_async(self.publish_on_commit)(message, expire, using)


def _message_bytes(message: Any) -> bytes:
    """Accept what users pass to ``publish_message``: RedisMessage, str or bytes."""
    if isinstance(message, bytes):
        return message
    if isinstance(message, str):
        return message.encode()
    if isinstance(message, bytearray | memoryview):
        return bytes(message)
    raise ValueError(f"message must be a RedisMessage, str or bytes, got {type(message).__name__}")


def _is_async_client(client: Any) -> bool:
    """Whether ``client`` is a ``redis.asyncio`` client (a server's or a cluster's)."""
    return isinstance(client, redis.asyncio.Redis | redis.asyncio.RedisCluster)
