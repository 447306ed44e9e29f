"""
Tests for L{beryl.transport.frames}: the pure frame scanner, the unmasking
and the server frame builders.
"""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st
from twisted.trial.unittest import SynchronousTestCase

from beryl.transport.frames import control_frame, scan, unmask, websocket_message

MASK = b"\x37\xfa\x21\x3d"


def client_frame(
    payload: bytes,
    opcode: int = 1,
    fin: bool = True,
    rsv: int = 0,
    mask: bytes | None = MASK,
    length_bytes: int | None = None,
) -> bytes:
    """
    A client frame; C{length_bytes} (0, 2 or 8) forces a length encoding,
    minimal or not.
    """
    length = len(payload)
    first = (0x80 if fin else 0) | (rsv << 4) | opcode
    masked_bit = 0x80 if mask is not None else 0
    if length_bytes is None:
        length_bytes = 0 if length < 126 else 2 if length < 65536 else 8
    if length_bytes == 0:
        header = bytes((first, masked_bit | length))
    elif length_bytes == 2:
        header = bytes((first, masked_bit | 126)) + length.to_bytes(2, "big")
    else:
        header = bytes((first, masked_bit | 127)) + length.to_bytes(8, "big")
    if mask is None:
        return header + payload
    masked = bytes(byte ^ mask[index % 4] for index, byte in enumerate(payload))
    return header + mask + masked


class UnmaskTests(SynchronousTestCase):
    """
    L{unmask} undoes the client's XOR mask.
    """

    @given(st.binary(min_size=4, max_size=4), st.binary(max_size=300))
    def test_matches_bytewise_xor(self, mask: bytes, payload: bytes) -> None:
        """Unmasking equals XOR with the mask repeated, byte by byte."""
        expected = bytes(byte ^ mask[index % 4] for index, byte in enumerate(payload))
        self.assertEqual(unmask(mask, payload), expected)


class ScanTests(SynchronousTestCase):
    """
    L{scan} reads whole, unfragmented, masked data frames and stops at
    anything else.
    """

    def test_text_and_binary(self) -> None:
        """Text and binary frames are read in order with their ends."""
        one = client_frame(b"hello")
        two = client_frame(b"\x00\x01", opcode=2)
        frames, position = scan(one + two, 0, 100)
        self.assertEqual(
            frames, [(b"hello", False, len(one)), (b"\x00\x01", True, len(one + two))]
        )
        self.assertEqual(position, len(one + two))

    def test_sixteen_bit_length(self) -> None:
        """A payload of 126 to 65535 bytes uses the 16-bit length and is read."""
        payload = b"m" * 300
        data = client_frame(payload)
        self.assertEqual(scan(data, 0, 10), ([(payload, False, len(data))], len(data)))

    def test_empty_payload(self) -> None:
        """An empty text frame is a message too."""
        data = client_frame(b"")
        self.assertEqual(scan(data, 0, 10), ([(b"", False, 6)], 6))

    def test_every_split_point(self) -> None:
        """Scanning any prefix gives exactly the frames wholly inside it."""
        payloads = [b"a", b"b" * 125, b"c" * 126, b"d" * 1000, b""]
        frames = [
            client_frame(p, opcode=1 + index % 2) for index, p in enumerate(payloads)
        ]
        data = b"".join(frames)
        ends = []
        total = 0
        for frame in frames:
            total += len(frame)
            ends.append(total)
        for cut in range(len(data) + 1):
            read, position = scan(data[:cut], 0, 100)
            whole = [index for index, end in enumerate(ends) if end <= cut]
            self.assertEqual(
                [payload for payload, _, _ in read], [payloads[i] for i in whole]
            )
            self.assertEqual(position, ends[whole[-1]] if whole else 0)

    def test_budget(self) -> None:
        """At most the budget of frames is read; the position is after the last one."""
        frame = client_frame(b"x")
        frames, position = scan(frame * 5, 0, 3)
        self.assertEqual(len(frames), 3)
        self.assertEqual(position, 3 * len(frame))

    def test_stops_before_other_frames(self) -> None:
        """Control frames, fragments, reserved bits, bad opcodes, unmasked frames, 64-bit and non-minimal lengths are left to the caller."""
        leader = client_frame(b"first")
        others = {
            "ping": client_frame(b"p", opcode=9),
            "close": client_frame(b"\x03\xe8", opcode=8),
            "fragment": client_frame(b"frag", fin=False),
            "continuation": client_frame(b"frag", opcode=0),
            "rsv1": client_frame(b"r", rsv=4),
            "rsv3": client_frame(b"r", rsv=1),
            "opcode 3": client_frame(b"o", opcode=3),
            "opcode 11": client_frame(b"o", opcode=11),
            "unmasked": client_frame(b"u", mask=None),
            "non-minimal 16": client_frame(b"n", length_bytes=2),
            "64-bit": client_frame(b"n" * 200, length_bytes=8),
        }
        for name, frame in others.items():
            frames, position = scan(leader + frame + leader, 0, 100)
            self.assertEqual(
                (frames, position),
                ([(b"first", False, len(leader))], len(leader)),
                name,
            )

    def test_oversize(self) -> None:
        """A frame over the limit is left to the caller, one at the limit is read."""
        at_limit = client_frame(b"x" * 10)
        over = client_frame(b"x" * 11)
        self.assertEqual(scan(at_limit, 10, 5)[1], len(at_limit))
        self.assertEqual(scan(over, 10, 5), ([], 0))


class BuilderTests(SynchronousTestCase):
    """
    The server frame builders use the minimal length encodings.
    """

    def test_lengths(self) -> None:
        """7-, 16- and 64-bit lengths are chosen by size, with text and binary opcodes."""
        self.assertEqual(websocket_message(b"hi", False), b"\x81\x02hi")
        medium = websocket_message(b"m" * 300, True)
        self.assertEqual(medium[:4], b"\x82\x7e\x01\x2c")
        large = websocket_message(b"L" * 70000, False)
        self.assertEqual(large[:10], b"\x81\x7f" + (70000).to_bytes(8, "big"))
        self.assertEqual(len(large), 70010)

    def test_control_frame(self) -> None:
        """A pong carries its payload; more than 125 bytes is refused."""
        self.assertEqual(control_frame(10, b"abc"), b"\x8a\x03abc")
        self.assertRaises(ValueError, control_frame, 10, b"x" * 126)
