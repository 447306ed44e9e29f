"""
Tests for the Levee request parsing, message shapes, token checks, op store
and session registry.
"""

from __future__ import annotations

from typing import Any

from twisted.internet.task import Clock
from twisted.logger import LogLevel, capturedLogs
from twisted.trial.unittest import SynchronousTestCase
from zope.interface.verify import verifyObject

from beryl.levee.auth import (
    Grant,
    InsecureDevTokens,
    authorize,
    refuse_all_tokens,
    token_validator,
)
from beryl.levee.protocol import (
    DOC_READ,
    DOC_WRITE,
    Claims,
    ConnectDocumentError,
    NackContent,
    NackMessage,
    SequencedMessage,
    nack_payload,
    negotiate_version,
)
from beryl.levee.registry import DocumentSessions
from beryl.levee.requests import (
    ConnectRequest,
    DocumentMessage,
    MalformedMessage,
    NoopRequest,
    SignalSubmission,
    SubmitOp,
    parse_connect,
    parse_noop,
    parse_request_ops,
    parse_submit_op,
    parse_submit_signal,
)
from beryl.levee.store import IDocumentStore, InMemoryDocumentStore


def connect_payload(**changes: Any) -> dict[str, Any]:
    """A valid C{connect_document} payload with some fields changed."""
    payload: dict[str, Any] = {
        "tenantId": "t",
        "id": "d",
        "token": "secret",
        "client": {"user": {"id": "u"}},
        "mode": "write",
    }
    payload.update(changes)
    return {key: value for key, value in payload.items() if value is not None}


class ParseConnectTests(SynchronousTestCase):
    """Checking C{connect_document} payloads."""

    def test_valid(self) -> None:
        """A full payload parses, with Fluid's defaults for the optional fields."""
        request = parse_connect(connect_payload(), "t", "d")
        self.assertEqual(
            request,
            ConnectRequest(
                "t",
                "d",
                "secret",
                {"user": {"id": "u"}},
                "write",
                ("^0.1.0",),
                True,
                None,
            ),
        )

    def test_token_not_in_repr(self) -> None:
        """The token never shows in a request's repr (and so in logs)."""
        self.assertNotIn("secret", repr(parse_connect(connect_payload(), "t", "d")))

    def test_errors(self) -> None:
        """Malformed payloads get Levee's codes and messages."""
        cases = [
            ("nope", 400, "Invalid connect_document payload"),
            (
                connect_payload(client=None),
                400,
                "Missing required fields: tenantId, id, token, client",
            ),
            (
                connect_payload(id=None),
                400,
                "Missing required fields: tenantId, id, token, client",
            ),
            (connect_payload(token=None), 401, "Missing authentication token"),
            (
                connect_payload(tenantId="other"),
                400,
                "Tenant/document ID mismatch with topic",
            ),
            (connect_payload(mode="admin"), 400, "Invalid connection message"),
            (connect_payload(client="x"), 400, "Invalid connection message"),
            (connect_payload(versions="^0.1.0"), 400, "Invalid connection message"),
        ]
        for payload, code, message in cases:
            self.assertEqual(
                parse_connect(payload, "t", "d"), ConnectDocumentError(code, message)
            )

    def test_signals_v2_opt_out(self) -> None:
        """Only an explicit C{submit_signals_v2: false} turns v2 signals off."""
        request = parse_connect(
            connect_payload(supportedFeatures={"submit_signals_v2": False}), "t", "d"
        )
        assert isinstance(request, ConnectRequest)
        self.assertFalse(request.submit_signals_v2)


