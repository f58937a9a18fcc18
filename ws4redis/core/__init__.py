"""The decisions of ws4redis, without any I/O.

Nothing here reads or writes a socket, talks to Redis, starts a thread or needs an event
loop, and nothing imports Django or the settings (``tests/core/test_no_io.py`` keeps it so):
a runtime (:mod:`ws4redis.runtimes`) hands in plain values (the upgrade request, the
options read from the settings by :mod:`ws4redis.runtimes.opening`), the bytes it read and
the replies Redis sent, and gets back what to answer, what to publish, which bytes to
write and which commands to send. Keeping I/O out
is what lets ``runserver``, ``runwebsocket``, ASGI and uWSGI behave identically, and lets the
unit tests feed the core bytes directly.
"""
