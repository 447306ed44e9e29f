"""
Tests for L{beryl.levee.sequencer}: connecting, ordering, MSN, nacks, join
and leave of one document session; also the test harness the other
C{test_levee_*} modules share.
"""

from __future__ import annotations

import json
from collections import defaultdict
from itertools import count
from typing import Any, Iterable, cast

from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from beryl.levee.auth import Grant, authorize
from beryl.levee.effects import Broadcast, Effect, SendTo
from beryl.levee.protocol import (
    DOC_READ,
    DOC_WRITE,
    SUMMARY_WRITE,
    Claims,
    ConnectDocumentError,
)
from beryl.levee.registry import DocumentSessions
from beryl.levee.requests import (
    ConnectRequest,
    SubmitOp,
    parse_connect,
    parse_submit_op,
    parse_submit_signal,
)
from beryl.levee.sequencer import Connected
from beryl.levee.store import InMemoryDocumentStore

TENANT = "tenant"
DOCUMENT = "doc"
FULL_SCOPES = (DOC_READ, DOC_WRITE, SUMMARY_WRITE)
FLUID_VERSIONS = ["^0.4.0", "^0.3.0", "^0.2.0", "^0.1.0"]


def op(csn: int, rsn: int, contents: Any = None, type: str = "op") -> dict[str, Any]:
    """A client op as the driver sends it."""
    return {
        "clientSequenceNumber": csn,
        "referenceSequenceNumber": rsn,
        "type": type,
        "contents": {"value": csn} if contents is None else contents,
        "metadata": None,
    }


class Document:
    """
    One document session and the pushes each of its clients has received,
    with a fake validator that grants the scopes each test asks for.
    """

    def __init__(self, max_ops: int = 1000, store: InMemoryDocumentStore | None = None):
        self.clock = Clock()
        self.clock.advance(1_700_000_000)
        self.store = store if store is not None else InMemoryDocumentStore(max_ops)
        ids = count(1)
        self.sessions = DocumentSessions(
            self.store, self.clock, new_client_id=lambda: f"client-{next(ids)}"
        )
        self.session = self.sessions.session_for(TENANT, DOCUMENT)
        self.inbox: dict[str, list[tuple[str, Any]]] = defaultdict(list)

    def deliver(self, effects: Iterable[Effect]) -> list[Effect]:
        """Perform effects into the recipients' inboxes, as an adapter would."""
        effects = list(effects)
        for effect in effects:
            for client_id in effect.recipients:
                self.inbox[client_id].append((effect.event, effect.payload))
        return effects

    def connect_payload(
        self, mode: str = "write", user: str = "alice"
    ) -> dict[str, Any]:
        """A driver's C{connect_document} payload."""
        return {
            "tenantId": TENANT,
            "id": DOCUMENT,
            "token": "a-token",
            "client": {
                "mode": mode,
                "details": {"capabilities": {"interactive": True}},
                "permission": [],
                "user": {"id": user},
                "scopes": [],
            },
            "mode": mode,
            "versions": FLUID_VERSIONS,
            "nonce": "n-1",
        }

    def connect(
        self,
        mode: str = "write",
        user: str = "alice",
        scopes: tuple[str, ...] = FULL_SCOPES,
    ) -> Connected:
        """Parse, authorise and connect a client; deliver its effects."""
        request = parse_connect(self.connect_payload(mode, user), TENANT, DOCUMENT)
        assert isinstance(request, ConnectRequest)
        now = int(self.clock.seconds())

        def validate(tenant: str, document: str, token: str) -> Claims:
            return Claims(tenant, document, scopes, {"id": user}, now, now + 60)

        grant = authorize(request, validate, self.clock.seconds())
        assert isinstance(grant, Grant)
        connected = self.session.connect(request, grant)
        assert isinstance(connected, Connected)
        self.deliver(connected.effects)
        return connected

    def submit(self, client_id: str, *ops: dict[str, Any]) -> list[Effect]:
        """Submit one batch of ops from a client; deliver the effects."""
        submission = parse_submit_op(
            {"clientId": client_id, "messageBatches": [list(ops)]}
        )
        assert isinstance(submission, SubmitOp)
        return self.deliver(self.session.submit_ops(client_id, submission.messages))

    def signal(self, client_id: str, *entries: Any) -> list[Effect]:
        """Submit signals from a client; deliver the effects."""
        submission = parse_submit_signal(
            {"clientId": client_id, "contentBatches": [list(entries)]}
        )
        assert submission is not None
        return self.deliver(self.session.submit_signals(client_id, submission.signals))

    def events(self, client_id: str, event: str) -> list[Any]:
        """The payloads of one event a client received, in order."""
        return [payload for name, payload in self.inbox[client_id] if name == event]

    def ops(self, client_id: str) -> list[dict[str, Any]]:
        """Every sequenced op a client received, in order."""
        return [
            message
            for payload in self.events(client_id, "op")
            for message in payload["op"]
        ]

    def nacks(self, client_id: str) -> list[dict[str, Any]]:
        """Every nack a client received, in order."""
        return [
            nack
            for payload in self.events(client_id, "nack")
            for nack in payload["nacks"]
        ]


