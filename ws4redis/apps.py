"""App configuration: validates the settings, registers the system checks and connects the
login signal at start-up."""

from __future__ import annotations

from django.apps import AppConfig


class Ws4RedisConfig(AppConfig):
    name = "ws4redis"
    verbose_name = "Websockets for Redis"

    def ready(self) -> None:
        from django.contrib.auth.signals import user_logged_in

        from ws4redis import checks, settings  # noqa: F401 (checks registers itself)
        from ws4redis.signals import store_groups_in_session

        settings.check_all()
        user_logged_in.connect(store_groups_in_session, dispatch_uid="ws4redis.memberof")
