from django.contrib import admin
from django.contrib.auth import views as auth_views
from django.contrib.staticfiles.urls import staticfiles_urlpatterns
from django.urls import path
from django.views.generic import RedirectView

from chatserver.views import BroadcastChatView, GroupChatView, HtmxView, UserChatView, online

urlpatterns = [
    path("", RedirectView.as_view(url="/chat/", permanent=False)),
    path("chat/", BroadcastChatView.as_view(), name="broadcast_chat"),
    path("chat/online/", online, name="online"),
    path("userchat/", UserChatView.as_view(), name="user_chat"),
    path("groupchat/", GroupChatView.as_view(), name="group_chat"),
    path("htmx/", HtmxView.as_view(), name="htmx"),
    path("login/", auth_views.LoginView.as_view(), name="login"),
    path("logout/", auth_views.LogoutView.as_view(next_page="/chat/"), name="logout"),
    path("admin/", admin.site.urls),
]
# Static files for servers without a web server in front (uWSGI stand-alone); DEBUG only.
urlpatterns += staticfiles_urlpatterns()
