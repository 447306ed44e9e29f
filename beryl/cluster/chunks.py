"""
Splitting cluster messages into AMP-sized chunks and putting them back
together.

AMP limits every value to 65,535 bytes, so a message bigger than that
travels as several consecutive C{Deliver} commands that share a message id.
Pure code: no I/O, no reactor.
"""

from __future__ import annotations

import attrs

__all__ = ["CHUNK_SIZE", "ChunkError", "Reassembler", "split"]

CHUNK_SIZE = 60_000
"""
The largest chunk of message data in one C{Deliver} command; below AMP's
65,535 byte value limit.
"""


def split(data: bytes, size: int = CHUNK_SIZE) -> list[bytes]:
    """
    Cut C{data} into pieces of at most C{size} bytes; an empty message is
    one empty chunk.
    """
    if not data:
        return [b""]
    return [data[start : start + size] for start in range(0, len(data), size)]


@attrs.frozen
class ChunkError:
    """
    Why a chunk was refused; the partial message it belonged to is dropped.
    """

    reason: str


@attrs.define
class Reassembler:
    """
    Rebuilds messages from the chunks of one link.

    Chunks of one message arrive consecutively and in order on a link, so
    only one message is ever in progress; anything else is a broken or
    malicious peer and is refused.

    @ivar max_chunks: the most chunks one message may have, which bounds the
        memory a peer can make this node hold.
    """

    max_chunks: int = 1 + (64 * 1024 * 1024) // CHUNK_SIZE
    _message_id: int | None = None
    _count: int = 0
    _parts: list[bytes] = attrs.field(factory=list)

    def feed(
        self, message_id: int, index: int, count: int, data: bytes
    ) -> bytes | ChunkError | None:
        """
        Take one chunk.

        @return: the whole message when this was its last chunk, C{None}
            while more chunks are expected, or a L{ChunkError} when the
            chunk does not fit (the partial message is then dropped).
        """
        if count < 1 or count > self.max_chunks:
            self._reset()
            return ChunkError(f"chunk count {count} is out of range")
        if index == 0:
            if self._message_id is not None:
                self._reset()
                return ChunkError("a new message started before the last one ended")
            self._message_id = message_id
            self._count = count
            self._parts = [data]
        elif (
            message_id != self._message_id
            or index != len(self._parts)
            or count != self._count
        ):
            self._reset()
            return ChunkError(
                f"unexpected chunk {index} of {count} for message {message_id}"
            )
        else:
            self._parts.append(data)
        if len(self._parts) == self._count:
            message = b"".join(self._parts)
            self._reset()
            return message
        return None

    def _reset(self) -> None:
        self._message_id = None
        self._count = 0
        self._parts = []
