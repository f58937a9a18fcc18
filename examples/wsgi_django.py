"""The Django loop alone, for a uWSGI instance behind nginx (see deploy/uwsgi/django.ini)."""

import os

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "chatserver.settings")

from django.core.wsgi import get_wsgi_application

application = get_wsgi_application()
