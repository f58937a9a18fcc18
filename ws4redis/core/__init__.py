"""Transport-free decisions shared by every websocket runtime.

Nothing here reads or writes a socket: a runtime adapter (``ws4redis.runtimes``) hands in a
Django request and the bytes it received, and gets back what to answer, what to publish and
which bytes to write. Keeping I/O out is what lets the development thread, the asyncio server,
ASGI and uWSGI behave identically.
"""
