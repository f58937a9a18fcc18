"""WSGI application for development: Django plus websockets under ``runserver``.

Set ``WSGI_APPLICATION = 'ws4redis.django_runserver.application'``, or install it in a
``LiveServerTestCase`` with ``cls.server_thread.httpd.set_app(application)``.
"""

from ws4redis.runtimes.sync.runserver import websocket_app
from ws4redis.runtimes.sync.wsgi import Dispatcher

__all__ = ["application"]

application = Dispatcher(websocket_app)
