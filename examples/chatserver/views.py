"""Views of the example site: ordinary Django views that publish through Redis."""

from django.contrib.auth.mixins import LoginRequiredMixin
from django.contrib.auth.models import Group, User
from django.http import HttpResponseBadRequest, JsonResponse
from django.shortcuts import render
from django.urls import reverse
from django.views.generic import TemplateView

from ws4redis import settings as ws4redis_settings
from ws4redis.presence import present
from ws4redis.publisher import RedisPublisher
from ws4redis.redis_store import SELF


class ChatView(TemplateView):
    """A chat page; subclasses say which facility and channel keys its websocket uses."""

    template_name = "chatserver/chat.html"
    title = ""
    lead = ""
    facility = ""
    channels = ""

    def get_context_data(self, **kwargs):
        return super().get_context_data(
            title=self.title,
            lead=self.lead,
            facility=self.facility,
            channels=self.channels,
            **kwargs,
        )


class BroadcastChatView(ChatView):
    """Everybody on /chat/ sees everything. Loading the page publishes a welcome to this
    browser's session channel only, and stores it there: the page's websocket, which opens
    a moment later, is greeted with the stored message, and nobody else sees it."""

    title = "Broadcast chat"
    lead = "Every page open on /chat/ sees what you send. Open a second window and try."
    facility = "foobar"
    # No publish key: WS4REDIS_PERMISSIONS lets no client publish here. A line is POSTed to
    # this view (CSRF-checked, where a project can also rate-limit or moderate), and Django
    # publishes it: what the page shows as the chat comes from the server.
    channels = "subscribe-broadcast&subscribe-session&recover"

    def get_context_data(self, **kwargs):
        return super().get_context_data(
            online_url=reverse("online"), post_url=reverse("broadcast_chat"), **kwargs
        )

    def post(self, request, *args, **kwargs):
        message = request.POST.get("message", "")
        if not message or len(message.encode()) > ws4redis_settings.WS4REDIS_MAX_MESSAGE_SIZE:
            return HttpResponseBadRequest("write a message of at most WS4REDIS_MAX_MESSAGE_SIZE")
        publisher = RedisPublisher(facility=self.facility, broadcast=True)
        return JsonResponse({"receivers": sum(publisher.publish_message(message).values())})

    def get(self, request, *args, **kwargs):
        if request.session.session_key is None:
            request.session.save()  # a session channel needs the session's key
        welcome = "Welcome to the broadcast chat: every page on /chat/ sees what you send."
        greeter = RedisPublisher(facility=self.facility, sessions=[SELF], request=request)
        greeter.publish_message(welcome)
        return super().get(request, *args, **kwargs)


class RecipientChatView(LoginRequiredMixin, ChatView):
    """Pick a recipient; the message is POSTed here and this view publishes it to the
    recipient's channel only: the browser never chooses whom its websocket reaches."""

    template_name = "chatserver/recipient_chat.html"
    audience = ""  # "users" or "groups": the RedisPublisher argument
    model: type[User] | type[Group] = User
    name_field = ""  # the model field naming a recipient

    def recipients(self) -> list[str]:
        names = self.model.objects.order_by(self.name_field)
        return list(names.values_list(self.name_field, flat=True))

    def get_context_data(self, **kwargs):
        return super().get_context_data(
            recipients=self.recipients(),
            recipient_label=f"To {self.audience[:-1]}",
            post_url=reverse(self.request.resolver_match.url_name),
            **kwargs,
        )

    def post(self, request, *args, **kwargs):
        recipient, message = request.POST.get("recipient"), request.POST.get("message", "")
        if recipient not in self.recipients() or not message:
            return HttpResponseBadRequest("choose a recipient and write a message")
        text = f"{request.user.get_username()} → {recipient}: {message}"
        audience = {self.audience: [recipient]}
        if not self.reaches_sender(recipient):
            audience["users"] = [*audience.get("users", []), SELF]  # the sender sees it too
        publisher = RedisPublisher(facility=self.facility, request=request, **audience)
        return JsonResponse({"receivers": sum(publisher.publish_message(text).values())})

    def reaches_sender(self, recipient: str) -> bool:
        """Whether the recipient's channel already reaches the sender's own pages."""
        raise NotImplementedError


class UserChatView(RecipientChatView):
    title = "User chat"
    lead = "Send a message to one user; only that user's pages (and yours) receive it."
    facility = "userchat"
    channels = "subscribe-user"
    audience, model, name_field = "users", User, "username"

    def reaches_sender(self, recipient: str) -> bool:
        return recipient == self.request.user.get_username()


class GroupChatView(RecipientChatView):
    title = "Group chat"
    lead = "Send a message to a group; the pages of all its members (and yours) receive it."
    facility = "groupchat"
    channels = "subscribe-group&subscribe-user"
    audience, model, name_field = "groups", Group, "name"

    def reaches_sender(self, recipient: str) -> bool:
        return self.request.user.groups.filter(name=recipient).exists()


class HtmxView(TemplateView):
    """A live list built with HTMX and no JavaScript of its own: the page's list listens to
    the facility's event stream (HTMX's ``sse`` extension, ``sse-swap="item"``); its form
    is posted here by HTMX, and this view publishes the new item as an HTML fragment named
    ``item``, which every open page appends. The answer is the form again, emptied (or with
    what was wrong), which HTMX puts in place of the one posted."""

    template_name = "chatserver/htmx.html"
    facility = "htmx"
    max_length = 200

    def get_context_data(self, **kwargs):
        return super().get_context_data(facility=self.facility, **kwargs)

    def post(self, request, *args, **kwargs):
        text = request.POST.get("text", "").strip()
        if not text or len(text) > self.max_length:
            error = f"Write an item of 1 to {self.max_length} characters."
            # status 200: HTMX swaps in 2xx answers only
            return render(request, "chatserver/htmx_form.html", {"text": text, "error": error})
        author = request.user.get_username() if request.user.is_authenticated else ""
        publisher = RedisPublisher(facility=self.facility, broadcast=True)
        # expire=0: nothing is stored, so a page that opens later is not sent the last item
        publisher.publish_fragment(
            "chatserver/item.html", {"text": text, "author": author}, event="item", expire=0
        )
        return render(request, "chatserver/htmx_form.html")


def online(request):
    """Who has the broadcast chat open (its pages ask again whenever someone joins or
    leaves): names of logged-in users, and how many pages are open."""
    here = present(BroadcastChatView.facility)
    return JsonResponse({"users": sorted(here.users), "connections": here.connections})