class ConnectTests(SynchronousTestCase):
    """Connecting to a document session."""

    def test_success_fields(self) -> None:
        """C{connect_document_success} carries Fluid's C{IConnected} fields."""
        document = Document()
        alice = document.connect()
        [response] = document.events(alice.client_id, "connect_document_success")
        self.assertEqual(response["clientId"], alice.client_id)
        self.assertEqual(response["mode"], "write")
        self.assertIs(response["existing"], True)
        self.assertEqual(response["version"], "^0.4.0")
        self.assertEqual(response["supportedVersions"], FLUID_VERSIONS)
        self.assertEqual(response["maxMessageSize"], 16384)
        self.assertEqual(
            response["serviceConfiguration"],
            {"blockSize": 64436, "maxMessageSize": 16384},
        )
        self.assertEqual(response["initialMessages"], [])
        self.assertEqual(response["initialSignals"], [])
        self.assertEqual(response["supportedFeatures"], {"submit_signals_v2": True})
        self.assertEqual(response["checkpointSequenceNumber"], 1)
        self.assertEqual(response["nonce"], "n-1")
        self.assertEqual(response["claims"]["scopes"], list(FULL_SCOPES))
        self.assertEqual(response["claims"]["documentId"], DOCUMENT)
        self.assertEqual(response["claims"]["user"], {"id": "alice"})

    def test_initial_clients_include_self(self) -> None:
        """C{initialClients} lists every connected client, the joiner included."""
        document = Document()
        alice = document.connect()
        bob = document.connect(user="bob")
        [response] = document.events(bob.client_id, "connect_document_success")
        self.assertEqual(
            [client["clientId"] for client in response["initialClients"]],
            [alice.client_id, bob.client_id],
        )
        self.assertEqual(response["initialClients"][1]["client"]["user"], {"id": "bob"})

    def test_join_op_seen_by_all_including_joiner(self) -> None:
        """A writer's join is a sequenced system op that every client, joiner included, sees."""
        document = Document()
        alice = document.connect()
        bob = document.connect(user="bob")
        for client_id in (alice.client_id, bob.client_id):
            join = document.ops(client_id)[-1]
            self.assertEqual(join["type"], "join")
            self.assertIsNone(join["clientId"])
            self.assertEqual(join["sequenceNumber"], 2)
            self.assertEqual(join["clientSequenceNumber"], -1)
            self.assertEqual(json.loads(join["data"])["clientId"], bob.client_id)
            self.assertEqual(json.loads(join["data"])["detail"]["mode"], "write")

    def test_join_effects_in_order(self) -> None:
        """A writer's connect yields the join signal, the join op, then success to the joiner."""
        document = Document()
        alice = document.connect()
        self.assertEqual(
            [(type(effect), effect.event) for effect in alice.effects],
            [
                (Broadcast, "signal"),
                (Broadcast, "op"),
                (SendTo, "connect_document_success"),
            ],
        )
        signal: Any = alice.effects[0].payload
        self.assertIsNone(signal["clientId"])
        content = json.loads(signal["content"])
        self.assertEqual(content["type"], "join")
        self.assertEqual(content["content"]["clientId"], alice.client_id)

    def test_reader_joins_by_signal_only(self) -> None:
        """A read client is announced by a join signal to all, not by a sequenced op."""
        document = Document()
        alice = document.connect()
        reader = document.connect(mode="read", user="rita")
        self.assertEqual(document.session.sequence_number, 1)
        self.assertEqual(document.ops(reader.client_id), [])
        for client_id in (alice.client_id, reader.client_id):
            [*_, signal] = document.events(client_id, "signal")
            self.assertEqual(
                json.loads(signal["content"])["content"]["clientId"], reader.client_id
            )

    def test_read_only_token_downgrades_write(self) -> None:
        """A write request with a token lacking doc:write connects in read mode."""
        document = Document()
        reader = document.connect(mode="write", scopes=(DOC_READ,))
        self.assertEqual(reader.mode, "read")
        [response] = document.events(reader.client_id, "connect_document_success")
        self.assertEqual(response["mode"], "read")
        self.assertNotIn(DOC_WRITE, response["claims"]["scopes"])
        self.assertEqual(document.session.sequence_number, 0)

    def test_unsupported_version(self) -> None:
        """A client sharing no protocol version is refused with 400."""
        document = Document()
        payload = document.connect_payload() | {"versions": ["^2.0.0"]}
        request = parse_connect(payload, TENANT, DOCUMENT)
        assert isinstance(request, ConnectRequest)
        claims = Claims(TENANT, DOCUMENT, FULL_SCOPES, None, 0, 2**40)
        result = document.session.connect(request, Grant("write", claims))
        assert isinstance(result, ConnectDocumentError)
        self.assertEqual(result.code, 400)
        self.assertTrue(document.session.is_idle)

    def test_reconnect_same_user_new_client_id(self) -> None:
        """A user who reconnects gets a new client id and a new join op; SNs stay consecutive."""
        document = Document()
        alice = document.connect()
        bob = document.connect(user="bob")
        document.submit(alice.client_id, op(1, 2))
        document.deliver(document.session.disconnect(alice.client_id))
        again = document.connect()
        self.assertNotEqual(again.client_id, alice.client_id)
        seen = document.ops(bob.client_id)
        self.assertEqual([message["sequenceNumber"] for message in seen], [2, 3, 4, 5])
        self.assertEqual(
            [message["type"] for message in seen], ["join", "op", "leave", "join"]
        )
        self.assertEqual(
            json.loads(seen[-1]["data"])["detail"]["user"], {"id": "alice"}
        )
        document.submit(again.client_id, op(1, 5))
        self.assertEqual(document.ops(bob.client_id)[-1]["clientId"], again.client_id)

    def test_new_session_continues_from_store(self) -> None:
        """A session started after the last one was discarded continues the stored SN."""
        document = Document()
        alice = document.connect()
        document.submit(alice.client_id, op(1, 1))
        self.assertFalse(document.sessions.discard_if_idle(document.session))
        document.session.disconnect(alice.client_id)
        self.assertTrue(document.sessions.discard_if_idle(document.session))
        document.session = document.sessions.session_for(TENANT, DOCUMENT)
        self.assertEqual(document.session.sequence_number, 3)
        self.assertEqual(document.session.minimum_sequence_number, 3)
        again = document.connect()
        self.assertEqual(document.ops(again.client_id)[-1]["sequenceNumber"], 4)


