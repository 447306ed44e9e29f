"""
The Phoenix Channels wire formats: V1 JSON objects, V2 JSON arrays and V2
binary frames, in both directions.

Pure functions and values only.  Decoding is strict and returns a
L{DecodeError} value describing what was wrong, never raises; encoding
returns a L{Frame}: bytes plus whether they go out as a binary WebSocket
frame.
"""

from __future__ import annotations

import json
import math
import re
from typing import Any, Callable, Mapping, Union

import attrs
import orjson

__all__ = [
    "Binary",
    "DecodeError",
    "Frame",
    "Message",
    "Payload",
    "Serializer",
    "Unacceptable",
    "V1_JSON",
    "V2_JSON",
    "encode_once",
    "serializer_for_vsn",
]


@attrs.frozen
class Binary:
    """
    A binary payload: raw bytes that travel as a V2 binary frame rather
    than as JSON.
    """

    data: bytes


Payload = Union[Binary, Any]
"""A message payload: any JSON value, or L{Binary}."""

PresenceMeta = Mapping[str, Any]
"""The metadata of one tracked presence (a JSON object)."""

PresenceList = dict[str, dict[str, list[dict[str, Any]]]]
"""
Phoenix Presence format: C{{key: {"metas": [meta, ...]}}}, each meta
carrying its C{phx_ref}.
"""


def encode_once(payload: Payload) -> Payload:
    """
    C{payload} encoded to JSON once, as an C{orjson.Fragment} that every
    frame it goes into copies as is; a L{Binary} payload is returned
    unchanged.

    @raise TypeError: when C{payload} is not JSON-serialisable (integers
        beyond 64 bits are: the standard library encodes those).
    """
    if isinstance(payload, Binary):
        return payload
    try:
        return orjson.Fragment(_dumps(payload))
    except TypeError:
        return orjson.Fragment(_dumps_wide(payload))


@attrs.frozen
class Message:
    """
    One decoded inbound message.
    """

    join_ref: Any
    ref: Any
    topic: str
    event: str
    payload: Payload


@attrs.frozen
class DecodeError:
    """
    Why an inbound frame could not be decoded.
    """

    reason: str


@attrs.frozen
class Unacceptable:
    """
    An inbound frame that decoded, but whose payload Beryl refuses (a
    number that is not finite, an integer of more than 4,300 digits):
    C{message} has the frame's envelope, for the error reply.
    """

    message: Message
    reason: str


@attrs.frozen
class Frame:
    """
    One encoded outbound WebSocket message.
    """

    data: bytes
    is_binary: bool = False


_KIND_PUSH = 0
_KIND_REPLY = 1
_KIND_BROADCAST = 2

# Compact UTF-8 JSON with non-ASCII kept as is, as Phoenix's Jason writes it.
_dumps = orjson.dumps
_loads = orjson.loads


class _JSONError(Exception):
    pass


class _RefusedNumber(Exception):
    """
    The JSON text holds a number Beryl refuses: one that is not finite
    (C{1e400}, C{NaN}, C{Infinity}) or an integer longer than Python
    converts (4,300 digits by default, a guard against quadratic time).
    C{args} are the value with such numbers as C{None}, and the reason.
    """


# orjson decodes integers beyond 64 bits as (inexact) floats.  Such an
# integer has at least 19 digits in a row; a frame with a run that long
# (rare: long digit strings, many-digit decimals) is decoded exactly by the
# standard library instead.
_LONG_DIGITS = b"0" * 19
_DIGITS_AS_ZERO = bytes(48 if 48 <= byte <= 57 else 32 for byte in range(256))


_LONG_DIGITS_TEXT = re.compile(r"[0-9]{19}")


