"""Django settings for the benchmark servers: ws4redis, and Django Channels to compare."""

import json
import os
import tempfile

SECRET_KEY = "benchmark-only"
DEBUG = False
ALLOWED_HOSTS = ["*"]
INSTALLED_APPS = [
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "ws4redis",
    "channels",
]
DATABASES = {
    "default": {
        "ENGINE": "django.db.backends.sqlite3",
        "NAME": os.path.join(tempfile.gettempdir(), "ws4redis-bench.sqlite3"),
    }
}
USE_TZ = True
REDIS_HOST = os.environ.get("REDIS_HOST", "localhost")
REDIS_PORT = int(os.environ.get("REDIS_PORT", "6379"))
WS4REDIS_CONNECTION = {"host": REDIS_HOST, "port": REDIS_PORT}
if os.environ.get("WS4REDIS_BENCH_CONNECTION"):  # bench/cluster.py: another topology
    WS4REDIS_CONNECTION = json.loads(os.environ["WS4REDIS_BENCH_CONNECTION"])
WS4REDIS_EXPIRE = 0
WS4REDIS_PREFIX = "bench"
# The figures are per delivery: keepalive pings (sent to every client silent for 20 s, and
# all clients here connect together and never speak) would land inside a burst.
WS4REDIS_PING_INTERVAL = None
if os.environ.get("WS4REDIS_BENCH_HISTORY"):  # bench/history.py
    WS4REDIS_HISTORY = {"kept": {"size": 1000, "ttl": 600}}
    WS4REDIS_PRESENCE = {"present": {}}
if os.environ.get("WS4REDIS_BENCH_PRESENCE"):  # bench/presence.py: its value is the interval
    # "quiet" keeps presence without announcing; "plain" has none
    WS4REDIS_PRESENCE = {"crowd": {"announce": True}, "quiet": {}}
    WS4REDIS_PRESENCE_INTERVAL = float(os.environ["WS4REDIS_BENCH_PRESENCE"])
if os.environ.get("WS4REDIS_BENCH_COMPRESSION"):  # bench/events.py
    WS4REDIS_COMPRESSION = True
ASGI_APPLICATION = "bench.channels_asgi.application"
WSGI_APPLICATION = "ws4redis.django_runserver.application"  # the fault benchmark's runserver
CHANNEL_LAYERS = {
    "default": {
        "BACKEND": "channels_redis.pubsub.RedisPubSubChannelLayer",
        "CONFIG": {"hosts": [f"redis://{REDIS_HOST}:{REDIS_PORT}/0"]},
    }
}
