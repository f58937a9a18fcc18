from django.contrib import admin
from django.urls import path
from django.views.generic import RedirectView

from chatserver.views import BroadcastChatView

urlpatterns = [
    path("", RedirectView.as_view(url="/chat/", permanent=False)),
    path("chat/", BroadcastChatView.as_view(), name="broadcast_chat"),
    path("admin/", admin.site.urls),
]
