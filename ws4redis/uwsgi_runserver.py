"""The websocket loop under uWSGI with gevent (not available yet in this release)."""

raise ImportError(
    "ws4redis.uwsgi_runserver is not available yet: use `python manage.py runserver` for "
    "development; the uWSGI + gevent runtime arrives in a later release."
)
