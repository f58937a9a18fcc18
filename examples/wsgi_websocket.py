"""The websocket loop alone, for a uWSGI instance with gevent (see deploy/uwsgi/websocket.ini).

Importing ws4redis.uwsgi_runserver makes sockets cooperative for gevent; no patching of
redis by hand is needed.
"""

import os

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "chatserver.settings")

from ws4redis.uwsgi_runserver import uWSGIWebsocketServer

application = uWSGIWebsocketServer()