class OrderingTests(SynchronousTestCase):
    """Sequencing two writers' ops while a reader watches."""

    def setUp(self) -> None:
        self.document = Document()
        self.alice = self.document.connect().client_id
        self.bob = self.document.connect(user="bob").client_id
        self.reader = self.document.connect(mode="read", user="rita").client_id

    def test_consecutive_sequence_numbers(self) -> None:
        """Interleaved ops of two writers get consecutive SNs, seen in order by every client."""
        self.document.submit(self.alice, op(1, 2), op(2, 2))
        self.document.submit(self.bob, op(1, 4))
        self.document.submit(self.alice, op(3, 5))
        expected = [
            (3, self.alice, 1),
            (4, self.alice, 2),
            (5, self.bob, 1),
            (6, self.alice, 3),
        ]
        for client_id in (self.alice, self.bob, self.reader):
            seen = [
                (
                    message["sequenceNumber"],
                    message["clientId"],
                    message["clientSequenceNumber"],
                )
                for message in self.document.ops(client_id)
                if message["type"] == "op"
            ]
            self.assertEqual(seen, expected)
        self.assertEqual(
            [
                message.sequence_number
                for message in self.document.store.messages_after(TENANT, DOCUMENT, 0)
            ],
            [1, 2, 3, 4, 5, 6],
        )

    def test_minimum_sequence_number(self) -> None:
        """The MSN is the lowest writer reference SN, ignores the reader, and never decreases."""
        session = self.document.session
        self.assertEqual(session.minimum_sequence_number, 0)
        self.document.submit(self.alice, op(1, 2))
        self.assertEqual(session.minimum_sequence_number, 0)
        self.document.submit(self.bob, op(1, 3))
        self.assertEqual(self.document.ops(self.reader)[-1]["minimumSequenceNumber"], 2)
        self.document.submit(self.alice, op(2, 4))
        self.assertEqual(session.minimum_sequence_number, 3)
        self.document.submit(self.alice, op(3, 2))
        self.assertEqual(session.minimum_sequence_number, 3)
        msns = [
            message["minimumSequenceNumber"]
            for message in self.document.ops(self.reader)
        ]
        self.assertEqual(msns, sorted(msns))

    def test_gap_nacked(self) -> None:
        """A CSN that skips ahead is nacked and not sequenced; the expected CSN still works."""
        self.document.submit(self.alice, op(1, 2))
        self.document.submit(self.alice, op(3, 2))
        [nack] = self.document.nacks(self.alice)
        self.assertEqual(nack["content"]["code"], 400)
        self.assertEqual(nack["content"]["type"], "BadRequestError")
        self.assertEqual(nack["content"]["message"], "Gap detected in incoming op")
        self.assertEqual(nack["operation"]["clientSequenceNumber"], 3)
        self.assertEqual(self.document.session.sequence_number, 3)
        self.document.submit(self.alice, op(2, 2))
        self.assertEqual(self.document.ops(self.bob)[-1]["clientSequenceNumber"], 2)
        self.assertEqual(self.document.nacks(self.bob), [])

    def test_duplicate_dropped(self) -> None:
        """A repeated CSN is silently dropped: no op, no nack."""
        self.document.submit(self.alice, op(1, 2))
        effects = self.document.submit(self.alice, op(1, 2))
        self.assertEqual(effects, [])
        self.assertEqual(self.document.session.sequence_number, 3)

    def test_stale_reference_nacked(self) -> None:
        """An op referencing below the MSN is nacked, and so is every later op of that client."""
        self.document.submit(self.alice, op(1, 2))
        self.document.submit(self.bob, op(1, 3))
        self.assertEqual(self.document.session.minimum_sequence_number, 2)
        self.document.submit(self.alice, op(2, 1), op(3, 4))
        first, second = self.document.nacks(self.alice)
        self.assertEqual(first["content"]["message"], "Refseq 1 < 2")
        self.assertEqual(first["sequenceNumber"], 2)
        self.assertEqual(second["content"]["message"], "Nonexistent client")
        self.assertEqual(self.document.session.sequence_number, 4)

    def test_future_reference_nacked(self) -> None:
        """An op referencing an SN not yet given out is nacked."""
        self.document.submit(self.alice, op(1, 9))
        [nack] = self.document.nacks(self.alice)
        self.assertEqual(nack["content"]["message"], "Refseq 9 > sequence number 2")

    def test_partial_batch_broadcasts_successes(self) -> None:
        """In a batch with a bad op, the good ones are still sequenced and broadcast."""
        effects = self.document.submit(self.alice, op(1, 2), op(5, 2), op(2, 2))
        self.assertEqual([effect.event for effect in effects], ["op", "nack"])
        self.assertEqual(
            [
                message["clientSequenceNumber"]
                for message in cast(Any, effects[0].payload)["op"]
            ],
            [1, 2],
        )
        self.assertEqual(
            [
                message["sequenceNumber"]
                for message in cast(Any, effects[0].payload)["op"]
            ],
            [3, 4],
        )
        self.assertEqual(effects[1].recipients, (self.alice,))

    def test_nack_payload_shape(self) -> None:
        """A nack push is Levee's C{{clientId, nacks}} and also reads as one C{INack}."""
        [nack] = self.document.submit(self.alice, op(2, 2))
        self.assertEqual(cast(Any, nack.payload)["clientId"], "")
        self.assertEqual(
            cast(Any, nack.payload)["content"],
            cast(Any, nack.payload)["nacks"][0]["content"],
        )
        self.assertEqual(
            cast(Any, nack.payload)["operation"]["clientSequenceNumber"], 2
        )

    def test_service_only_types_nacked(self) -> None:
        """A client may not submit join, leave or other service-only types."""
        self.document.submit(self.alice, op(1, 2, type="join"))
        [nack] = self.document.nacks(self.alice)
        self.assertEqual(nack["content"]["message"], "Op not allowed")

    def test_summarize_needs_scope(self) -> None:
        """A summarize op needs summary:write."""
        document = Document()
        writer = document.connect(scopes=(DOC_READ, DOC_WRITE)).client_id
        document.submit(writer, op(1, 1, type="summarize"))
        [nack] = document.nacks(writer)
        self.assertEqual(nack["content"]["code"], 403)
        self.assertEqual(nack["content"]["type"], "InvalidScopeError")

    def test_malformed_op_nacked(self) -> None:
        """An op without integer sequence numbers is nacked in its place."""
        effects = self.document.submit(
            self.alice, {"type": "op", "contents": 1}, op(1, 2)
        )
        self.assertEqual([effect.event for effect in effects], ["op", "nack"])
        self.assertEqual(
            cast(Any, effects[1].payload)["nacks"][0]["content"]["code"], 400
        )

    def test_reader_that_may_write_told_to_reconnect(self) -> None:
        """A read client whose token allows writing gets 400 Readonly client, as deli sends."""
        self.document.submit(self.reader, op(1, 2))
        [nack] = self.document.nacks(self.reader)
        self.assertEqual(nack["content"]["code"], 400)
        self.assertEqual(nack["content"]["type"], "BadRequestError")
        self.assertEqual(nack["content"]["message"], "Readonly client")

    def test_reader_cannot_submit(self) -> None:
        """A read client without doc:write is refused with a 403 InvalidScopeError."""
        reader = self.document.connect(mode="read", scopes=(DOC_READ,)).client_id
        self.document.submit(reader, op(1, 2))
        [nack] = self.document.nacks(reader)
        self.assertEqual(nack["content"]["code"], 403)
        self.assertEqual(nack["content"]["type"], "InvalidScopeError")
        self.assertEqual(
            nack["content"]["message"], "Read-only clients cannot submit operations"
        )
        self.assertEqual(self.document.session.sequence_number, 2)

    def test_unknown_client_nacked(self) -> None:
        """Ops from a client the session does not know are nacked."""
        self.document.submit("stranger", op(1, 2))
        [nack] = self.document.nacks("stranger")
        self.assertEqual(nack["content"]["message"], "Nonexistent client")

    def test_minus_one_reference(self) -> None:
        """A reference SN of -1 is replaced by the SN the op gets, as deli does."""
        self.document.submit(self.alice, op(1, -1))
        self.assertEqual(self.document.ops(self.bob)[-1]["referenceSequenceNumber"], 3)

    def test_leave(self) -> None:
        """A writer's leave is a sequenced op and a signal to the remaining clients only."""
        received = len(self.document.inbox[self.alice])
        effects = self.document.deliver(self.document.session.disconnect(self.alice))
        self.assertEqual([effect.event for effect in effects], ["op", "signal"])
        self.assertEqual(len(self.document.inbox[self.alice]), received)
        for client_id in (self.bob, self.reader):
            leave = self.document.ops(client_id)[-1]
            self.assertEqual(leave["type"], "leave")
            self.assertIsNone(leave["clientId"])
            self.assertEqual(leave["sequenceNumber"], 3)
            self.assertEqual(json.loads(leave["data"]), self.alice)
            [*_, signal] = self.document.events(client_id, "signal")
            self.assertEqual(
                json.loads(signal["content"]), {"type": "leave", "content": self.alice}
            )
        self.assertNotIn(self.alice, self.document.session.clients)
        self.assertEqual(self.document.session.disconnect(self.alice), ())

    def test_leave_unpins_minimum_sequence_number(self) -> None:
        """When the lagging writer leaves the MSN moves up; with no writer left it equals the SN."""
        self.document.submit(self.bob, op(1, 2))
        self.assertEqual(self.document.session.minimum_sequence_number, 0)
        self.document.deliver(self.document.session.disconnect(self.alice))
        self.assertEqual(self.document.ops(self.bob)[-1]["minimumSequenceNumber"], 2)
        self.document.deliver(self.document.session.disconnect(self.bob))
        self.assertEqual(self.document.ops(self.reader)[-1]["minimumSequenceNumber"], 5)

    def test_reader_leave_is_signal_only(self) -> None:
        """A read client's leave sequences nothing."""
        effects = self.document.session.disconnect(self.reader)
        self.assertEqual([effect.event for effect in effects], ["signal"])
        self.assertEqual(self.document.session.sequence_number, 2)

    def test_noop_event_updates_reference(self) -> None:
        """Levee's noop event raises the client's reference SN and the MSN, pushing nothing."""
        session = self.document.session
        self.assertEqual(session.update_reference(self.alice, 2), ())
        self.assertEqual(session.update_reference(self.bob, 2), ())
        self.assertEqual(session.minimum_sequence_number, 2)
        session.update_reference(self.bob, 1)
        self.assertEqual(session.clients[self.bob].reference_sequence_number, 2)
        session.update_reference(self.bob, 99)
        self.assertEqual(session.clients[self.bob].reference_sequence_number, 2)
        self.assertEqual(session.update_reference(self.reader, 2), ())
        self.assertEqual(session.minimum_sequence_number, 2)

    def test_noop_op(self) -> None:
        """A null-contents noop takes its CSN and moves the MSN, but is not sequenced; one server noop carries the MSN."""
        session = self.document.session
        self.document.submit(self.alice, op(1, 2, type="noop") | {"contents": None})
        self.document.submit(self.bob, op(1, 2, type="noop") | {"contents": None})
        self.assertEqual(session.sequence_number, 2)
        self.assertEqual(session.minimum_sequence_number, 2)
        self.assertTrue(session.needs_noop)
        self.document.deliver(session.consolidated_noop())
        noop = self.document.ops(self.reader)[-1]
        self.assertEqual(
            (noop["type"], noop["clientId"], noop["sequenceNumber"]), ("noop", None, 3)
        )
        self.assertEqual(noop["minimumSequenceNumber"], 2)
        self.assertFalse(session.needs_noop)
        self.assertEqual(session.consolidated_noop(), ())
        self.document.submit(self.alice, op(2, 3))
        self.assertEqual(self.document.nacks(self.alice), [])
        self.assertEqual(self.document.ops(self.bob)[-1]["clientSequenceNumber"], 2)

    def test_noop_with_contents_sequenced(self) -> None:
        """A noop with contents is sequenced as the client's op."""
        self.document.submit(self.alice, op(1, 2, type="noop"))
        last = self.document.ops(self.bob)[-1]
        self.assertEqual((last["type"], last["clientId"]), ("noop", self.alice))

    def test_silent_writer_evicted(self) -> None:
        """A writer with no op for the timeout leaves by a sequenced leave it receives too; active ones stay."""
        session = self.document.session
        self.document.clock.advance(100)
        self.document.submit(self.bob, op(1, 2))
        self.document.clock.advance(250)
        self.document.deliver(session.evict_idle(300))
        self.assertEqual(sorted(session.clients), sorted([self.bob, self.reader]))
        for client_id in (self.alice, self.bob, self.reader):
            leave = self.document.ops(client_id)[-1]
            self.assertEqual(leave["type"], "leave")
            self.assertEqual(json.loads(leave["data"]), self.alice)
        self.assertEqual(session.evict_idle(300), ())
