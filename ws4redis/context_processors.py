"""Template variables for pages that open a websocket."""

from __future__ import annotations

import json
import re

from django.http import HttpRequest
from django.utils.safestring import SafeString, mark_safe

from ws4redis import settings

__all__ = ["default"]


def default(request: HttpRequest) -> dict[str, str | SafeString]:
    """``WEBSOCKET_URI`` (scheme, host and prefix of this site's websockets: the page's own
    host unless ``WS4REDIS_WEBSOCKET_HOST`` names another), ``EVENT_STREAM_URI`` (the same
    URL with ``http``/``https`` for ``ws``/``wss``: what an ``EventSource``, or HTMX's
    ``sse-connect``, opens) and ``WS4REDIS_HEARTBEAT`` as a JavaScript literal (a quoted
    string or ``null``)."""
    host = settings.WS4REDIS_WEBSOCKET_HOST
    if host is None:
        host = f"{'wss' if request.is_secure() else 'ws'}://{request.get_host()}"
    uri = f"{host.rstrip('/')}{settings.WEBSOCKET_URL}"
    heartbeat = json.dumps(settings.WS4REDIS_HEARTBEAT)
    # json.dumps leaves "<" alone; escape it so the literal can never end a <script> block.
    heartbeat = heartbeat.replace("<", "\\u003c")
    return {
        "WEBSOCKET_URI": uri,
        "EVENT_STREAM_URI": re.sub(r"^ws(s?)://", r"http\1://", uri, flags=re.IGNORECASE),
        "WS4REDIS_HEARTBEAT": mark_safe(heartbeat),
    }
