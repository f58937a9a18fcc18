"""The example under any ASGI server: pages from Django, websockets under WEBSOCKET_URL.

From examples/:  uvicorn asgi:application --port 8000
"""

import os

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "chatserver.settings")

from ws4redis.asgi import application  # noqa: F401  (sets Django up itself)
