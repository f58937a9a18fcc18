"""The admin's live page: open websockets per facility, and who is present where presence is
kept. Django's admin finds this module; the page is at ``<admin>/ws4redis/live/``, for
staff, and reloads itself every few seconds."""

from __future__ import annotations

from collections import Counter
from typing import Any

from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.template.defaultfilters import pluralize
from django.template.response import TemplateResponse
from django.urls import URLPattern, path, reverse

from ws4redis import settings
from ws4redis.bus.live import facilities
from ws4redis.bus.pool import REDIS_FAILED
from ws4redis.control import disconnect
from ws4redis.core.presence import tracked
from ws4redis.presence import present

RELOAD_SECONDS = 5


DISCONNECTED = 4003
"""Close code of websockets a staff member closed from the live page."""
MAY_DISCONNECT = "auth.change_user"
"""Who may close other users' websockets: those who may change users (and so deactivate
them, which closes their websockets anyway)."""


def live_view(request: HttpRequest) -> HttpResponse:
    """Facilities with open websockets (over every websocket process), and presence; a POST
    closes one user's websockets (on one facility, or all)."""
    if request.method == "POST":
        return _disconnect(request)
    try:
        counts, processes = facilities()
        error = None
    except REDIS_FAILED as exc:
        counts, processes, error = Counter(), 0, f"Redis does not answer: {exc}"
    rows = []
    for facility, count in sorted(counts.items()):
        here = (
            present(facility)
            if error is None and tracked(settings.WS4REDIS_PRESENCE, facility) is not None
            else None
        )
        rows.append({"facility": facility, "open": count, "presence": here})
    context: dict[str, Any] = {
        **admin.site.each_context(request),
        "title": "Websockets, live",
        "rows": rows,
        "processes": processes,
        "error": error,
        "reload": RELOAD_SECONDS,
        "may_disconnect": request.user.has_perm(MAY_DISCONNECT),
    }
    return TemplateResponse(request, "ws4redis/live.html", context)


def _disconnect(request: HttpRequest) -> HttpResponse:
    """Close the websockets of the user named in the form, in every process, and say how
    many processes heard it (the admin's CSRF protection guards the form)."""
    if not request.user.has_perm(MAY_DISCONNECT):
        raise PermissionDenied(f"closing websockets needs the {MAY_DISCONNECT} permission")
    user = request.POST.get("user", "").strip()
    facility = request.POST.get("facility", "").strip() or None
    if not user:
        messages.error(request, "Name the user whose websockets are to close.")
    else:
        heard = disconnect(user=user, facility=facility, code=DISCONNECTED, reason="by staff")
        if heard is None:
            messages.error(request, f"Redis does not answer: {user}'s websockets stay open.")
        else:
            where = f" on {facility}" if facility else ""
            processes = f"{heard} websocket process{pluralize(heard, 'es')}"
            messages.success(
                request, f"Closed the websockets of {user}{where}: {processes} heard it."
            )
    return HttpResponseRedirect(reverse("admin:ws4redis_live"))


def _with_live_page(get_urls: Any) -> Any:
    def urls() -> list[URLPattern]:
        page = path("ws4redis/live/", admin.site.admin_view(live_view), name="ws4redis_live")
        return [page, *get_urls()]

    return urls


def _with_live_entry(get_app_list: Any) -> Any:
    """The admin index lists the live page, as an app with one view-only entry: ws4redis has
    no models of its own, so nothing else would lead there."""

    def app_list(request: HttpRequest, app_label: str | None = None) -> list[dict[str, Any]]:
        apps = get_app_list(request, app_label)
        if app_label in (None, "ws4redis") and getattr(request.user, "is_staff", False):
            url = reverse("admin:ws4redis_live")
            entry = {"name": "Live websockets", "object_name": "Live", "admin_url": url,
                     "add_url": None, "view_only": True, "perms": {"view": True}}  # fmt: skip
            apps.append({"name": "Websockets for Redis", "app_label": "ws4redis",
                         "app_url": url, "has_module_perms": True, "models": [entry]})  # fmt: skip
        return apps

    return app_list


admin.site.get_urls = _with_live_page(admin.site.get_urls)
admin.site.get_app_list = _with_live_entry(admin.site.get_app_list)