def _loads_wide(data: bytes | str) -> Any:
    """
    Decode with the standard library: integers of any size stay exact.

    @raise _RefusedNumber: when a number is refused.
    @raise ValueError: when C{data} is not valid UTF-8 JSON.
    """
    text = data.decode("utf-8") if isinstance(data, bytes) else data
    refused = ""

    def refuse(number: str, reason: str = "numbers must be finite") -> None:
        nonlocal refused
        refused = reason

    def parse_int(number: str) -> int | None:
        try:
            return int(number)
        except ValueError:
            refuse(number, "integer has too many digits")
            return None

    def parse_float(number: str) -> float | None:
        value = float(number)
        if math.isfinite(value):
            return value
        refuse(number)
        return None

    try:
        value = json.loads(
            text, parse_float=parse_float, parse_int=parse_int, parse_constant=refuse
        )
    except RecursionError:
        raise ValueError("nested too deeply") from None
    if refused:
        raise _RefusedNumber(value, refused)
    return value


def _dumps_wide(value: Any) -> bytes:
    """
    Encode with the standard library, for what orjson refuses (integers
    beyond 64 bits, nesting deeper than 255): the same compact UTF-8 JSON.

    @raise TypeError: when C{value} cannot be encoded either.
    """
    try:
        return json.dumps(
            value, ensure_ascii=False, separators=(",", ":"), allow_nan=False
        ).encode("utf-8")
    except (ValueError, RecursionError) as error:
        raise TypeError(f"cannot be encoded as JSON: {error}") from None


def json_bytes(value: Any) -> bytes:
    """
    C{value} as compact UTF-8 JSON, integers of any size exact (what
    orjson refuses, the standard library encodes).

    @raise TypeError: when C{value} is not JSON-serialisable.
    """
    try:
        return _dumps(value)
    except TypeError:
        return _dumps_wide(value)


def json_value(data: bytes) -> Any:
    """
    Decode JSON that L{json_bytes} wrote, integers of any size exact.

    @raise ValueError: when C{data} is not JSON.
    """
    if _LONG_DIGITS in data.translate(_DIGITS_AS_ZERO):
        return json.loads(data)
    return _loads(data)


MAX_REF_LENGTH = 255
"""
The longest string ref or join_ref a client may send, as in a V2 binary
frame's header: replies echo refs, so they stay short.
"""


def _is_ref(value: Any) -> bool:
    if type(value) is str:
        return len(value) <= MAX_REF_LENGTH
    return value is None or isinstance(value, (int, float, bool))


def _ref_text(value: Any) -> bytes:
    """
    A ref as it goes into a binary header: empty for null.
    """
    if value is None:
        return b""
    if isinstance(value, str):
        return value.encode("utf-8")
    return _dumps(value)


def _binary_frame(kind: int, fields: tuple[bytes, ...], data: bytes) -> Frame:
    """
    A V2 binary frame: the kind byte, one length byte per header field, the
    fields, then the raw payload.
    """
    if any(len(field) > 255 for field in fields):
        raise ValueError("binary header field longer than 255 bytes")
    return Frame(bytes((kind, *map(len, fields))) + b"".join(fields) + data, True)


def _decode_binary_push(data: bytes) -> Message | DecodeError:
    """
    Decode a V2 binary client push (kind 0): the only binary kind clients
    send.
    """
    if not data:
        return DecodeError("empty binary frame")
    kind = data[0]
    if kind != _KIND_PUSH:
        return DecodeError(f"unsupported binary frame kind {kind}")
    if len(data) < 5:
        return DecodeError("truncated binary frame header")
    lengths = data[1:5]
    offset = 5
    fields = []
    for length in lengths:
        end = offset + length
        if end > len(data):
            return DecodeError("truncated binary frame header")
        try:
            fields.append(data[offset:end].decode("utf-8"))
        except UnicodeDecodeError:
            return DecodeError("binary frame header is not UTF-8")
        offset = end
    join_ref, ref, topic, event = fields
    return Message(
        join_ref or None,
        ref or None,
        topic,
        event,
        Binary(data[offset:]),
    )


