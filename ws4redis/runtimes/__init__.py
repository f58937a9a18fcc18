"""The I/O around the core: one folder per I/O model, the same file name for the same role.

``asyncio/`` holds the event-loop runtimes (``runwebsocket``'s server, the ASGI adapter) and
their hub; ``sync/`` the blocking ones (``runserver``'s threads, uWSGI's greenlets, which
gevent makes cooperative) and theirs. ``channels.py`` is the Redis side of one websocket that
both share. Nothing here decides: what to answer, send, close or subscribe comes from
:mod:`ws4redis.core`.
"""
