"""``permessage-deflate`` (RFC 7692) compressed once per message for all its websockets.

A message reaches thousands of websockets; compressing it for each of them would cost
thousands of compressions. It can be compressed once when the server never uses context
takeover: every compressed message then starts from an empty window, so its bytes are the
same on every connection. :data:`SERVER_EXTENSION` negotiates that (and, for the memory of
a process holding many thousands of connections, that clients do not keep a window
either: their decoder lives for one message), :class:`SharedDeflate` compresses, and
:func:`~ws4redis.core.websocket.deflated_encoder` builds the frames with it.
Decoding what clients send, with its size limit, is the ``websockets`` extension's.
"""

from __future__ import annotations

import zlib

from websockets.extensions.base import Extension
from websockets.extensions.permessage_deflate import (
    PerMessageDeflate,
    ServerPerMessageDeflateFactory,
)
from websockets.frames import Frame
from websockets.protocol import Protocol
from websockets.typing import ExtensionName

LEVEL = 6
"""zlib's default: the message is compressed once, so the level costs little per delivery."""
MEMORY_LEVEL = 8
TAIL = b"\x00\x00\xff\xff"
"""The empty stored block a flush ends with; RFC 7692 has the sender drop it."""


SERVER_EXTENSION = ServerPerMessageDeflateFactory(
    server_no_context_takeover=True,
    client_no_context_takeover=True,
    compress_settings={"level": LEVEL, "memLevel": MEMORY_LEVEL},
)
"""The offer a server that compresses once answers: no context takeover on either side.
Made once: a factory keeps no state of a connection."""


def negotiated_window(protocol: Protocol) -> int | None:
    """The window bits the server compresses with on ``protocol``'s connection, or None
    when it did not negotiate ``permessage-deflate``."""
    for extension in protocol.extensions:
        if isinstance(extension, PerMessageDeflate):
            return extension.local_max_window_bits
    return None


class SharedDeflate(Extension):
    """The server side of ``permessage-deflate`` without context takeover, with
    compressors a process reuses: a full flush after each message empties the window, so
    the next message refers to nothing before it (which is what a client decoding with a
    fresh window needs), and reusing a compressor costs a tenth of making one.

    The compressors wait in a list: taking one and putting it back are each one atomic
    step, so the threads of a blocking runtime never share one (and never hold more than
    one each), and the event loop's runtime keeps a single one.
    """

    name = ExtensionName("permessage-deflate")

    def __init__(self, window_bits: int) -> None:
        self.window_bits = window_bits
        self._idle: list[zlib._Compress] = []

    def encode(self, frame: Frame) -> Frame:
        """Compress ``frame``, a whole data message (the only frames given to it)."""
        try:
            compressor = self._idle.pop()
        except IndexError:
            compressor = zlib.compressobj(LEVEL, zlib.DEFLATED, -self.window_bits, MEMORY_LEVEL)
        data = compressor.compress(frame.data) + compressor.flush(zlib.Z_FULL_FLUSH)
        self._idle.append(compressor)
        return Frame(frame.opcode, data.removesuffix(TAIL), frame.fin, rsv1=True)
