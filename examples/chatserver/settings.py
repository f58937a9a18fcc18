"""Settings of the example chat: a plain Django project plus the few lines ws4redis needs."""

import os
from pathlib import Path

BASE_DIR = Path(__file__).resolve().parent.parent

SECRET_KEY = os.environ.get("DJANGO_SECRET_KEY", "example-only-not-secret")
DEBUG = True
ALLOWED_HOSTS = ["localhost", "127.0.0.1", "[::1]"]

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "ws4redis",
    "chatserver",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]

ROOT_URLCONF = "chatserver.urls"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
                "ws4redis.context_processors.default",
            ],
        },
    },
]

DATABASES = {
    "default": {
        "ENGINE": "django.db.backends.sqlite3",
        "NAME": os.environ.get("DJANGO_DB", BASE_DIR / "db.sqlite3"),
    }
}

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True
STATIC_URL = "/static/"
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"
LOGIN_URL = "/login/"
LOGIN_REDIRECT_URL = "/userchat/"

# --- ws4redis -------------------------------------------------------------------------------
# runserver serves websockets through this application (production uses its own server).
WSGI_APPLICATION = "ws4redis.django_runserver.application"
WEBSOCKET_URL = "/ws/"
WS4REDIS_CONNECTION = {
    "host": os.environ.get("REDIS_HOST", "localhost"),
    "port": int(os.environ.get("REDIS_PORT", "6379")),
}
WS4REDIS_EXPIRE = 7200
WS4REDIS_PREFIX = "demo"
WS4REDIS_HEARTBEAT = "--heartbeat--"
# The broadcast chat keeps its last 100 lines for an hour: a page that reconnects gets what
# it missed, once, instead of the last line again.
WS4REDIS_HISTORY = {"foobar": {"size": 100, "ttl": 3600}}
# ... and shows who is online: its pages are told when someone joins or leaves.
WS4REDIS_PRESENCE = {"foobar": {"announce": True}}
# Who may do what: browsers listen, Django speaks. The broadcast chat's lines are POSTed to
# its view, which publishes them; the user and group chats hear only logged-in users'
# channels. No client publishes anywhere (manage.py check --deploy: ws4redis.W001).
WS4REDIS_PERMISSIONS = {
    "userchat": {"subscribe": "authenticated", "publish": "nobody"},
    "groupchat": {"subscribe": "authenticated", "publish": "nobody"},
    "*": {"subscribe": "anyone", "publish": "nobody"},
}
