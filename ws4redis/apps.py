"""App configuration: registers the system checks (settings, Redis, deployment) and
connects the signals that close websockets when Django ends a session or changes groups."""

from __future__ import annotations

from django.apps import AppConfig


class Ws4RedisConfig(AppConfig):
    name = "ws4redis"
    verbose_name = "Websockets for Redis"

    def ready(self) -> None:
        from django.apps import apps
        from django.contrib.auth.signals import user_logged_in, user_logged_out
        from django.db.models.signals import post_delete

        from ws4redis import checks  # noqa: F401 (checks registers itself)
        from ws4redis.control import session_deleted, session_ended
        from ws4redis.signals import store_groups_in_session

        user_logged_in.connect(store_groups_in_session, dispatch_uid="ws4redis.memberof")
        user_logged_out.connect(session_ended, dispatch_uid="ws4redis.logout")
        if apps.is_installed("django.contrib.sessions"):
            from django.contrib.sessions.models import Session

            post_delete.connect(session_deleted, Session, dispatch_uid="ws4redis.session")
        self._follow_membership()

    @staticmethod
    def _follow_membership() -> None:
        """Connect what closes websockets when a user's groups or the user change."""
        from django.contrib.auth import get_user_model
        from django.contrib.auth.models import Group
        from django.db.models.signals import m2m_changed, post_delete, post_save, pre_delete

        from ws4redis import control

        user = get_user_model()
        if hasattr(user, "groups"):
            through = user.groups.through
            m2m_changed.connect(control.membership_changed, through, dispatch_uid="ws4redis.m2m")
            pre_delete.connect(control.group_deleting, Group, dispatch_uid="ws4redis.group")
            post_delete.connect(control.group_deleted, Group, dispatch_uid="ws4redis.group")
        post_save.connect(control.user_changed, user, dispatch_uid="ws4redis.user")
        post_delete.connect(control.user_changed, user, dispatch_uid="ws4redis.user")
