"""Websockets for Django, with Redis pub/sub as the only link between Django and the browser."""

__version__ = "1.0.0.dev0"
