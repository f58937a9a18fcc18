"""Running a facility's hook (:mod:`ws4redis.hooks`) for the runtimes.

A :class:`Hook` belongs to one facility of one connection: it loads the session and user
afresh for each message (who may speak is Django's state now), calls the project's callable
and turns what it returns into a :class:`Verdict`: what to publish, and what the sender
alone is told. Calls run in one bounded pool per process (:func:`submit`), so a slow hook
holds neither an event loop nor more than ``WS4REDIS_HOOK_THREADS`` threads; what waits for
the pool is bounded (``WS4REDIS_MAX_PENDING_PUBLISHES``) and a client over it is failed as
when Redis does not keep up.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from django.http import HttpRequest
from django.utils.module_loading import import_string

from ws4redis import settings
from ws4redis.core.facilities import Id, answer
from ws4redis.core.opening import Accepted
from ws4redis.hooks import ClientMessage, Reject, Reply
from ws4redis.runtimes.opening import facility_request, identify
from ws4redis.tokens import QUERY_KEY

logger = logging.getLogger("ws4redis")


@dataclass(frozen=True, slots=True)
class Verdict:
    """What becomes of one client message: ``publish`` (None: nothing), and ``told``, the
    answer for the sender alone (None: nothing)."""

    publish: bytes | None
    told: bytes | None = None


def hook_for(facility: str) -> Callable[[ClientMessage], Any] | None:
    """The hook ``WS4REDIS_HOOKS`` names for ``facility`` (or for ``"*"``), if any."""
    hooks = settings.WS4REDIS_HOOKS
    hook = hooks.get(facility, hooks.get("*"))
    if isinstance(hook, str):
        hook = import_string(hook)
    return hook


class Hook:
    """The hook of one facility of one connection."""

    __slots__ = ("facility", "function", "grant", "request", "token")

    def __init__(
        self,
        function: Callable[[ClientMessage], Any],
        request: HttpRequest,
        facility: str,
        token: str | None,
        grant: Any,
    ) -> None:
        self.function = function
        self.request = request
        self.facility = facility
        self.token, self.grant = token, grant

    def judge(self, data: Any, call: str | None, request_id: Id) -> Verdict:
        """Blocking: run the hook on what the client sent (``call``: the call's name, for a
        call); never raises (a hook that fails is logged and the sender told)."""
        facility = self.facility
        try:
            request = _fresh(self.request)
            identify(request, self.token, self.grant)
            result = self.function(ClientMessage(request, facility, data, call))
        except Reject as refusal:
            result = refusal
        except Exception:
            logger.exception("The hook of facility %r failed", facility)
            return Verdict(None, _error(request_id, facility, 500, "the hook failed"))
        if isinstance(result, Reject):
            if call is not None:
                return Verdict(None, _error(request_id, facility, 403, result.reason))
            return Verdict(None, answer("rejected", request_id, facility, reason=result.reason))
        if isinstance(result, Reply):
            return Verdict(None, _reply(request_id, facility, result.data))
        if call is not None:
            return Verdict(None, _reply(request_id, facility, result))
        if result is None:
            return Verdict(data if isinstance(data, bytes) else str(data).encode())
        if isinstance(result, str | bytes):
            return Verdict(result.encode() if isinstance(result, str) else result)
        logger.error("The hook of facility %r returned %r; nothing published", facility, result)
        return Verdict(None, _error(request_id, facility, 500, "the hook failed"))


def opening_hook(accepted: Accepted) -> Hook | None:
    """The hook of a one-facility websocket's facility, if it has one."""
    if accepted.multiplex:
        return None
    return request_hook(accepted.request, accepted.facility, accepted.grant)


def request_hook(request: HttpRequest, facility: str, grant: Any) -> Hook | None:
    """The hook of ``facility`` for what ``request``'s client sends, if it has one."""
    if (function := hook_for(facility)) is None:
        return None
    return Hook(function, request, facility, request.GET.get(QUERY_KEY), grant)


def timed_out(hook: Hook, request_id: Id) -> Verdict:
    """The verdict on a message whose hook did not answer in ``WS4REDIS_HOOK_TIMEOUT``."""
    logger.warning("The hook of facility %r timed out", hook.facility)
    return Verdict(None, _error(request_id, hook.facility, 504, "the hook timed out"))


def _fresh(request: HttpRequest) -> HttpRequest:
    return facility_request(request, request.path_info[len(settings.WEBSOCKET_URL) :])


def _reply(request_id: Id, facility: str, data: Any) -> bytes:
    try:
        return answer("reply", request_id, facility, data=data)
    except (TypeError, ValueError):
        logger.error("The hook of facility %r answered what JSON cannot hold", facility)
        return _error(request_id, facility, 500, "the hook failed")


def _error(request_id: Id, facility: str, status: int, reason: str) -> bytes:
    return answer("error", request_id, facility, status=status, reason=reason)


class _Pool:
    """The process's hook threads and how many calls wait for them."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._executor: ThreadPoolExecutor | None = None
        self.waiting = 0

    def submit(
        self, hook: Hook, data: Any, call: str | None, request_id: Id
    ) -> Future[Verdict] | None:
        """Run ``hook`` in the pool; None when too many calls wait already."""
        with self._lock:
            if self.waiting >= settings.WS4REDIS_MAX_PENDING_PUBLISHES:
                return None
            self.waiting += 1
            if self._executor is None:
                threads = settings.WS4REDIS_HOOK_THREADS
                self._executor = ThreadPoolExecutor(threads, thread_name_prefix="ws4redis-hook")
            future = self._executor.submit(hook.judge, data, call, request_id)
        future.add_done_callback(self._done)
        return future

    def _done(self, _: Future[Verdict]) -> None:
        with self._lock:
            self.waiting -= 1


POOL = _Pool()
submit = POOL.submit


def judged(hook: Hook, data: Any, call: str | None, request_id: Id) -> Verdict | None:
    """Blocking: the verdict of ``hook`` within ``WS4REDIS_HOOK_TIMEOUT``; None when too many
    calls wait for the pool (the client is to be failed, as when Redis is behind)."""
    future = submit(hook, data, call, request_id)
    if future is None:
        return None
    try:
        return future.result(settings.WS4REDIS_HOOK_TIMEOUT)
    except TimeoutError:
        return timed_out(hook, request_id)


def text_of(message: bytes) -> Any:
    """What a hook gets of a plain websocket's message: its text, or bytes if binary."""
    try:
        return message.decode()
    except UnicodeDecodeError:
        return message