class Serializer:
    """
    One protocol version's codec.  Subclasses fill in the text format.
    """

    vsn: str = ""
    supports_binary: bool = False

    def decode_text(self, data: bytes | str) -> Message | DecodeError | Unacceptable:
        """
        Decode a text frame: UTF-8 JSON bytes, or the JSON text as a
        C{str} (one with lone surrogates is not valid UTF-8).  Integers of
        any size decode exactly; a frame with a number that is not finite
        (C{1e400}, C{NaN}) is L{Unacceptable}.
        """
        raise NotImplementedError()

    def decode_binary(self, data: bytes) -> Message | DecodeError:
        """
        Decode a binary frame.
        """
        return DecodeError("binary frames are not supported in V1")

    def encode(
        self, join_ref: Any, ref: Any, topic: str, event: str, payload: Any
    ) -> Frame:
        """
        Encode a JSON message with every field given.
        """
        raise NotImplementedError()

    def encode_reply(
        self, join_ref: Any, ref: Any, topic: str, status: str, response: Payload
    ) -> Frame:
        """
        Encode a C{phx_reply}; a L{Binary} response becomes a binary reply.
        """
        if isinstance(response, Binary):
            return self._binary(
                _KIND_REPLY,
                (_ref_text(join_ref), _ref_text(ref), topic.encode(), status.encode()),
                response,
            )
        return self.encode(
            join_ref,
            ref,
            topic,
            "phx_reply",
            {"status": status, "response": response},
        )

    def encode_push(
        self, join_ref: Any, topic: str, event: str, payload: Payload
    ) -> Frame:
        """
        Encode a server push to one channel (C{ref} is null).
        """
        if isinstance(payload, Binary):
            return self._binary(
                _KIND_PUSH,
                (_ref_text(join_ref), topic.encode(), event.encode()),
                payload,
            )
        return self.encode(join_ref, None, topic, event, payload)

    def encode_broadcast(self, topic: str, event: str, payload: Payload) -> Frame:
        """
        Encode a broadcast (both refs null).
        """
        if isinstance(payload, Binary):
            return self._binary(
                _KIND_BROADCAST, (topic.encode(), event.encode()), payload
            )
        return self.encode(None, None, topic, event, payload)

    def _binary(self, kind: int, fields: tuple[bytes, ...], payload: Binary) -> Frame:
        if not self.supports_binary:
            raise ValueError("binary payloads need the V2 protocol")
        return _binary_frame(kind, fields, payload.data)


def _load_text(data: bytes | str) -> Any:
    """
    Decode JSON text with orjson, or exactly with the standard library when
    it may hold an integer beyond 64 bits.

    @raise _RefusedNumber: when a number is refused.
    @raise _JSONError: when it is not JSON.
    """
    # inline: every inbound text frame comes here
    if (
        _LONG_DIGITS in data.translate(_DIGITS_AS_ZERO)
        if type(data) is bytes
        else _LONG_DIGITS_TEXT.search(data) is not None  # type: ignore[arg-type]
    ):
        try:
            return _loads_wide(data)
        except UnicodeError:
            raise _JSONError("frame is not valid UTF-8") from None
        except ValueError as error:
            raise _JSONError(f"malformed JSON: {error}"[:200]) from None
    try:
        return _loads(data)
    except orjson.JSONDecodeError as error:
        message = str(error)
        if "utf-8" in message.lower() or "surrogate" in message.lower():
            raise _JSONError("frame is not valid UTF-8") from None
        try:
            _loads_wide(data)
        except _RefusedNumber:
            raise
        except ValueError:
            pass
        raise _JSONError(f"malformed JSON: {message}"[:200]) from None


def _refused(
    refused: _RefusedNumber,
    decode_text: Callable[[str], Message | DecodeError | Unacceptable],
) -> DecodeError | Unacceptable:
    """
    The frame's envelope, decoded again from the value with its refused
    numbers as C{None}, for an error reply.
    """
    value, reason = refused.args
    message = decode_text(json.dumps(value))
    if not isinstance(message, Message):
        return DecodeError(f"malformed JSON: {reason}")
    return Unacceptable(message, reason)


