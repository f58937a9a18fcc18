"""ASGI application: websockets under ``WEBSOCKET_URL``, Django's ASGI handler for the rest.

In your project's ``asgi.py``::

    import os
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "mysite.settings")
    from ws4redis.asgi import application

then ``uvicorn mysite.asgi:application``.
"""

import django

django.setup(set_prefix=False)

from ws4redis.runtimes.asyncio.asgi import ASGIApplication  # noqa: E402

__all__ = ["application"]

application = ASGIApplication()
