"""
The WebSocket frames Beryl reads and writes itself, as pure functions.

L{scan} reads the common case of a client's traffic, whole unfragmented
masked text or binary frames, much faster than Autobahn's general frame
machinery.  It decides nothing else: it stops at the first byte that is not
such a frame (a control frame, a fragment, reserved bits, an unknown opcode,
a non-minimal or 64-bit length, a frame over the size limit, a frame not yet
complete) and the caller hands the rest to Autobahn, which answers, closes
or waits exactly as it would have without this module.
"""

from __future__ import annotations

import struct

__all__ = ["control_frame", "scan", "unmask", "websocket_message"]

_TEXT = 0x81
_BINARY = 0x82


def unmask(mask: bytes, payload: bytes) -> bytes:
    """
    Undo a client frame's XOR C{mask} (four bytes) over C{payload}, as one
    big-integer operation.
    """
    length = len(payload)
    if not length:
        return payload
    key = int.from_bytes(mask * (length // 4 + 1), "little") & ((1 << (8 * length)) - 1)
    return (int.from_bytes(payload, "little") ^ key).to_bytes(length, "little")


def scan(
    data: bytes, limit: int, budget: int
) -> tuple[list[tuple[bytes, bool, int]], int]:
    """
    Read the whole, unfragmented, masked text and binary frames at the start
    of C{data}.

    @param limit: the largest payload to read here, or C{0} for no limit; a
        larger frame is left to the caller (Autobahn closes with 1009).
    @param budget: read at most this many frames.
    @return: the frames read, each as C{(payload, is_binary, end)} where
        C{end} is the offset in C{data} just after that frame, and the
        offset where reading stopped.  If that offset is short of
        C{len(data)} and fewer than C{budget} frames were read, what starts
        there is not for this function: a frame it does not read, or the
        incomplete start of one.
    """
    frames: list[tuple[bytes, bool, int]] = []
    end = len(data)
    position = 0
    while end - position >= 6 and budget:
        first, second = data[position], data[position + 1]
        # FIN set, no RSV bits, text (1) or binary (2), masked
        if (first != _TEXT and first != _BINARY) or not second & 0x80:
            break
        length = second & 0x7F
        start = position + 6
        if length == 126:
            if end - position < 8:
                break
            length = (data[position + 2] << 8) | data[position + 3]
            if length < 126:
                break  # not the minimal encoding: Autobahn fails it
            start = position + 8
        elif length == 127:
            break
        if (limit and length > limit) or start + length > end:
            break
        position = start + length
        frames.append(
            (
                unmask(data[start - 4 : start], data[start:position]),
                first == _BINARY,
                position,
            )
        )
        budget -= 1
    return frames, position


def websocket_message(data: bytes, is_binary: bool) -> bytes:
    """
    A whole, unmasked server-to-client WebSocket message (FIN set, no
    extensions) carrying C{data}.
    """
    opcode = _BINARY if is_binary else _TEXT
    length = len(data)
    if length < 126:
        return bytes((opcode, length)) + data
    if length < 65536:
        return struct.pack("!BBH", opcode, 126, length) + data
    return struct.pack("!BBQ", opcode, 127, length) + data


def control_frame(opcode: int, payload: bytes) -> bytes:
    """
    An unmasked server control frame (FIN set) with a payload of at most
    125 bytes, such as a pong (C{opcode} 10).
    """
    if len(payload) > 125:
        raise ValueError("a control frame carries at most 125 bytes")
    return bytes((0x80 | opcode, len(payload))) + payload
