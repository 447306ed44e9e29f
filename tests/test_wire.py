"""
Tests for L{beryl.wire}: the V1 and V2 JSON text formats, the V2 binary
format, decode errors and protocol version negotiation.
"""

from __future__ import annotations

from typing import Any

import orjson
from hypothesis import given
from hypothesis import strategies as st
from twisted.trial.unittest import SynchronousTestCase

from beryl.wire import (
    V1_JSON,
    V2_JSON,
    Binary,
    DecodeError,
    Frame,
    Message,
    Serializer,
    serializer_for_vsn,
)

# -- strategies ---------------------------------------------------------------

# Any Unicode text except lone surrogates, which JSON text cannot carry as
# UTF-8; the default alphabet includes plenty of non-ASCII characters.
texts = st.text()

# orjson handles the signed and unsigned 64-bit range; finite floats only
# since JSON has no NaN or infinity.
json_scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**64 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | texts
)

json_values = st.recursive(
    json_scalars,
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(texts, children, max_size=4)
    ),
    max_leaves=20,
)

json_objects = st.dictionaries(texts, json_values, max_size=5)

refs = st.none() | texts | st.integers(min_value=-(2**63), max_value=2**63 - 1)


def _short_text(max_bytes: int = 255) -> st.SearchStrategy[str]:
    """
    Text whose UTF-8 encoding fits a binary header field.
    """
    return st.text(max_size=max_bytes // 4)


header_texts = _short_text()

# Non-empty header strings: an empty join_ref/ref decodes as null.
nonempty_header_texts = st.text(min_size=1, max_size=63)


# -- helpers ------------------------------------------------------------------


def client_push(
    join_ref: str, ref: str, topic: str, event: str, payload: bytes
) -> bytes:
    """
    A V2 binary client push (kind 0), laid out as phoenix.js 1.8 writes it.
    """
    fields = [s.encode("utf-8") for s in (join_ref, ref, topic, event)]
    return bytes([0] + [len(f) for f in fields]) + b"".join(fields) + payload


def parse_server_binary(data: bytes) -> dict[str, Any]:
    """
    Parse a server-to-client V2 binary frame the way phoenix.js does.
    """
    kind = data[0]
    names = {
        0: ["join_ref", "topic", "event"],
        1: ["join_ref", "ref", "topic", "status"],
        2: ["topic", "event"],
    }[kind]
    lengths = data[1 : 1 + len(names)]
    offset = 1 + len(names)
    result: dict[str, Any] = {"kind": kind}
    for name, length in zip(names, lengths, strict=True):
        result[name] = data[offset : offset + length].decode("utf-8")
        offset += length
    result["payload"] = data[offset:]
    return result


class V2TextTests(SynchronousTestCase):
    """
    The V2 JSON array format: C{[join_ref, ref, topic, event, payload]}.
    """

    @given(join_ref=refs, ref=refs, topic=texts, event=texts, payload=json_values)
    def test_decodeRoundTrip(
        self, join_ref: Any, ref: Any, topic: str, event: str, payload: Any
    ) -> None:
        """
        An inbound V2 array decodes to a message with every field as sent.
        """
        data = orjson.dumps([join_ref, ref, topic, event, payload])
        self.assertEqual(
            V2_JSON.decode_text(data),
            Message(join_ref, ref, topic, event, payload),
        )

    @given(join_ref=refs, ref=refs, topic=texts, event=texts, payload=json_values)
    def test_encodeRoundTrip(
        self, join_ref: Any, ref: Any, topic: str, event: str, payload: Any
    ) -> None:
        """
        An encoded V2 message is a five-element JSON array text frame
        holding the fields in order.
        """
        frame = V2_JSON.encode(join_ref, ref, topic, event, payload)
        self.assertFalse(frame.is_binary)
        self.assertEqual(
            orjson.loads(frame.data), [join_ref, ref, topic, event, payload]
        )

    @given(join_ref=refs, ref=refs, topic=texts, event=texts, payload=json_values)
    def test_encodeThenDecode(
        self, join_ref: Any, ref: Any, topic: str, event: str, payload: Any
    ) -> None:
        """
        Encoding then decoding a V2 message gives back the same fields (the
        formats are symmetric).
        """
        frame = V2_JSON.encode(join_ref, ref, topic, event, payload)
        self.assertEqual(
            V2_JSON.decode_text(frame.data),
            Message(join_ref, ref, topic, event, payload),
        )

    @given(join_ref=refs, ref=refs, topic=texts, status=texts, response=json_objects)
    def test_encodeReplyRoundTrip(
        self, join_ref: Any, ref: Any, topic: str, status: str, response: Any
    ) -> None:
        """
        A V2 reply is a C{phx_reply} with C{{status, response}} and both refs
        echoed with their JSON type.
        """
        frame = V2_JSON.encode_reply(join_ref, ref, topic, status, response)
        self.assertFalse(frame.is_binary)
        self.assertEqual(
            orjson.loads(frame.data),
            [
                join_ref,
                ref,
                topic,
                "phx_reply",
                {"status": status, "response": response},
            ],
        )

    @given(join_ref=refs, topic=texts, event=texts, payload=json_objects)
    def test_encodePushRoundTrip(
        self, join_ref: Any, topic: str, event: str, payload: Any
    ) -> None:
        """
        A V2 push carries the join_ref and a null ref.
        """
        frame = V2_JSON.encode_push(join_ref, topic, event, payload)
        self.assertEqual(
            orjson.loads(frame.data), [join_ref, None, topic, event, payload]
        )

    @given(topic=texts, event=texts, payload=json_objects)
    def test_encodeBroadcastRoundTrip(
        self, topic: str, event: str, payload: Any
    ) -> None:
        """
        A V2 broadcast carries null for both refs.
        """
        frame = V2_JSON.encode_broadcast(topic, event, payload)
        self.assertEqual(orjson.loads(frame.data), [None, None, topic, event, payload])

    def test_broadcastVector(self) -> None:
        """
        A broadcast of C{{"m":1}} on C{t}/C{e} is exactly
        C{[null,null,"t","e",{"m":1}]} (Phoenix suite vector).
        """
        self.assertEqual(
            V2_JSON.encode_broadcast("t", "e", {"m": 1}),
            Frame(b'[null,null,"t","e",{"m":1}]', False),
        )

    def test_heartbeatVector(self) -> None:
        """
        The heartbeat and its reply have the exact bytes of checklist FR-1.
        """
        self.assertEqual(
            V2_JSON.decode_text(b'[null,"1","phoenix","heartbeat",{}]'),
            Message(None, "1", "phoenix", "heartbeat", {}),
        )
        self.assertEqual(
            V2_JSON.encode_reply(None, "1", "phoenix", "ok", {}).data,
            b'[null,"1","phoenix","phx_reply",{"status":"ok","response":{}}]',
        )

    def test_numericRefStaysNumeric(self) -> None:
        """
        A numeric ref C{5} decodes as the integer 5 and is echoed as the JSON
        number C{5}, not the string C{"5"} (FR-2).
        """
        message = V2_JSON.decode_text(b'[5,5,"t","e",{}]')
        assert isinstance(message, Message)
        self.assertIs(type(message.ref), int)
        self.assertIs(type(message.join_ref), int)
        self.assertEqual((message.join_ref, message.ref), (5, 5))
        self.assertEqual(
            V2_JSON.encode_reply(message.join_ref, message.ref, "t", "ok", {}).data,
            b'[5,5,"t","phx_reply",{"status":"ok","response":{}}]',
        )

    def test_extraElementsIgnored(self) -> None:
        """
        A six-element array is accepted and its extra element ignored (FR-3).
        """
        self.assertEqual(
            V2_JSON.decode_text(b'["1","2","t","e",{"a":1},"extra"]'),
            Message("1", "2", "t", "e", {"a": 1}),
        )

    def test_nonObjectPayloadDecodes(self) -> None:
        """
        An inbound payload may be any JSON value, not only an object.
        """
        self.assertEqual(
            V2_JSON.decode_text(b'[null,null,"t","e",[1,"x",null]]'),
            Message(None, None, "t", "e", [1, "x", None]),
        )

    def test_nonASCIIUnescaped(self) -> None:
        """
        Non-ASCII text is written as UTF-8, not as C{\\u} escapes, and the
        output is compact.
        """
        frame = V2_JSON.encode_broadcast("räum:ü", "évent", {"k": "日本 ✓"})
        self.assertEqual(
            frame.data,
            '[null,null,"räum:ü","évent",{"k":"日本 ✓"}]'.encode("utf-8"),
        )

    def test_vsn(self) -> None:
        """
        The V2 serializer names version 2.0.0 and supports binary.
        """
        self.assertEqual(V2_JSON.vsn, "2.0.0")
        self.assertTrue(V2_JSON.supports_binary)


class V1TextTests(SynchronousTestCase):
    """
    The V1 JSON object format: C{{topic, event, payload, ref[, join_ref]}}.
    """

    @given(join_ref=refs, ref=refs, topic=texts, event=texts, payload=json_values)
    def test_decodeRoundTrip(
        self, join_ref: Any, ref: Any, topic: str, event: str, payload: Any
    ) -> None:
        """
        An inbound V1 object with a join_ref decodes to a message with every
        field as sent.
        """
        data = orjson.dumps(
            {
                "topic": topic,
                "event": event,
                "payload": payload,
                "ref": ref,
                "join_ref": join_ref,
            }
        )
        self.assertEqual(
            V1_JSON.decode_text(data), Message(join_ref, ref, topic, event, payload)
        )

    def test_decodeWithoutJoinRef(self) -> None:
        """
        C{join_ref} is optional inbound under V1 and decodes as null.
        """
        self.assertEqual(
            V1_JSON.decode_text(
                b'{"topic":"t","event":"e","payload":{"a":1},"ref":"3"}'
            ),
            Message(None, "3", "t", "e", {"a": 1}),
        )

    def test_decodeNullRef(self) -> None:
        """
        A V1 C{ref} key whose value is null is accepted.
        """
        self.assertEqual(
            V1_JSON.decode_text(b'{"topic":"t","event":"e","payload":{},"ref":null}'),
            Message(None, None, "t", "e", {}),
        )

    @given(join_ref=refs, ref=refs, topic=texts, event=texts, payload=json_values)
    def test_encodeRoundTrip(
        self, join_ref: Any, ref: Any, topic: str, event: str, payload: Any
    ) -> None:
        """
        An encoded V1 message is an object with exactly C{topic}, C{event},
        C{payload} and C{ref}: never a C{join_ref} key, whatever join_ref is.
        """
        frame = V1_JSON.encode(join_ref, ref, topic, event, payload)
        self.assertFalse(frame.is_binary)
        self.assertEqual(
            orjson.loads(frame.data),
            {"topic": topic, "event": event, "payload": payload, "ref": ref},
        )

    def test_encodeReplyOmitsJoinRef(self) -> None:
        """
        A V1 reply echoes the ref but carries no C{join_ref} key.
        """
        decoded = orjson.loads(V1_JSON.encode_reply("1", "2", "t", "ok", {"a": 1}).data)
        self.assertEqual(
            decoded,
            {
                "topic": "t",
                "event": "phx_reply",
                "payload": {"status": "ok", "response": {"a": 1}},
                "ref": "2",
            },
        )

    def test_encodePushOmitsJoinRef(self) -> None:
        """
        A V1 push has C{ref} present as null and no C{join_ref} key.
        """
        decoded = orjson.loads(V1_JSON.encode_push("1", "t", "e", {"a": 1}).data)
        self.assertEqual(
            decoded, {"topic": "t", "event": "e", "payload": {"a": 1}, "ref": None}
        )

    def test_encodeBroadcast(self) -> None:
        """
        A V1 broadcast has C{ref} null and no C{join_ref} key (BC-1).
        """
        decoded = orjson.loads(V1_JSON.encode_broadcast("t", "e", {"m": 1}).data)
        self.assertEqual(
            decoded, {"topic": "t", "event": "e", "payload": {"m": 1}, "ref": None}
        )

    def test_numericRefStaysNumeric(self) -> None:
        """
        A numeric V1 ref is echoed as the same JSON number.
        """
        self.assertEqual(
            orjson.loads(V1_JSON.encode_reply(None, 5, "t", "ok", {}).data)["ref"], 5
        )
        self.assertIn(b'"ref":5', V1_JSON.encode_reply(None, 5, "t", "ok", {}).data)

    def test_binaryUnsupported(self) -> None:
        """
        Binary payloads cannot be encoded under V1, and V1 does not decode
        binary frames.
        """
        payload = Binary(b"abc")
        self.assertRaises(
            ValueError, V1_JSON.encode_reply, "1", "1", "t", "ok", payload
        )
        self.assertRaises(ValueError, V1_JSON.encode_push, "1", "t", "e", payload)
        self.assertRaises(ValueError, V1_JSON.encode_broadcast, "t", "e", payload)
        self.assertIsInstance(
            V1_JSON.decode_binary(client_push("1", "1", "t", "e", b"x")), DecodeError
        )

    def test_vsn(self) -> None:
        """
        The V1 serializer names version 1.0.0 and does not support binary.
        """
        self.assertEqual(V1_JSON.vsn, "1.0.0")
        self.assertFalse(V1_JSON.supports_binary)


class V2BinaryTests(SynchronousTestCase):
    """
    The V2 binary frame layouts (reference section 3).
    """

    def test_clientPushVector(self) -> None:
        """
        The Phoenix suite's client push vector decodes to its fields with
        the payload tagged as binary.
        """
        data = (
            bytes([0, 2, 3, 5, 5])
            + b"12"
            + b"123"
            + b"topic"
            + b"event"
            + b"\x65\x66\x67"
        )
        self.assertEqual(
            V2_JSON.decode_binary(data),
            Message("12", "123", "topic", "event", Binary(b"\x65\x66\x67")),
        )

    def test_replyVector(self) -> None:
        """
        A binary reply is kind 1 with join_ref, ref, topic and status.
        """
        self.assertEqual(
            V2_JSON.encode_reply("12", "123", "topic", "ok", Binary(b"\x65\x66\x67")),
            Frame(
                bytes([1, 2, 3, 5, 2])
                + b"12"
                + b"123"
                + b"topic"
                + b"ok"
                + b"\x65\x66\x67",
                True,
            ),
        )

    def test_pushVector(self) -> None:
        """
        A binary server push is kind 0 with no ref field.
        """
        self.assertEqual(
            V2_JSON.encode_push("12", "topic", "event", Binary(b"\x65\x66\x67")),
            Frame(
                bytes([0, 2, 5, 5]) + b"12" + b"topic" + b"event" + b"\x65\x66\x67",
                True,
            ),
        )

    def test_broadcastVector(self) -> None:
        """
        A binary broadcast is kind 2 with only topic and event.
        """
        self.assertEqual(
            V2_JSON.encode_broadcast("topic", "event", Binary(b"\x65\x66\x67")),
            Frame(bytes([2, 5, 5]) + b"topic" + b"event" + b"\x65\x66\x67", True),
        )

    def test_nullRefsEncodeEmpty(self) -> None:
        """
        Null join_ref and ref are written as zero-length header fields.
        """
        self.assertEqual(
            V2_JSON.encode_reply(None, None, "t", "ok", Binary(b"")).data,
            bytes([1, 0, 0, 1, 2]) + b"t" + b"ok",
        )
        self.assertEqual(
            V2_JSON.encode_push(None, "t", "e", Binary(b"")).data,
            bytes([0, 0, 1, 1]) + b"te",
        )

    def test_numericRefsEncodeAsText(self) -> None:
        """
        Numeric refs go into binary headers as their decimal text.
        """
        self.assertEqual(
            V2_JSON.encode_reply(7, 42, "t", "ok", Binary(b"")).data,
            bytes([1, 1, 2, 1, 2]) + b"7" + b"42" + b"t" + b"ok",
        )

    def test_emptyRefsDecodeAsNull(self) -> None:
        """
        Zero-length join_ref and ref in a client push decode as null.
        """
        self.assertEqual(
            V2_JSON.decode_binary(client_push("", "", "t", "e", b"")),
            Message(None, None, "t", "e", Binary(b"")),
        )

    def test_headerLengthsInBytes(self) -> None:
        """
        Header lengths count UTF-8 bytes, not characters.
        """
        frame = V2_JSON.encode_broadcast("é", "日", Binary(b"x"))
        self.assertEqual(frame.data, bytes([2, 2, 3]) + "é日".encode("utf-8") + b"x")

    @given(
        join_ref=nonempty_header_texts,
        ref=nonempty_header_texts,
        topic=header_texts,
        event=header_texts,
        payload=st.binary(),
    )
    def test_clientPushRoundTrip(
        self, join_ref: str, ref: str, topic: str, event: str, payload: bytes
    ) -> None:
        """
        Any client push built with the kind-0 layout decodes to its fields
        and raw payload.
        """
        self.assertEqual(
            V2_JSON.decode_binary(client_push(join_ref, ref, topic, event, payload)),
            Message(join_ref, ref, topic, event, Binary(payload)),
        )

    @given(
        join_ref=header_texts,
        ref=header_texts,
        topic=header_texts,
        status=header_texts,
        payload=st.binary(),
    )
    def test_replyRoundTrip(
        self, join_ref: str, ref: str, topic: str, status: str, payload: bytes
    ) -> None:
        """
        Any binary reply parses, as phoenix.js reads kind 1, to its fields.
        """
        frame = V2_JSON.encode_reply(join_ref, ref, topic, status, Binary(payload))
        self.assertTrue(frame.is_binary)
        self.assertEqual(
            parse_server_binary(frame.data),
            {
                "kind": 1,
                "join_ref": join_ref,
                "ref": ref,
                "topic": topic,
                "status": status,
                "payload": payload,
            },
        )

    @given(
        join_ref=header_texts,
        topic=header_texts,
        event=header_texts,
        payload=st.binary(),
    )
    def test_pushRoundTrip(
        self, join_ref: str, topic: str, event: str, payload: bytes
    ) -> None:
        """
        Any binary push parses, as phoenix.js reads kind 0, to its fields.
        """
        frame = V2_JSON.encode_push(join_ref, topic, event, Binary(payload))
        self.assertTrue(frame.is_binary)
        self.assertEqual(
            parse_server_binary(frame.data),
            {
                "kind": 0,
                "join_ref": join_ref,
                "topic": topic,
                "event": event,
                "payload": payload,
            },
        )

    @given(topic=header_texts, event=header_texts, payload=st.binary())
    def test_broadcastRoundTrip(self, topic: str, event: str, payload: bytes) -> None:
        """
        Any binary broadcast parses, as phoenix.js reads kind 2, to its
        fields.
        """
        frame = V2_JSON.encode_broadcast(topic, event, Binary(payload))
        self.assertTrue(frame.is_binary)
        self.assertEqual(
            parse_server_binary(frame.data),
            {"kind": 2, "topic": topic, "event": event, "payload": payload},
        )

    def test_longestHeaderField(self) -> None:
        """
        A header field of exactly 255 bytes is encoded.
        """
        topic = "t" * 255
        frame = V2_JSON.encode_broadcast(topic, "e", Binary(b""))
        self.assertEqual(frame.data, bytes([2, 255, 1]) + topic.encode() + b"e")

    def test_headerFieldTooLong(self) -> None:
        """
        Any header field over 255 bytes makes every binary encoder raise
        L{ValueError}, counting UTF-8 bytes (128 x C{é} is 256 bytes).
        """
        long = "é" * 128
        payload = Binary(b"x")
        for call in [
            lambda: V2_JSON.encode_broadcast(long, "e", payload),
            lambda: V2_JSON.encode_broadcast("t", long, payload),
            lambda: V2_JSON.encode_push(long, "t", "e", payload),
            lambda: V2_JSON.encode_push("1", long, "e", payload),
            lambda: V2_JSON.encode_push("1", "t", long, payload),
            lambda: V2_JSON.encode_reply(long, "1", "t", "ok", payload),
            lambda: V2_JSON.encode_reply("1", long, "t", "ok", payload),
            lambda: V2_JSON.encode_reply("1", "1", long, "ok", payload),
            lambda: V2_JSON.encode_reply("1", "1", "t", long, payload),
        ]:
            self.assertRaises(ValueError, call)


class DecodeErrorTests(SynchronousTestCase):
    """
    Malformed frames decode to a L{DecodeError} saying what was wrong.
    """

    def assertDecodeError(self, result: object, *fragments: str) -> None:
        """
        C{result} is a L{DecodeError} whose reason contains every fragment.
        """
        self.assertIsInstance(result, DecodeError)
        assert isinstance(result, DecodeError)
        for fragment in fragments:
            self.assertIn(fragment, result.reason)

    def test_invalidJSON(self) -> None:
        """
        Text that is not JSON is reported as malformed JSON by both formats.
        """
        for serializer in (V1_JSON, V2_JSON):
            self.assertDecodeError(
                serializer.decode_text(b'[null,"1",'), "malformed JSON"
            )
            self.assertDecodeError(serializer.decode_text(b""), "malformed JSON")
            self.assertDecodeError(serializer.decode_text(b"NaN"), "malformed JSON")

    def test_invalidUTF8(self) -> None:
        """
        Text frames with invalid UTF-8 (a stray byte, an encoded surrogate)
        are reported as not UTF-8.
        """
        for serializer in (V1_JSON, V2_JSON):
            self.assertDecodeError(
                serializer.decode_text(b'[null,null,"t\xff","e",{}]'), "UTF-8"
            )
            self.assertDecodeError(
                serializer.decode_text(b'[null,null,"\xed\xa0\x80","e",{}]'), "UTF-8"
            )

    def test_objectUnderV2(self) -> None:
        """
        A V1-style object sent on a V2 connection is rejected (FR-3).
        """
        self.assertDecodeError(
            V2_JSON.decode_text(b'{"topic":"t","event":"e","payload":{},"ref":null}'),
            "expected a JSON array",
        )

    def test_scalarUnderV2(self) -> None:
        """
        A bare JSON scalar is not a V2 message.
        """
        self.assertDecodeError(V2_JSON.decode_text(b'"hello"'), "expected a JSON array")

    def test_arrayUnderV1(self) -> None:
        """
        A V2-style array sent on a V1 connection is rejected.
        """
        self.assertDecodeError(
            V1_JSON.decode_text(b'[null,null,"t","e",{}]'), "expected a JSON object"
        )

    def test_shortArray(self) -> None:
        """
        A V2 array with fewer than five elements is rejected, naming the
        count.
        """
        self.assertDecodeError(
            V2_JSON.decode_text(b'[null,null,"t","e"]'), "expected 5 elements", "got 4"
        )
        self.assertDecodeError(V2_JSON.decode_text(b"[]"), "got 0")

    def test_missingV1Keys(self) -> None:
        """
        A V1 object missing required keys is rejected, naming each missing
        key; a missing C{ref} counts even though null is allowed.
        """
        self.assertDecodeError(
            V1_JSON.decode_text(b'{"topic":"t","event":"e","payload":{}}'),
            "missing key",
            "ref",
        )
        result = V1_JSON.decode_text(b'{"ref":null}')
        self.assertDecodeError(result, "topic", "event", "payload")

    def test_nonStringTopic(self) -> None:
        """
        A topic that is not a string is rejected in both formats.
        """
        self.assertDecodeError(
            V2_JSON.decode_text(b'[null,null,1,"e",{}]'), "topic must be a string"
        )
        self.assertDecodeError(
            V1_JSON.decode_text(b'{"topic":null,"event":"e","payload":{},"ref":null}'),
            "topic must be a string",
        )

    def test_nonStringEvent(self) -> None:
        """
        An event that is not a string is rejected in both formats.
        """
        self.assertDecodeError(
            V2_JSON.decode_text(b'[null,null,"t",["e"],{}]'), "event must be a string"
        )
        self.assertDecodeError(
            V1_JSON.decode_text(b'{"topic":"t","event":2,"payload":{},"ref":null}'),
            "event must be a string",
        )

    def test_structuredRef(self) -> None:
        """
        A ref or join_ref that is an object or a list is rejected.
        """
        self.assertDecodeError(
            V2_JSON.decode_text(b'[null,{"a":1},"t","e",{}]'), "ref must be"
        )
        self.assertDecodeError(
            V2_JSON.decode_text(b'[null,[1],"t","e",{}]'), "ref must be"
        )
        self.assertDecodeError(
            V2_JSON.decode_text(b'[{},null,"t","e",{}]'), "join_ref must be"
        )
        self.assertDecodeError(
            V1_JSON.decode_text(b'{"topic":"t","event":"e","payload":{},"ref":[]}'),
            "ref must be",
        )
        self.assertDecodeError(
            V1_JSON.decode_text(
                b'{"topic":"t","event":"e","payload":{},"ref":null,"join_ref":{}}'
            ),
            "join_ref must be",
        )

    def test_emptyBinary(self) -> None:
        """
        An empty binary frame is rejected.
        """
        self.assertDecodeError(V2_JSON.decode_binary(b""), "empty binary frame")

    def test_unknownBinaryKind(self) -> None:
        """
        Only kind 0 is accepted from clients; replies, broadcasts and the
        Supabase kinds are rejected, naming the kind.
        """
        for kind in (1, 2, 3, 4, 255):
            frame = bytes([kind]) + client_push("1", "1", "t", "e", b"x")[1:]
            self.assertDecodeError(
                V2_JSON.decode_binary(frame), "unsupported binary frame kind", str(kind)
            )

    def test_truncatedHeader(self) -> None:
        """
        A kind-0 frame too short to hold the four length bytes is rejected.
        """
        for frame in (b"\x00", b"\x00\x01", b"\x00\x01\x01\x01"):
            self.assertDecodeError(V2_JSON.decode_binary(frame), "truncated")

    def test_truncatedField(self) -> None:
        """
        A kind-0 frame whose header lengths run past its end is rejected.
        """
        whole = client_push("12", "123", "topic", "event", b"")
        for cut in range(5, len(whole)):
            self.assertDecodeError(V2_JSON.decode_binary(whole[:cut]), "truncated")

    def test_nonUTF8Header(self) -> None:
        """
        A kind-0 frame whose header strings are not UTF-8 is rejected.
        """
        frame = bytes([0, 1, 1, 1, 1]) + b"1" + b"2" + b"\xff" + b"e"
        self.assertDecodeError(V2_JSON.decode_binary(frame), "not UTF-8")

    def test_nonUTF8PayloadAccepted(self) -> None:
        """
        The binary payload is raw bytes and need not be UTF-8.
        """
        frame = client_push("1", "2", "t", "e", b"\xff\xfe\x00")
        self.assertEqual(
            V2_JSON.decode_binary(frame),
            Message("1", "2", "t", "e", Binary(b"\xff\xfe\x00")),
        )


SERIALIZERS: list[Serializer] = [V1_JSON, V2_JSON]


class TotalityTests(SynchronousTestCase):
    """
    Decoding never raises, whatever bytes a client sends.
    """

    @given(data=st.binary())
    def test_decodeTextArbitraryBytes(self, data: bytes) -> None:
        """
        Arbitrary bytes into C{decode_text} give a message or a decode error.
        """
        for serializer in SERIALIZERS:
            self.assertIsInstance(serializer.decode_text(data), (Message, DecodeError))

    @given(data=st.binary())
    def test_decodeBinaryArbitraryBytes(self, data: bytes) -> None:
        """
        Arbitrary bytes into C{decode_binary} give a message or a decode
        error.
        """
        for serializer in SERIALIZERS:
            self.assertIsInstance(
                serializer.decode_binary(data), (Message, DecodeError)
            )

    @given(data=st.binary().map(lambda b: b"\x00" + b))
    def test_decodeKindZeroArbitraryBytes(self, data: bytes) -> None:
        """
        Arbitrary bytes after a kind-0 byte give a message or a decode error.
        """
        self.assertIsInstance(V2_JSON.decode_binary(data), (Message, DecodeError))

    @given(value=json_values)
    def test_decodeArbitraryJSON(self, value: Any) -> None:
        """
        Any JSON document into either text decoder gives a message or a
        decode error.
        """
        data = orjson.dumps(value)
        for serializer in SERIALIZERS:
            self.assertIsInstance(serializer.decode_text(data), (Message, DecodeError))

    @given(
        elements=st.lists(json_values, min_size=5, max_size=7),
    )
    def test_decodeArbitraryArrays(self, elements: list[Any]) -> None:
        """
        Any array of five or more JSON values decodes under V2 to a message
        exactly when refs are scalars and topic and event are strings.
        """
        result = V2_JSON.decode_text(orjson.dumps(elements))
        join_ref, ref, topic, event, payload = elements[:5]
        valid = (
            all(not isinstance(r, (list, dict)) for r in (join_ref, ref))
            and isinstance(topic, str)
            and isinstance(event, str)
        )
        if valid:
            self.assertEqual(result, Message(join_ref, ref, topic, event, payload))
        else:
            self.assertIsInstance(result, DecodeError)


class SerializerForVsnTests(SynchronousTestCase):
    """
    L{serializer_for_vsn} selects the serializer from the C{vsn} parameter.
    """

    def test_missing(self) -> None:
        """
        No C{vsn} selects V1.
        """
        self.assertIs(serializer_for_vsn(None), V1_JSON)

    def test_v1(self) -> None:
        """
        C{1.0.x} selects V1.
        """
        self.assertIs(serializer_for_vsn("1.0.0"), V1_JSON)
        self.assertIs(serializer_for_vsn("1.0.7"), V1_JSON)

    def test_v2(self) -> None:
        """
        C{2.0.x} selects V2.
        """
        self.assertIs(serializer_for_vsn("2.0.0"), V2_JSON)
        self.assertIs(serializer_for_vsn("2.0.5"), V2_JSON)

    def test_refused(self) -> None:
        """
        Partial versions, other minor or major versions, garbage and the
        empty string select nothing (the connection is refused).
        """
        for vsn in [
            "2.0",
            "2.1.0",
            "3.0.0",
            "1.1.0",
            "0.0.0",
            "abc",
            "",
            "2.0.0.0",
            "2.0.x",
            "2..0",
            " 2.0.0",
            "2.0.-1",
            "v2.0.0",
        ]:
            self.assertIsNone(serializer_for_vsn(vsn), vsn)

    def test_nonASCIIDigitsRefused(self) -> None:
        """
        Digits outside ASCII (which C{str.isdigit} accepts) do not make a
        version.
        """
        for vsn in ["2.0.\u0663", "2.0.\u00b2", "\uff12.0.0", "1.0.\u0660"]:
            self.assertIsNone(serializer_for_vsn(vsn), vsn)
