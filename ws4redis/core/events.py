"""The Server-Sent Events transport: for networks that refuse the websocket upgrade
(``docs/reference.md#server-sent-events``).

A ``GET`` of a websocket URL that accepts ``text/event-stream`` and asks for no upgrade is
answered with an event stream: the same opening, identity, channels and rules of the
connection (:class:`~ws4redis.core.relay.Relay`'s, untouched), only the bytes differ. Each
message is one event (:func:`event`); with positions, each event's ``id`` names where every
channel of the stream stands, so the browser's own reconnect (``Last-Event-ID``) resumes
with exactly what it missed; keepalives are comments, which no ``EventSource`` shows. The
client sends nothing on the stream.

:class:`EventRelay` is the transport of servers that speak HTTP themselves (ASGI: its outbox
holds the events); :class:`EventStreamRelay` adds the response head and the bytes, for the
runtimes that own the socket.
"""

from __future__ import annotations

import base64
import json
import re

from websockets.datastructures import Headers
from websockets.frames import CloseCode

from ws4redis.core.relay import HEARTBEAT_INTERVAL, Failure, Relay, SocketRelay, Start

EVENT_STREAM = "text/event-stream"
HEADERS = (
    ("Content-Type", "text/event-stream; charset=utf-8"),
    ("Cache-Control", "no-cache, no-store"),
    # nginx buffers a proxied response unless told not to: events would wait in it
    ("X-Accel-Buffering", "no"),
)
"""The headers of an event stream (besides those of the connection)."""


def headers(origin: str | None) -> list[tuple[str, str]]:
    """The headers of a stream for a request from ``origin`` (its ``Origin`` header, which
    the opening allowed): another origin's page may read the stream with its credentials
    (CORS), as an ``EventSource`` with ``withCredentials`` asks."""
    if origin is None:
        return list(HEADERS)
    cors = [("Access-Control-Allow-Origin", origin), ("Access-Control-Allow-Credentials", "true")]
    return [*HEADERS, *cors, ("Vary", "Origin")]


KEEPALIVE = b":\n\n"
"""A comment: keeps proxies from closing an idle stream, and no client sees it."""
LINE_END = re.compile(r"\r\n|\r|\n")
"""What ends a line in an event stream: a message's own line ends split it into data lines."""


NAMED = re.compile(rb"<!-- event: ([A-Za-z0-9_.:-]{1,64}) -->\n")
"""How a message names its event (:func:`named`): an HTML comment on its first line, which
an HTML fragment's readers (HTMX's ``ws`` extension, a browser) pass over."""


def named(name: str, html: str) -> str:
    """An HTML fragment that event streams send as an event called ``name`` (for HTMX's
    ``sse-swap="name"``), and websockets as it is (for ``hx-swap-oob``)."""
    if not NAMED.fullmatch(f"<!-- event: {name} -->\n".encode()):
        raise ValueError(f"an event name is 1-64 letters, digits or _.:-, got {name!r}")
    return f"<!-- event: {name} -->\n{html}"


def event(message: bytes) -> bytes:
    """``message`` as one event: a ``data:`` line per line of its text (the browser joins
    them again with ``\\n``), named as its first line says (:func:`named`); or, if it is not
    UTF-8, an event named ``bytes`` whose data is the message in base64."""
    try:
        text = message.decode()
    except UnicodeDecodeError:
        return b"event: bytes\ndata: " + base64.b64encode(message) + b"\n\n"
    head = b""
    if message.startswith(b"<!-- event: ") and (name := NAMED.match(message)):
        head = b"event: " + name.group(1) + b"\n"
        text = text[name.end() :]
    if "\n" not in text and "\r" not in text:
        return head + b"data: " + text.encode() + b"\n\n"
    return head + "".join(f"data: {line}\n" for line in LINE_END.split(text)).encode() + b"\n"


def closing_event(code: int, reason: str) -> bytes:
    """The last event of a stream the server ends: named ``close``, with the close code a
    websocket would have got (a client that knows it, such as ``ws4redis.js``, reads it)."""
    return b"event: close\ndata: " + json.dumps({"code": code, "reason": reason}).encode() + b"\n\n"


