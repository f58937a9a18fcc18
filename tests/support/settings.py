"""Settings of the test suite: the example chat project with test-friendly values."""

import os
import tempfile

from chatserver.settings import *  # noqa: F403

DEBUG = False
ALLOWED_HOSTS = ["localhost", "127.0.0.1", "testserver"]
DATABASES = {
    "default": {
        "ENGINE": "django.db.backends.sqlite3",
        # Servers in other processes are pointed at the test database by the fixtures.
        "NAME": os.environ.get(
            "WS4REDIS_TEST_DB", os.path.join(tempfile.gettempdir(), "ws4redis-tests.sqlite3")
        ),
        # A file, not memory: servers running in other processes must see the same data.
        "TEST": {"NAME": os.path.join(tempfile.gettempdir(), f"ws4redis-test-{os.getpid()}.db")},
    }
}
PASSWORD_HASHERS = [
    "django.contrib.auth.hashers.MD5PasswordHasher",
    "django.contrib.auth.hashers.PBKDF2PasswordHasher",  # the example fixture's hashes
]
WS4REDIS_CONNECTION = {
    "host": os.environ.get("REDIS_HOST", "localhost"),
    "port": int(os.environ.get("REDIS_PORT", "6379")),
    "db": int(os.environ.get("REDIS_TEST_DB", "15")),
}
WS4REDIS_PREFIX = "ws4redis"
WS4REDIS_EXPIRE = 10
WS4REDIS_HEARTBEAT = None
WS4REDIS_ALLOWED_CHANNELS = "tests.support.callbacks.deny_on_header"
SESSION_REDIS = {**WS4REDIS_CONNECTION, "prefix": "session"}
# Presence on the facility "here" (tests/messaging/test_presence.py); the expiry test
# starts a process with a short time to live through the environment.
WS4REDIS_PRESENCE = {**WS4REDIS_PRESENCE, "here": {"announce": True}}  # noqa: F405
WS4REDIS_PRESENCE_TTL = int(os.environ.get("WS4REDIS_TEST_PRESENCE_TTL", "60"))
# Each change announced in its own round (tests of batching ask for an interval themselves)
WS4REDIS_PRESENCE_INTERVAL = 0.001
# The suite's clients publish on many facilities, as drop-in projects' do: the original's
# open default here (tests/connections/test_identity.py sets permissions where it tests them).
WS4REDIS_PERMISSIONS = None
