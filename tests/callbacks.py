"""Callbacks named by dotted path in the test settings."""

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
