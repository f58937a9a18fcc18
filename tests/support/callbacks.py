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


def _subscriber_base():
    from ws4redis.subscriber import RedisSubscriber

    return RedisSubscriber


class DisconnectedWhileOpening(_subscriber_base()):
    """A WS4REDIS_SUBSCRIBER for which Django ends the session at the worst moment: its
    channels subscribed, its handshake not yet answered."""

    def set_pubsub_channels(self, request, channels):
        super().set_pubsub_channels(request, channels)
        self.session_key = request.session.session_key

    def send_persisted_messages(self, websocket):
        import ws4redis

        assert ws4redis.disconnect(session=self.session_key)  # some process heard it
        super().send_persisted_messages(websocket)


def moderate(message):
    """A WS4REDIS_HOOKS hook: rejects "forbidden", answers "ping" to its sender alone, turns
    "shout" into "SHOUT" and publishes the rest; answers the call "whoami" with the user
    Django has now, fails on "fail", takes its time on "slow" and refuses other calls."""
    import time

    from ws4redis.hooks import Reject, Reply

    if message.call == "whoami":
        return {"user": message.request.user.get_username(), "data": message.data}
    if message.call == "fail" or message.data == "fail":
        raise RuntimeError("the hook failed on purpose")
    if message.call == "slow":
        time.sleep(3)
        return "late"
    if message.call is not None:
        raise Reject(f"no call {message.call}")
    if message.data == "forbidden":
        return Reject("not here")
    if message.data == "ping":
        return Reply("pong")
    return "SHOUT" if message.data == "shout" else None


def echo_call(message):
    """A WS4REDIS_HOOKS hook: answers every call with what it was sent and its name, and
    publishes every message as sent."""
    if message.call is None:
        return None
    return {"echo": message.data, "name": message.call}
