"""Views of the example chat: ordinary Django views that publish through Redis."""

from django.views.generic import TemplateView

from ws4redis.publisher import RedisPublisher

FACILITY = "foobar"


class BroadcastChatView(TemplateView):
    """The broadcast chat. Loading the page persists a welcome message for the facility, so
    every browser that connects (or reconnects) within WS4REDIS_EXPIRE is greeted with it."""

    template_name = "chatserver/broadcast_chat.html"

    def get(self, request, *args, **kwargs):
        welcome = "Welcome to the broadcast chat: every page on /chat/ sees what you send."
        RedisPublisher(facility=FACILITY, broadcast=True).publish_message(welcome)
        return super().get(request, *args, **kwargs)

    def get_context_data(self, **kwargs):
        return super().get_context_data(facility=FACILITY, **kwargs)
