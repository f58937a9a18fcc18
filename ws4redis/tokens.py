"""Signed connection tokens (``docs/reference.md#connection-tokens``).

A view of the project mints a token for its logged-in user with :func:`connection_token`;
a client that has no session cookie for the websocket's site (a page of another domain, a
mobile app, a script) opens ``…/ws/<facility>?subscribe-user&ws4redis-token=<token>``.
The token is made with :mod:`django.core.signing` (HMAC of ``SECRET_KEY`` under a salt of
its own, with the time it was made), so nobody without the secret can make or alter one,
and one signed for another purpose does not verify here. It names the user, the channel
keys and facilities it grants and its lifetime; :func:`verify` checks all but the user's
current state, which :mod:`ws4redis.runtimes.opening` loads from the database at each
opening (a deleted or deactivated user's token opens nothing).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from django.contrib.auth import get_user_model
from django.contrib.auth.base_user import AbstractBaseUser
from django.core import signing
from django.core.exceptions import PermissionDenied
from django.http import HttpRequest, HttpResponse
from django.utils.crypto import constant_time_compare

from ws4redis import settings
from ws4redis.core.names import CHANNEL_KEYS

__all__ = ["QUERY_KEY", "Grant", "connection_token", "token_view", "verify"]

QUERY_KEY = "ws4redis-token"
"""The query field that carries a token. Not ``token``: projects of the original
django-websocket-redis read a ``token`` of their own in ``WS4REDIS_PROCESS_REQUEST``."""

SALT = "ws4redis.connection-token"
"""Separates these signatures from every other use of ``SECRET_KEY`` (signed cookies,
password reset links...): none of those verifies as a connection token, nor the reverse."""


@dataclass(frozen=True, slots=True)
class Grant:
    """What a verified token grants: the primary key of its user (as a string), the channel
    keys and the facilities it may open, and the start of the user's session auth hash
    when it was minted."""

    user: str
    channels: frozenset[str]
    facilities: frozenset[str]
    auth_hash: str = ""


AUTH_HASH_LENGTH = 16
"""Hex digits of the user's session auth hash a token carries: enough to see the password
changed (the token is signed, so the digits cannot be chosen), short for URLs."""


def _auth_hash(user: AbstractBaseUser) -> str:
    """What changes with the user's password, as Django's sessions see it (empty for a
    user model without ``get_session_auth_hash``)."""
    get_hash = getattr(user, "get_session_auth_hash", None)
    return get_hash()[:AUTH_HASH_LENGTH] if get_hash is not None else ""


def _facilities(facility: str | Iterable[str]) -> list[str]:
    names = [facility] if isinstance(facility, str) else list(facility)
    if not names or not all(isinstance(name, str) for name in names):
        raise ValueError("a connection token needs a facility name or a list of them")
    return sorted(set(names))


def claims(
    user: AbstractBaseUser,
    channels: Iterable[str],
    facility: str | Iterable[str],
    max_age: int | None = None,
) -> dict[str, Any]:
    """What a token says, before it is signed: user (``u``), channel keys (``c``),
    facilities (``f``), lifetime in seconds (``a``) and the start of the user's session
    auth hash (``h``: a password change ends the user's tokens as it ends their sessions).
    ValueError for an unknown channel key, a session key (a token opening has no session),
    no facility or a lifetime that is not a positive int."""
    keys = sorted({key.strip().lower() for key in channels})
    if unknown := [key for key in keys if key not in CHANNEL_KEYS]:
        raise ValueError(f"unknown channel keys {unknown}; known are {sorted(CHANNEL_KEYS)}")
    if session := [key for key in keys if key.endswith("-session")]:
        raise ValueError(f"a token opening has no session: {', '.join(session)} grants nothing")
    age = settings.WS4REDIS_TOKEN_MAX_AGE if max_age is None else max_age
    if not isinstance(age, int) or isinstance(age, bool) or age <= 0:
        raise ValueError(f"max_age must be a positive number of seconds, got {age!r}")
    if user.pk is None or not user.is_authenticated:
        raise ValueError("a connection token is for a saved, authenticated user")
    return {
        "u": str(user.pk),
        "c": keys,
        "f": _facilities(facility),
        "a": age,
        "h": _auth_hash(user),
    }


def connection_token(
    user: AbstractBaseUser,
    channels: Iterable[str],
    facility: str | Iterable[str],
    max_age: int | None = None,
) -> str:
    """A token letting a client open websockets as ``user`` on ``facility`` (a name or a
    list), asking for at most the channel keys ``channels`` (``"subscribe-user"``,
    ``"publish-group"``...), for ``max_age`` seconds (``WS4REDIS_TOKEN_MAX_AGE`` by
    default) from now. Tokens travel in URLs, which servers log: keep them short-lived and
    let the client fetch fresh ones (:func:`token_view`)."""
    return signing.dumps(claims(user, channels, facility, max_age), salt=SALT)


def verify(token: str) -> Grant:
    """The grant of ``token``, or PermissionDenied saying why it grants nothing (bad
    signature, expired, malformed). The user it names is not looked up here."""
    try:
        # The signature first (without an age), so that the lifetime read is the signed one.
        lifetime = signing.loads(token, salt=SALT)["a"]
        data = signing.loads(token, salt=SALT, max_age=lifetime)
        grant = Grant(str(data["u"]), frozenset(data["c"]), frozenset(data["f"]), data["h"])
    except signing.SignatureExpired as exc:
        raise PermissionDenied(f"The connection token has expired ({exc}).") from exc
    except signing.BadSignature as exc:
        raise PermissionDenied("The connection token is not valid (bad signature).") from exc
    except (KeyError, TypeError, ValueError) as exc:  # signed by us, yet not a token's shape
        raise PermissionDenied("The connection token is not valid (malformed).") from exc
    return grant


def token_user(grant: Grant) -> AbstractBaseUser:
    """The user ``grant`` names as the database has it now; PermissionDenied when that
    user no longer exists, is inactive or changed their password since (a token outlives
    none of these)."""
    model = get_user_model()
    try:
        user = model._default_manager.get(pk=grant.user)
    except (model.DoesNotExist, ValueError) as exc:
        raise PermissionDenied("The connection token's user does not exist.") from exc
    if not getattr(user, "is_active", True):
        raise PermissionDenied("The connection token's user is inactive.")
    if not constant_time_compare(_auth_hash(user), grant.auth_hash):
        raise PermissionDenied("The connection token predates its user's password change.")
    return user


def token_view(
    channels: Iterable[str], facility: str | Iterable[str], max_age: int | None = None
) -> Callable[[HttpRequest], HttpResponse]:
    """A view that gives its logged-in user a fresh token, as JSON ``{"token": …,
    "max_age": seconds}`` (403 for anonymous visitors). Wire it to a URL::

        path("ws-token/", token_view(["subscribe-user"], facility="chat"))

    and hand that URL to ``ws4redis.js`` as ``token_refresh``. It reads the session like
    any page, so only pages of the site (or origins the project opens to with CORS) can
    read its answer."""
    keys, names = list(channels), _facilities(facility)

    def view(request: HttpRequest) -> HttpResponse:
        user = request.user
        if not user.is_authenticated:
            return HttpResponse("Log in to get a connection token.\n", status=403)
        age = settings.WS4REDIS_TOKEN_MAX_AGE if max_age is None else max_age
        body = {"token": connection_token(user, keys, names, age), "max_age": age}
        response = HttpResponse(json.dumps(body), content_type="application/json")
        response["Cache-Control"] = "no-store"
        return response

    return view