class V2JSONSerializer(Serializer):
    """
    V2: JSON arrays C{[join_ref, ref, topic, event, payload]} and binary
    frames.
    """

    vsn = "2.0.0"
    supports_binary = True

    def decode_text(self, data: bytes | str) -> Message | DecodeError | Unacceptable:
        try:
            value = _load_text(data)
        except _JSONError as error:
            return DecodeError(str(error))
        except _RefusedNumber as refused:
            return _refused(refused, self.decode_text)
        if not isinstance(value, list):
            return DecodeError(
                "expected a JSON array [join_ref, ref, topic, event, payload]"
            )
        if len(value) < 5:
            return DecodeError(
                f"expected 5 elements [join_ref, ref, topic, event, payload], got {len(value)}"
            )
        join_ref, ref, topic, event, payload = value[:5]
        return _checked(join_ref, ref, topic, event, payload)

    def decode_binary(self, data: bytes) -> Message | DecodeError:
        return _decode_binary_push(data)

    def encode(
        self, join_ref: Any, ref: Any, topic: str, event: str, payload: Any
    ) -> Frame:
        try:
            return Frame(_dumps([join_ref, ref, topic, event, payload]))
        except TypeError:
            return Frame(_dumps_wide([join_ref, ref, topic, event, payload]))


class V1JSONSerializer(Serializer):
    """
    V1: JSON objects C{{topic, event, payload, ref[, join_ref]}}; output
    never carries C{join_ref}.
    """

    vsn = "1.0.0"

    def decode_text(self, data: bytes | str) -> Message | DecodeError | Unacceptable:
        try:
            value = _load_text(data)
        except _JSONError as error:
            return DecodeError(str(error))
        except _RefusedNumber as refused:
            return _refused(refused, self.decode_text)
        if not isinstance(value, dict):
            return DecodeError("expected a JSON object {topic, event, payload, ref}")
        missing = [
            key for key in ("topic", "event", "payload", "ref") if key not in value
        ]
        if missing:
            return DecodeError(f"missing key(s): {', '.join(missing)}")
        return _checked(
            value.get("join_ref"),
            value["ref"],
            value["topic"],
            value["event"],
            value["payload"],
        )

    def encode(
        self, join_ref: Any, ref: Any, topic: str, event: str, payload: Any
    ) -> Frame:
        message = {"topic": topic, "event": event, "payload": payload, "ref": ref}
        try:
            return Frame(_dumps(message))
        except TypeError:
            return Frame(_dumps_wide(message))


def _checked(
    join_ref: Any, ref: Any, topic: Any, event: Any, payload: Any
) -> Message | DecodeError:
    if not _is_ref(join_ref):
        return DecodeError(
            "join_ref must be a string (at most 255 characters), number or null"
        )
    if not _is_ref(ref):
        return DecodeError(
            "ref must be a string (at most 255 characters), number or null"
        )
    if not isinstance(topic, str):
        return DecodeError("topic must be a string")
    if not isinstance(event, str):
        return DecodeError("event must be a string")
    return Message(join_ref, ref, topic, event, payload)


V1_JSON = V1JSONSerializer()
V2_JSON = V2JSONSerializer()


def serializer_for_vsn(vsn: str | None) -> Serializer | None:
    """
    The serializer that a client's C{vsn} query parameter selects: none
    given means V1; C{1.0.x} V1; C{2.0.x} V2; anything else C{None}
    (the connection is refused).
    """
    if vsn is None:
        return V1_JSON
    parts = vsn.split(".")
    if len(parts) != 3 or not all(part.isascii() and part.isdigit() for part in parts):
        return None
    if parts[0] == "1" and parts[1] == "0":
        return V1_JSON
    if parts[0] == "2" and parts[1] == "0":
        return V2_JSON
    return None