class ParseEventTests(SynchronousTestCase):
    """Checking C{submitOp}, C{submitSignal}, C{noop} and C{requestOps} payloads."""

    def test_submit_op_flattens_batches(self) -> None:
        """Batches may be lists or single ops; they are flattened in order."""
        first = {
            "clientSequenceNumber": 1,
            "referenceSequenceNumber": 0,
            "type": "op",
            "contents": "a",
        }
        second = {
            "clientSequenceNumber": 2,
            "referenceSequenceNumber": 0,
            "contents": "b",
        }
        submission = parse_submit_op(
            {"clientId": "c", "messageBatches": [[first], second, [True]]}
        )
        assert isinstance(submission, SubmitOp)
        one, two, three = submission.messages
        self.assertEqual(one, DocumentMessage(1, 0, "op", "a", first))
        assert isinstance(two, DocumentMessage)
        self.assertEqual(two.type, "op")
        assert isinstance(three, MalformedMessage)
        self.assertIs(three.raw, True)

    def test_submit_op_booleans_are_not_numbers(self) -> None:
        """A boolean sequence number makes the op malformed."""
        submission = parse_submit_op(
            {
                "clientId": "c",
                "messageBatches": [
                    [{"clientSequenceNumber": True, "referenceSequenceNumber": 0}]
                ],
            }
        )
        assert isinstance(submission, SubmitOp)
        self.assertIsInstance(submission.messages[0], MalformedMessage)

    def test_submit_op_malformed(self) -> None:
        """A payload without clientId or messageBatches is a 400 nack."""
        payloads: list[Any] = [{"clientId": "c"}, {"messageBatches": []}, []]
        for payload in payloads:
            nack = parse_submit_op(payload)
            assert isinstance(nack, NackMessage)
            self.assertEqual((nack.operation, nack.sequence_number), (None, -1))
            self.assertEqual(
                nack.content,
                NackContent(
                    400,
                    "BadRequestError",
                    "Malformed submitOp: missing clientId or messageBatches",
                ),
            )

    def test_submit_signal(self) -> None:
        """v2 objects keep their fields; other entries are v1 content; nesting is optional."""
        submission = parse_submit_signal(
            {
                "clientId": "c",
                "contentBatches": [
                    [
                        {
                            "content": "x",
                            "type": "t",
                            "targetClientId": "o",
                            "clientConnectionNumber": 3,
                        }
                    ],
                    "raw",
                ],
            }
        )
        assert submission is not None
        self.assertEqual(
            submission.signals,
            (
                SignalSubmission("x", True, "t", 3, None, "o"),
                SignalSubmission("raw"),
            ),
        )
        self.assertIsNone(parse_submit_signal({"clientId": "c"}))
        self.assertIsNone(parse_submit_signal({"clientId": 1, "contentBatches": []}))

    def test_noop_and_request_ops(self) -> None:
        """noop needs a clientId and an integer SN; requestOps an integer C{from}."""
        self.assertEqual(
            parse_noop({"clientId": "c", "referenceSequenceNumber": 4}),
            NoopRequest("c", 4),
        )
        self.assertIsNone(parse_noop({"clientId": "c", "referenceSequenceNumber": "4"}))
        self.assertIsNone(parse_noop(None))
        self.assertEqual(parse_request_ops({"from": 7}), 7)
        self.assertIsNone(parse_request_ops({"from": None}))
        self.assertIsNone(parse_request_ops([]))


