"""Client messages by ``POST`` to a websocket URL: how an event stream's client speaks
(``docs/reference.md#server-sent-events``).

A ``POST`` of ``/ws/<facility>?publish-broadcast`` publishes its body as a websocket's
client message would be: the same identity, ``publish-*`` keys and rules
(:func:`ws4redis.runtimes.opening.permitted`), the facility's hook, the size limit, what a
client message may store. Its session comes with the browser's cookie, so Django's CSRF rules
apply (the ``X-CSRFToken`` header, the Origin), unless it carries a connection token
instead (no cookie counts then). Blocking: asyncio runtimes call :func:`publish_request`
in a thread.
"""

from __future__ import annotations

import http
import logging
from collections.abc import Collection
from typing import Any

from django.http import HttpRequest, HttpResponse
from django.middleware.csrf import CsrfViewMiddleware

from ws4redis.core.handshake import Rejection, check_location
from ws4redis.runtimes.hooks import judged, request_hook, text_of
from ws4redis.runtimes.opening import (
    identify,
    permitted,
    read_options,
    refusal_for,
    upgrade_of,
)
from ws4redis.runtimes.redis_side import new_subscriber, publish
from ws4redis.subscriber import RedisSubscriber
from ws4redis.tokens import QUERY_KEY

logger = logging.getLogger("ws4redis")

PUBLISHED = 204


class NoSubscription:
    """What a posting subscriber subscribes through: nothing (it only publishes)."""

    channels: Collection[Any] = ()

    def subscribe(self, *channels: Any) -> None:
        """A ``POST`` listens to nothing."""

    def unsubscribe(self, *channels: Any) -> None:
        """Nothing to leave."""

    def close(self) -> None:
        """Nothing to close."""


def _csrf_refusal(request: HttpRequest) -> HttpResponse | None:
    """Django's own CSRF check of ``request``, as its middleware makes it for a view."""
    middleware = CsrfViewMiddleware(lambda _: HttpResponse())
    middleware.process_request(request)
    return middleware.process_view(request, lambda _: HttpResponse(), (), {})


def too_big(size: int) -> Rejection | None:
    """413 for a body of ``size`` bytes over ``WS4REDIS_MAX_MESSAGE_SIZE`` (checked before
    it is read)."""
    limit = read_options().max_message_size
    return Rejection(413, f"A message is at most {limit} bytes.\n") if size > limit else None


def publish_request(request: HttpRequest) -> tuple[int, bytes]:
    """Publish the message a ``POST`` of ``request`` carries as its body; the status and
    body of the answer: 204 when published, 200 with the hook's answer (JSON) when the hook
    said something to the sender, else the refusal (400, 403, 404, 413, 414, 503). Never
    raises."""
    try:
        options = read_options()
        upgrade = upgrade_of(request)
        if (rejection := check_location(upgrade, options.handshake)) is not None:
            return _refused(rejection)
        if "Upgrade" in upgrade.headers:  # an upgrade by POST is no message, nor a websocket
            return _refused(Rejection(400, "A websocket must be opened with a GET request.\n"))
        length = request.META.get("CONTENT_LENGTH") or "0"
        if (rejection := too_big(int(length) if length.isdigit() else 0)) is not None:
            return _refused(rejection)
        body = request.body
        if (rejection := too_big(len(body))) is not None:
            return _refused(rejection)
        fields = dict(request.GET.items())
        token = fields.get(QUERY_KEY)
        if token is None and (refusal := _csrf_refusal(request)) is not None:
            return refusal.status_code, b"CSRF verification failed.\n"
        grant = identify(request, token)
        facility = options.handshake.facility(upgrade)
        channels, _echo, _since = permitted(request, grant, facility, fields)
        if not any(key.startswith("publish-") for key in channels):
            return _refused(Rejection(404, "These channel keys publish nowhere.\n"))
        return _publish(request, grant, channels, body)
    except Exception as exc:
        if (rejection := refusal_for(exc)) is not None:
            return _refused(rejection)
        logger.exception("Cannot publish the POST to %s", request.get_full_path())
        return 500, b"The message could not be published; see the server log.\n"


def _publish(
    request: HttpRequest, grant: Any, channels: list[str], body: bytes
) -> tuple[int, bytes]:
    subscriber: RedisSubscriber = new_subscriber(NoSubscription)
    subscriber.set_pubsub_channels(request, channels)
    hook = request_hook(request, subscriber.facility or "", grant)
    told = None
    if hook is not None:
        verdict = judged(hook, text_of(body), None, None)
        if verdict is None:
            return _refused(Rejection(503, "Too many messages wait for the hook.\n", 1))
        if verdict.publish is None:
            return 200, verdict.told or b"{}"
        body, told = verdict.publish, verdict.told
    if publish(subscriber, [body]) is not None:
        return _refused(Rejection(503, "Redis is unavailable, message not published.\n", 1))
    return (PUBLISHED, b"") if told is None else (200, told)


def _refused(rejection: Rejection) -> tuple[int, bytes]:
    return rejection.status, rejection.body


def answered(status: int, body: bytes) -> tuple[str, list[tuple[str, str]]]:
    """The status line and headers of an answer to a ``POST``."""
    kind = "application/json" if body.startswith(b"{") else "text/plain; charset=utf-8"
    headers = [("Content-Length", str(len(body)))] + ([("Content-Type", kind)] if body else [])
    return f"{status} {_phrase(status)}", headers


def _phrase(status: int) -> str:
    return http.HTTPStatus(status).phrase