def wants_events(method: str, headers: Headers) -> bool:
    """Whether a request asks for an event stream: a ``GET`` that accepts
    ``text/event-stream`` and asks for no upgrade."""
    if method != "GET" or "Upgrade" in headers:
        return False
    return EVENT_STREAM in headers.get("Accept", "")


class EventRelay(Relay):
    """A :class:`Relay` whose outbox holds events, for servers that send the HTTP response
    themselves (ASGI)."""

    encode = staticmethod(event)

    __slots__ = ()

    def _encode_positioned(self, payload: bytes) -> bytes:
        """With positions, the event's ``id`` is where each channel of the stream stands:
        what the browser sends back as ``Last-Event-ID`` when it reconnects."""
        return b"id: " + self.last_event_id().encode() + b"\n" + event(payload)

    def last_event_id(self) -> str:
        """The positions of the stream's channels, as ``since`` takes them."""
        labels = self.labels or {}
        return ",".join(
            f"{labels[channel]}:{position.epoch}:{position.offset}"
            for channel, position in self.positions.items()
            if channel in labels
        )

    def opened(self, start: Start) -> None:
        """The persisted (or recovered) messages first, then, with positions, an event
        without data that only sets the browser's last event id."""
        super().opened(start)
        if self.labels and self.positions:
            self.outbox.append(b"id: " + self.last_event_id().encode() + b"\n\n")
            self.outbox_bytes += len(self.outbox[-1])

    def next_tick(self) -> float:
        return self.last_sent_at + HEARTBEAT_INTERVAL

    def tick(self, now: float) -> bool:
        """A keepalive comment when nothing went out for ``HEARTBEAT_INTERVAL`` (also
        without ``WS4REDIS_HEARTBEAT``: proxies close idle streams)."""
        if not self.sending or now < self.last_sent_at + HEARTBEAT_INTERVAL:
            return False
        self.push(b"", KEEPALIVE)
        self.last_sent_at = now
        return True


class EventStreamRelay(EventRelay, SocketRelay):
    """An event stream on a socket the runtime owns: the response head goes first, the
    stream ends with a ``close`` event and the end of the connection (HTTP/1.1 with
    ``Connection: close``: the body runs until the server closes)."""

    __slots__ = ("_ended", "head")

    def __init__(self, origin: str | None = None, **limits: object) -> None:
        super().__init__(**limits)  # type: ignore[arg-type]
        fields = (f"{k}: {v}" for k, v in headers(origin))
        lines = ["HTTP/1.1 200 OK", *fields, "Connection: close"]
        self.head: bytes | None = ("\r\n".join(lines) + "\r\n\r\n").encode()
        self._ended: list[bytes] = []
        self.sending = False  # until the head is out

    def opened(self, start: Start) -> None:
        head, self.head = self.head, None
        self.sending = self.failure is None
        super().opened(start)
        self.outbox.insert(0, head or b"")

    def receive_data(self, data: bytes) -> list[bytes]:
        """A client of an event stream sends nothing: what comes is ignored."""
        return []

    def receive_eof(self) -> None:
        """The client went away: the stream ends, with nothing more to say."""
        self.sending = False
        self._ended = [b""]

    def frames_to_write(self, now: float) -> bytes | None:
        if not self.sending:
            return None
        data = b"".join(self.outbox)
        self.outbox.clear()
        self.outbox_bytes = 0
        self.last_sent_at = now
        self.stats.bytes_out += len(data)
        return data

    def data_to_send(self) -> list[bytes]:
        """What to write, in order; ``b""`` ends the connection. Once the stream ends only
        its last event goes: nothing may follow it."""
        queued = self.take_outbox()
        if not self.sending:
            queued = []
        ended, self._ended = self._ended, []
        return [*queued, *ended]

    def close(self, code: int = CloseCode.NORMAL_CLOSURE, reason: str = "") -> None:
        if self.sending:
            self._ended = [*self.take_outbox(), closing_event(code, reason), b""]
            self.sending = False

    def fail(self, failure: Failure) -> None:
        """End the stream with ``failure``'s code in a ``close`` event (what the client had
        not read is dropped)."""
        if self.failure is None and self.head is None and self.sending:
            self._ended = [closing_event(failure.code, failure.reason), b""]
        super().fail(failure)