class ShapeTests(SynchronousTestCase):
    """Outbound message shapes."""

    def test_negotiate_version(self) -> None:
        """The first client range that overlaps a server range picks that server range."""
        self.assertEqual(negotiate_version(["^0.4.0", "^0.1.0"]), "^0.4.0")
        self.assertEqual(negotiate_version(["^0.1.0"]), "^0.1.0")
        self.assertEqual(negotiate_version(["0.3.2"]), "^0.3.0")
        self.assertEqual(negotiate_version(["^1.0.0", "bogus", "~0.2.1"]), "^0.2.0")
        self.assertIsNone(negotiate_version(["^1.0.0"]))
        self.assertIsNone(negotiate_version([]))

    def test_sequenced_message_omits_unset(self) -> None:
        """Unset optional fields are left out of an op's JSON."""
        message = SequencedMessage(
            None, 1, 0, -1, -1, "join", None, 5, data='{"clientId":"c"}'
        )
        self.assertEqual(
            message.to_json(),
            {
                "clientId": None,
                "sequenceNumber": 1,
                "minimumSequenceNumber": 0,
                "clientSequenceNumber": -1,
                "referenceSequenceNumber": -1,
                "type": "join",
                "contents": None,
                "timestamp": 5,
                "data": '{"clientId":"c"}',
            },
        )

    def test_nack_payload(self) -> None:
        """A nack push lists every nack and repeats the first at the top level."""
        first = NackMessage(
            {"op": 1}, 3, NackContent(400, "BadRequestError", "one", retry_after=2)
        )
        second = NackMessage(None, 3, NackContent(400, "BadRequestError", "two"))
        payload = nack_payload([first, second])
        self.assertEqual(payload["clientId"], "")
        self.assertEqual(
            [nack["content"]["message"] for nack in payload["nacks"]], ["one", "two"]
        )
        self.assertEqual(
            payload["content"],
            {"code": 400, "type": "BadRequestError", "message": "one", "retryAfter": 2},
        )
        self.assertEqual(
            (payload["operation"], payload["sequenceNumber"]), ({"op": 1}, 3)
        )
        self.assertRaises(ValueError, nack_payload, [])

    def test_claims_json(self) -> None:
        """Claims become Fluid's C{ITokenClaims}, with the fallback user when they have none."""
        claims = Claims("t", "d", (DOC_READ,), None, 10, 20, token_id="j")
        self.assertEqual(
            claims.to_json(user={"id": "u"}),
            {
                "documentId": "d",
                "tenantId": "t",
                "scopes": ["doc:read"],
                "user": {"id": "u"},
                "iat": 10,
                "exp": 20,
                "ver": "1.0",
                "jti": "j",
            },
        )


class AuthTests(SynchronousTestCase):
    """Token validation and authorisation."""

    def request(self, mode: str = "write") -> ConnectRequest:
        """A parsed connect request for C{t/d}."""
        request = parse_connect(connect_payload(mode=mode), "t", "d")
        assert isinstance(request, ConnectRequest)
        return request

    def test_default_refuses(self) -> None:
        """Without configuration every token is refused with 401."""
        validate = token_validator()
        self.assertIs(validate, refuse_all_tokens)
        self.assertEqual(
            authorize(self.request(), validate, 0),
            ConnectDocumentError(401, "Invalid authentication token"),
        )

    def test_insecure_dev_tokens(self) -> None:
        """insecure_dev_tokens accepts any token with full scopes and logs a warning."""
        clock = Clock()
        clock.advance(100)
        with capturedLogs() as events:
            validate = token_validator(insecure_dev_tokens=True, clock=clock)
        self.assertIsInstance(validate, InsecureDevTokens)
        self.assertEqual([event["log_level"] for event in events], [LogLevel.warn])
        grant = authorize(self.request(), validate, clock.seconds())
        assert isinstance(grant, Grant)
        self.assertEqual(grant.mode, "write")
        self.assertIn(DOC_WRITE, grant.claims.scopes)
        self.assertEqual((grant.claims.issued_at, grant.claims.expires_at), (100, 3700))
        self.assertRaises(ValueError, token_validator, insecure_dev_tokens=True)

    def check(
        self, claims: Claims, mode: str = "write", now: float = 50
    ) -> Grant | ConnectDocumentError:
        """Authorise a request with a validator returning C{claims}."""
        return authorize(
            self.request(mode), lambda tenant, document, token: claims, now
        )

    def test_claims_checked(self) -> None:
        """Tenant, document, expiry and doc:read are checked in that order."""
        scopes = (DOC_READ, DOC_WRITE)
        self.assertEqual(
            self.check(Claims("x", "d", scopes, None, 0, 100)),
            ConnectDocumentError(403, "Token not valid for this tenant"),
        )
        self.assertEqual(
            self.check(Claims("t", "x", scopes, None, 0, 100)),
            ConnectDocumentError(403, "Token not valid for this document"),
        )
        self.assertEqual(
            self.check(Claims("t", "d", scopes, None, 0, 50)),
            ConnectDocumentError(401, "Token has expired"),
        )
        self.assertEqual(
            self.check(Claims("t", "d", (DOC_WRITE,), None, 0, 100)),
            ConnectDocumentError(403, "Token missing required scope: doc:read"),
        )

    def test_modes(self) -> None:
        """Write needs doc:write; a read-only token downgrades a write request to read."""
        writer = Claims("t", "d", (DOC_READ, DOC_WRITE), None, 0, 100)
        reader = Claims("t", "d", (DOC_READ,), None, 0, 100)
        self.assertEqual(self.check(writer), Grant("write", writer))
        self.assertEqual(self.check(writer, mode="read"), Grant("read", writer))
        self.assertEqual(self.check(reader), Grant("read", reader))

    def test_validator_error_passed_through(self) -> None:
        """An error from the validator is the connect error."""
        error = ConnectDocumentError(401, "Token has expired")
        self.assertIs(
            authorize(self.request(), lambda tenant, document, token: error, 0), error
        )


