"""Callbacks named by dotted path in the test settings."""

import threading

from django.core.exceptions import PermissionDenied


def deny_on_header(request, channels):
    """Refuse the websocket when the client sends ``Deny-Channels: YES``."""
    if request.META.get("HTTP_DENY_CHANNELS") == "YES":
        raise PermissionDenied("No channels are allowed")
    return channels


def token_identity(request):
    """A WS4REDIS_PROCESS_REQUEST: the ``token`` query parameter names the user."""
    from django.contrib.auth.models import User

    request.user = User.objects.get(username=request.GET["token"])


GATE = threading.Event()


def gated_identity(request):
    """A WS4REDIS_PROCESS_REQUEST whose lookup, for ``?gated``, waits for ``GATE``: a stand-in
    for a slow session store or database."""
    if "gated" in request.GET:
        GATE.wait(30)


def publish_on_header(request, facility, audience):
    """A WS4REDIS_PERMISSIONS rule: allowed when the client sends ``Allow-Publish: YES``."""
    return request.META.get("HTTP_ALLOW_PUBLISH") == "YES"
