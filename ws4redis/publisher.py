"""The Django loop's side: publish to browsers from views, tasks and commands."""

from __future__ import annotations

from typing import Any

import redis
from asgiref.sync import sync_to_async
from django.http import HttpRequest

from ws4redis.core.names import AUDIENCES, channel_name
from ws4redis.redis_store import RedisMessage, RedisStore, own_names
from ws4redis.settings import key_prefix

__all__ = ["RedisPublisher"]


class RedisPublisher(RedisStore):
    """Publishes to the union of the audiences given on construction.

    ``RedisPublisher(facility='chat', broadcast=True, users=['john', SELF], groups=[...],
    sessions=[...], request=request)``; ``SELF`` needs ``request``. Plain synchronous code that
    borrows a connection from the process-wide pool for each call.
    """

    def __init__(self, connection: redis.Redis | None = None, **audience: Any) -> None:
        super().__init__(connection)
        self._publishers.update(self._get_message_channels(**audience))
        self.facility = audience.get("facility")

    def fetch_message(
        self, request: HttpRequest | None, facility: str, audience: str = "any"
    ) -> RedisMessage | None:
        """Return the persisted message of ``facility`` for this request, or None.

        With ``audience='any'`` the session's message wins over the user's, the user's over
        the groups', and those over the broadcast one.
        """
        client = self._blocking_client()
        for key in self._stored_keys(request, facility, audience):
            if message := client.get(key):
                return RedisMessage(message)
        return None

    async def afetch_message(
        self, request: HttpRequest | None, facility: str, audience: str = "any"
    ) -> RedisMessage | None:
        """:meth:`fetch_message` for async code. The requester's groups and session come
        from the database or session store, so they are looked up in Django's thread for
        synchronous code; Redis is read on the running loop's ``redis.asyncio`` client."""
        keys = await sync_to_async(self._stored_keys)(request, facility, audience)
        client = self._async_client()
        for key in keys:
            if message := await client.get(key):
                return RedisMessage(message)
        return None

    @staticmethod
    def _stored_keys(request: HttpRequest | None, facility: str, audience: str) -> list[str]:
        """The keys :meth:`fetch_message` reads, the one that wins first."""
        if audience != "any" and audience not in AUDIENCES:
            raise ValueError(f"audience must be one of {', '.join(AUDIENCES)} or 'any'")
        kinds = AUDIENCES if audience == "any" else (audience,)
        return [
            channel_name(key_prefix(), kind, facility, name)
            for kind in kinds
            for name in ([None] if kind == "broadcast" else own_names(kind, request))
        ]
