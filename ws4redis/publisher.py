"""The Django loop's side: publish to browsers from views, tasks and commands."""

from __future__ import annotations

from typing import Any

import redis
from asgiref.sync import sync_to_async
from django.http import HttpRequest
from django.template.loader import render_to_string

from ws4redis.core.events import named
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

    def publish_fragment(
        self,
        template_name: str,
        context: dict[str, Any] | None = None,
        *,
        event: str = "message",
        request: HttpRequest | None = None,
        expire: int | None = None,
    ) -> dict[str, int]:
        """Render ``template_name`` with ``context`` (``render_to_string``: with ``request``,
        its context processors run and ``{% csrf_token %}`` works) and publish the HTML as
        :meth:`publish_message` does, to the same audiences, with the same ``expire``,
        history, return value and :class:`~ws4redis.redis_store.PublishError`.

        The text goes out named (:func:`~ws4redis.core.events.named`): event streams send
        it as an event called ``event``, for HTMX's ``sse-swap``; websockets get it as it
        is, for ``hx-swap-oob``. An event name other than 1-64 letters, digits or ``_.:-``
        raises :class:`ValueError`, before anything is rendered.
        """
        return self.publish_message(self._fragment(template_name, context, event, request), expire)

    async def apublish_fragment(
        self,
        template_name: str,
        context: dict[str, Any] | None = None,
        *,
        event: str = "message",
        request: HttpRequest | None = None,
        expire: int | None = None,
    ) -> dict[str, int]:
        """:meth:`publish_fragment` for async code: the template is rendered in Django's
        thread for synchronous code (it may read the database), then published as
        :meth:`~ws4redis.redis_store.RedisStore.apublish_message` does."""
        html = await sync_to_async(self._fragment)(template_name, context, event, request)
        return await self.apublish_message(html, expire)

    @staticmethod
    def _fragment(
        template_name: str,
        context: dict[str, Any] | None,
        event: str,
        request: HttpRequest | None,
    ) -> str:
        """The text :meth:`publish_fragment` publishes."""
        named(event, "")  # a bad name fails before the template is rendered
        return named(event, render_to_string(template_name, context, request))

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
