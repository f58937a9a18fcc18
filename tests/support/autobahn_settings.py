"""Settings of the servers the Autobahn TestSuite drives: echo through Redis, nothing kept.

The cases send messages of up to 16 MiB and expect each one back: the size limits are
raised to let them through, and no message is persisted (a new case's connection must not
start with the previous case's last message).
"""

from tests.support.settings import *  # noqa: F403

WS4REDIS_EXPIRE = 0
WS4REDIS_ALLOWED_CHANNELS = None
WS4REDIS_MAX_MESSAGE_SIZE = 16 * 1024 * 1024
WS4REDIS_MAX_BUFFER_SIZE = 64 * 1024 * 1024