def sequenced(sequence_number: int) -> SequencedMessage:
    """A minimal sequenced op."""
    return SequencedMessage("c", sequence_number, 0, sequence_number, 0, "op", None, 0)


class StoreTests(SynchronousTestCase):
    """L{InMemoryDocumentStore}."""

    def test_interface(self) -> None:
        """It provides L{IDocumentStore}."""
        self.assertTrue(verifyObject(IDocumentStore, InMemoryDocumentStore()))

    def test_documents_separate(self) -> None:
        """Each document has its own SN and log; an unknown one is at 0."""
        store = InMemoryDocumentStore()
        store.append("t", "a", [sequenced(1), sequenced(2)])
        self.assertEqual(store.sequence_number("t", "a"), 2)
        self.assertEqual(store.sequence_number("t", "b"), 0)
        self.assertEqual(store.messages_after("t", "b", 0), [])
        self.assertEqual(store.messages_after("t", "a", 1), [sequenced(2)])

    def test_rejects_gaps(self) -> None:
        """Appending ops that do not continue the sequence is an error."""
        store = InMemoryDocumentStore()
        self.assertRaises(ValueError, store.append, "t", "a", [sequenced(2)])
        store.append("t", "a", [sequenced(1)])
        self.assertRaises(
            ValueError, store.append, "t", "a", [sequenced(2), sequenced(4)]
        )
        self.assertEqual(store.sequence_number("t", "a"), 1)

    def test_bounded(self) -> None:
        """Only the newest ops are kept, and the bound must be positive."""
        store = InMemoryDocumentStore(max_ops_per_document=2)
        store.append("t", "a", [sequenced(n) for n in range(1, 6)])
        self.assertEqual(
            store.messages_after("t", "a", 0), [sequenced(4), sequenced(5)]
        )
        self.assertRaises(ValueError, InMemoryDocumentStore, 0)


class RegistryTests(SynchronousTestCase):
    """L{DocumentSessions}."""

    def test_one_session_per_document(self) -> None:
        """Sessions are found by tenant and document and discarded only when idle."""
        sessions = DocumentSessions(InMemoryDocumentStore(), Clock())
        session = sessions.session_for("t", "d")
        self.assertIs(sessions.session_for("t", "d"), session)
        self.assertIsNot(sessions.session_for("t", "e"), session)
        self.assertIs(sessions.get("t", "d"), session)
        self.assertTrue(sessions.discard_if_idle(session))
        self.assertIsNone(sessions.get("t", "d"))
        self.assertFalse(sessions.discard_if_idle(session))
