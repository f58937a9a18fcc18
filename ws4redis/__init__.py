"""Websockets for Django, with Redis pub/sub as the only link between Django and the browser."""

from __future__ import annotations

from typing import Any

__all__ = ["__version__", "disconnect", "unsubscribe"]

__version__ = "1.0.0"  # the one source: pyproject.toml reads it


def disconnect(**kwargs: Any) -> int | None:
    """Close websockets of a session or user in every process: see
    :func:`ws4redis.control.disconnect` (imported on use: this package loads before Django
    is configured)."""
    from ws4redis.control import disconnect

    return disconnect(**kwargs)


def unsubscribe(**kwargs: Any) -> int | None:
    """End one facility of a session's or user's websockets in every process: see
    :func:`ws4redis.control.unsubscribe`."""
    from ws4redis.control import unsubscribe

    return unsubscribe(**kwargs)
