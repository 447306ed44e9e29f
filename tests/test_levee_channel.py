"""
Tests for L{beryl.levee.channel}: the Levee document channel driven through
a real coordinator by fake sockets, and end to end by a scripted Fluid-like
client on the official C{phoenix} npm client against a real C{twistd beryl}.
"""

from __future__ import annotations

import json
from itertools import count
from typing import Any

from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from beryl.app import App
from beryl.coordinator import Coordinator
from beryl.levee.auth import InsecureDevTokens, TokenValidator
from beryl.levee.channel import LeveeRelay, mount_levee, parse_document_topic
from beryl.levee.protocol import (
    DOC_READ,
    DOC_WRITE,
    SUMMARY_WRITE,
    Claims,
    ConnectDocumentError,
)
from beryl.levee.registry import DocumentSessions
from beryl.levee.storage import LeveeStorage
from beryl.levee.store import IDocumentStore, InMemoryDocumentStore
from beryl.testing import FakeClient

TENANT = "acme"
DOCUMENT = "doc"
TOPIC = f"document:{TENANT}:{DOCUMENT}"
FLUID_VERSIONS = ["^0.4.0", "^0.3.0", "^0.2.0", "^0.1.0"]


def validate(tenant: str, document: str, token: str) -> Claims | ConnectDocumentError:
    """Tokens name their scopes: C{"rw"} writes, C{"rws"} also summarizes, C{"r"} reads, anything else is refused."""
    scopes = {
        "rws": (DOC_READ, DOC_WRITE, SUMMARY_WRITE),
        "rw": (DOC_READ, DOC_WRITE),
        "r": (DOC_READ,),
    }.get(token)
    if scopes is None:
        return ConnectDocumentError(401, "Invalid authentication token")
    return Claims(tenant, document, scopes, None, 1_700_000_000, 1_700_003_600)


def op(csn: int, rsn: int, contents: Any = None, type: str = "op") -> dict[str, Any]:
    """A client op as the Fluid driver submits it."""
    return {
        "clientSequenceNumber": csn,
        "referenceSequenceNumber": rsn,
        "type": type,
        "contents": {"value": csn} if contents is None else contents,
        "metadata": None,
    }


def connect_payload(
    mode: str = "write",
    token: str = "rw",
    user: str = "alice",
    document: str = DOCUMENT,
) -> dict[str, Any]:
    """A driver's C{connect_document} payload."""
    return {
        "tenantId": TENANT,
        "id": document,
        "token": token,
        "client": {
            "mode": mode,
            "details": {"capabilities": {"interactive": True}},
            "permission": [],
            "user": {"id": user},
            "scopes": [],
        },
        "mode": mode,
        "versions": FLUID_VERSIONS,
    }


class Relay:
    """A coordinator serving the document channel, with deterministic client ids."""

    def __init__(
        self,
        store: IDocumentStore | None = None,
        storage: LeveeStorage | None = None,
        validate: TokenValidator = validate,
    ) -> None:
        self.clock = Clock()
        self.clock.advance(1_700_000_100)
        self.store = store if store is not None else InMemoryDocumentStore()
        ids = count(1)
        self.relay = LeveeRelay(
            self.clock,
            validate=validate,
            sessions=DocumentSessions(
                self.store, self.clock, new_client_id=lambda: f"client-{next(ids)}"
            ),
            storage=storage,
        )
        self.coordinator = Coordinator(
            App().channel("document:*", self.relay.channel()),
            self.clock,
            idle_timeout=0,
        )
        self.refs = count(1)

    def client(self, topic: str = TOPIC) -> DocumentClient:
        """A new socket joined to C{topic}."""
        client = DocumentClient(self, FakeClient(self.coordinator), topic)
        client.join()
        return client


class DocumentClient:
    """One socket on the document channel, speaking as the Levee driver does."""

    def __init__(self, relay: Relay, socket: FakeClient, topic: str) -> None:
        self.relay = relay
        self.socket = socket
        self.topic = topic
        self.join_ref = "0"
        self.client_id = ""
        self.inbox: list[tuple[str, Any]] = []
        self.replies: list[Any] = []

    def join(self, payload: Any = None) -> Any:
        """Join the topic; return the join reply's payload."""
        self.join_ref = str(next(self.relay.refs))
        self.socket.send(
            self.join_ref, self.join_ref, self.topic, "phx_join", payload or {}
        )
        self.collect()
        return self.replies.pop(0)

    def push(self, event: str, payload: Any) -> None:
        """Push an event on the channel and collect what comes back."""
        self.socket.send(
            self.join_ref, str(next(self.relay.refs)), self.topic, event, payload
        )

    def collect(self) -> list[tuple[str, Any]]:
        """Move received frames into the inbox; return the new pushes."""
        new = []
        for _join_ref, _ref, topic, event, payload in self.socket.take():
            assert topic == self.topic, (topic, event)
            if event == "phx_reply":
                self.replies.append(payload)
            else:
                new.append((event, payload))
        self.inbox += new
        return new

    def connect(
        self, mode: str = "write", token: str = "rw", user: str = "alice"
    ) -> Any:
        """Send C{connect_document}; return the success payload and keep the client id."""
        document = self.topic.split(":", 2)[2]
        self.push("connect_document", connect_payload(mode, token, user, document))
        [response] = [
            payload
            for event, payload in self.collect()
            if event == "connect_document_success"
        ]
        self.client_id = response["clientId"]
        return response

    def submit(self, *ops: dict[str, Any], client_id: str | None = None) -> None:
        """Submit one batch of ops."""
        self.push(
            "submitOp",
            {
                "clientId": self.client_id if client_id is None else client_id,
                "messageBatches": [list(ops)],
            },
        )

    def events(self, event: str) -> list[Any]:
        """The payloads of one event received so far."""
        self.collect()
        return [payload for name, payload in self.inbox if name == event]

    def ops(self) -> list[dict[str, Any]]:
        """Every sequenced op received so far, in order."""
        return [message for payload in self.events("op") for message in payload["op"]]

    def nacks(self) -> list[dict[str, Any]]:
        """Every nack received so far, in order."""
        return [nack for payload in self.events("nack") for nack in payload["nacks"]]

    def clear(self) -> None:
        """Forget what was received."""
        self.collect()
        self.inbox.clear()


class TopicTests(SynchronousTestCase):
    """Joining the document topic."""

    def test_parse_document_topic(self) -> None:
        """Topics split at most twice, so document ids may contain colons."""
        self.assertEqual(parse_document_topic("document:t:d"), ("t", "d"))
        self.assertEqual(parse_document_topic("document:t:a:b"), ("t", "a:b"))
        for bad in ["document:t", "document::d", "document:t:", "doc:t:d", "document"]:
            self.assertIsNone(parse_document_topic(bad), bad)

    def test_invalid_topic_refused(self) -> None:
        """Joining a malformed document topic is refused with C{invalid_topic}."""
        relay = Relay()
        client = DocumentClient(relay, FakeClient(relay.coordinator), "document:only")
        self.assertEqual(
            client.join(), {"status": "error", "response": {"reason": "invalid_topic"}}
        )

    def test_any_join_payload(self) -> None:
        """Any join payload is accepted with an empty ok reply."""
        relay = Relay()
        client = DocumentClient(relay, FakeClient(relay.coordinator), TOPIC)
        self.assertEqual(client.join({"token": "x"}), {"status": "ok", "response": {}})
        self.assertEqual(client.inbox, [])


class ConnectTests(SynchronousTestCase):
    """C{connect_document}."""

    def setUp(self) -> None:
        self.relay = Relay()

    def test_writer_connects(self) -> None:
        """A writer hears its join signal and join op, then C{connect_document_success}."""
        alice = self.relay.client()
        alice.push("connect_document", connect_payload())
        events = alice.collect()
        self.assertEqual(
            [event for event, _ in events], ["signal", "op", "connect_document_success"]
        )
        signal, join, success = (payload for _, payload in events)
        self.assertIsNone(signal["clientId"])
        self.assertEqual(json.loads(signal["content"])["type"], "join")
        [join_op] = join["op"]
        self.assertEqual(join["documentId"], DOCUMENT)
        self.assertEqual(
            (join_op["type"], join_op["sequenceNumber"], join_op["clientId"]),
            ("join", 1, None),
        )
        self.assertEqual(json.loads(join_op["data"])["clientId"], "client-1")
        self.assertEqual(success["clientId"], "client-1")
        self.assertEqual(success["mode"], "write")
        self.assertIn(DOC_WRITE, success["claims"]["scopes"])
        self.assertEqual(success["claims"]["user"], {"id": "alice"})
        self.assertEqual(success["checkpointSequenceNumber"], 1)
        self.assertEqual(
            [client["clientId"] for client in success["initialClients"]], ["client-1"]
        )
        self.assertEqual(alice.replies, [])

    def test_reader_connects_without_op(self) -> None:
        """A reader is announced by a signal only; no op is sequenced for it."""
        alice = self.relay.client()
        alice.connect()
        alice.clear()
        reader = self.relay.client()
        success = reader.connect(mode="read", token="r", user="rita")
        self.assertEqual(success["mode"], "read")
        self.assertNotIn(DOC_WRITE, success["claims"]["scopes"])
        self.assertEqual(reader.ops(), [])
        self.assertEqual(alice.ops(), [])
        [signal] = alice.events("signal")
        self.assertEqual(
            json.loads(signal["content"])["content"]["clientId"], "client-2"
        )

    def test_write_with_read_token_downgraded(self) -> None:
        """A write request with a read-only token connects in read mode."""
        reader = self.relay.client()
        self.assertEqual(reader.connect(mode="write", token="r")["mode"], "read")

    def test_errors(self) -> None:
        """Malformed, mismatched and badly authenticated connects get C{connect_document_error}."""
        client = self.relay.client()
        good = connect_payload()
        cases = [
            ("nope", {"code": 400, "message": "Invalid connect_document payload"}),
            (
                {"tenantId": TENANT},
                {
                    "code": 400,
                    "message": "Missing required fields: tenantId, id, token, client",
                },
            ),
            (
                {**good, "id": "other"},
                {"code": 400, "message": "Tenant/document ID mismatch with topic"},
            ),
            (
                {**good, "token": ""},
                {"code": 401, "message": "Missing authentication token"},
            ),
            (
                {**good, "token": "forged"},
                {"code": 401, "message": "Invalid authentication token"},
            ),
            (
                {**good, "versions": ["^9.0.0"]},
                {
                    "code": 400,
                    "message": "Unsupported client protocol. Server: "
                    "['^0.4.0', '^0.3.0', '^0.2.0', '^0.1.0']. Client: ['^9.0.0']",
                },
            ),
        ]
        for payload, error in cases:
            client.push("connect_document", payload)
            self.assertEqual(
                client.collect(), [("connect_document_error", error)], payload
            )
        self.assertEqual(self.relay.relay.sessions.get(TENANT, DOCUMENT), None)
        client.connect()

    def test_second_connect_ignored(self) -> None:
        """A connect_document on an already connected channel is ignored."""
        alice = self.relay.client()
        alice.connect()
        alice.clear()
        alice.push("connect_document", connect_payload())
        self.assertEqual(alice.collect(), [])
        self.assertEqual(
            list(self.relay.relay.connected_clients(TENANT, DOCUMENT)), ["client-1"]
        )

    def test_mount_levee_with_dev_tokens(self) -> None:
        """mount_levee registers document:* and serves it with the given validator."""
        clock = Clock()
        clock.advance(1_700_000_000)
        app = mount_levee(App(), clock=clock, validate=InsecureDevTokens(clock))
        self.assertEqual(list(app.router.patterns()), ["document:*"])
        socket = FakeClient(Coordinator(app, clock, idle_timeout=0))
        socket.send("1", "1", TOPIC, "phx_join", {})
        payload = connect_payload(token="anything")
        socket.send("1", "2", TOPIC, "connect_document", payload)
        events = [frame[3] for frame in socket.take()]
        self.assertEqual(
            events, ["phx_reply", "signal", "op", "connect_document_success"]
        )

    def test_default_refuses_tokens(self) -> None:
        """Without a validator, mount_levee refuses every token."""
        clock = Clock()
        app = mount_levee(App(), clock=clock)
        socket = FakeClient(Coordinator(app, clock, idle_timeout=0))
        socket.send("1", "1", TOPIC, "phx_join", {})
        payload = connect_payload()
        socket.send("1", "2", TOPIC, "connect_document", payload)
        self.assertEqual(
            socket.take()[1],
            [
                "1",
                None,
                TOPIC,
                "connect_document_error",
                {"code": 401, "message": "Invalid authentication token"},
            ],
        )


class OrderingTests(SynchronousTestCase):
    """Two writers and a reader on one document."""

    def setUp(self) -> None:
        self.relay = Relay()
        self.alice = self.relay.client()
        self.alice.connect(user="alice")
        self.bob = self.relay.client()
        self.bob.connect(user="bob")
        self.reader = self.relay.client()
        self.reader.connect(mode="read", token="r", user="rita")
        self.everyone = [self.alice, self.bob, self.reader]

    def test_consecutive_sequence_numbers(self) -> None:
        """Every client sees the same ops with consecutive SNs, sender included."""
        self.alice.submit(op(1, 2), op(2, 2))
        self.bob.submit(op(1, 3))
        self.alice.submit(op(3, 4))
        streams = [
            [
                (o["sequenceNumber"], o["clientId"], o["clientSequenceNumber"])
                for o in c.ops()
            ]
            for c in self.everyone
        ]
        self.assertEqual(
            streams[0][-4:],
            [
                (3, "client-1", 1),
                (4, "client-1", 2),
                (5, "client-2", 1),
                (6, "client-1", 3),
            ],
        )
        self.assertEqual([sn for sn, _, _ in streams[0]], [1, 2, 3, 4, 5, 6])
        # Bob connected after alice's join op, the reader after both.
        self.assertEqual(streams[1], streams[0][1:])
        self.assertEqual(streams[2], streams[0][2:])

    def test_minimum_sequence_number(self) -> None:
        """The MSN follows the lowest reference SN of the writers, moved by noop too."""
        self.alice.submit(op(1, 2))
        self.bob.push(
            "noop", {"clientId": self.bob.client_id, "referenceSequenceNumber": 3}
        )
        self.bob.submit(op(1, 3))
        self.alice.submit(op(2, 4))
        msns = [
            (o["sequenceNumber"], o["minimumSequenceNumber"]) for o in self.reader.ops()
        ]
        self.assertEqual(msns, [(3, 0), (4, 2), (5, 3)])
        self.assertEqual(self.bob.events("noop"), [])

    def test_gap_nacked(self) -> None:
        """A CSN gap is nacked to the sender only; nobody sees an op."""
        self.alice.clear()
        self.bob.clear()
        self.alice.submit(op(2, 2))
        [nack] = self.alice.nacks()
        self.assertEqual(nack["operation"], op(2, 2))
        self.assertEqual(nack["content"]["code"], 400)
        self.assertEqual(nack["content"]["message"], "Gap detected in incoming op")
        self.assertEqual(self.alice.ops() + self.bob.ops() + self.bob.nacks(), [])

    def test_partial_batch(self) -> None:
        """Good ops of a batch are sequenced even when a later one is nacked."""
        self.alice.submit(op(1, 2), op(5, 2))
        self.assertEqual([o["clientSequenceNumber"] for o in self.bob.ops()[-1:]], [1])
        self.assertEqual(len(self.alice.nacks()), 1)

    def test_stale_reference_nacked(self) -> None:
        """An op referencing an SN below the MSN is nacked, and so is everything after."""
        self.alice.submit(op(1, 2))
        self.bob.submit(op(1, 3))
        self.alice.submit(op(2, 4))
        # MSN is now 3; bob references 1
        self.bob.submit(op(2, 1))
        self.bob.submit(op(3, 5))
        messages = [nack["content"]["message"] for nack in self.bob.nacks()]
        self.assertEqual(messages, ["Refseq 1 < 3", "Nonexistent client"])
        self.assertEqual(self.bob.nacks()[0]["sequenceNumber"], 3)

    def test_channel_nacks(self) -> None:
        """Submissions refused by the channel get a nack with sequenceNumber -1."""
        pending = self.relay.client()
        pending.submit(op(1, 0), client_id="x")
        self.alice.push("submitOp", {"clientId": self.alice.client_id})
        self.alice.submit(op(1, 2), client_id="client-2")
        self.reader.submit(op(1, 2))
        results = [
            (n["sequenceNumber"], n["content"]["code"], n["content"]["message"])
            for c in (pending, self.alice, self.reader)
            for n in c.nacks()
        ]
        self.assertEqual(
            results,
            [
                (-1, 400, "Client not connected"),
                (-1, 400, "Malformed submitOp: missing clientId or messageBatches"),
                (-1, 400, "Client ID mismatch: expected client-1, got client-2"),
                (-1, 403, "Read-only clients cannot submit operations"),
            ],
        )
        self.assertEqual(self.bob.nacks(), [])

    def test_nack_payload_shape(self) -> None:
        """A nack push is Levee's wrapper with the first nack also at the top level."""
        self.alice.submit(op(3, 2))
        [payload] = self.alice.events("nack")
        self.assertEqual(payload["clientId"], "")
        self.assertEqual(payload["content"], payload["nacks"][0]["content"])

    def test_unknown_event_ignored(self) -> None:
        """Unknown events get no reply and no push."""
        self.alice.clear()
        self.alice.push("whatever", {})
        self.assertEqual(self.alice.collect(), [])
        self.assertEqual(self.alice.replies, [])


class SignalTests(SynchronousTestCase):
    """C{submitSignal}."""

    def setUp(self) -> None:
        self.relay = Relay()
        self.alice = self.relay.client()
        self.alice.connect()
        self.bob = self.relay.client()
        self.bob.connect(user="bob")
        self.alice.clear()
        self.bob.clear()

    def test_signal_to_everyone(self) -> None:
        """A signal reaches every client, sender included, on the channel topic."""
        self.alice.push(
            "submitSignal",
            {"clientId": self.alice.client_id, "contentBatches": [[{"content": "hi"}]]},
        )
        expected = [{"clientId": "client-1", "content": "hi"}]
        self.assertEqual(self.alice.events("signal"), expected)
        self.assertEqual(self.bob.events("signal"), expected)

    def test_targeted_signal(self) -> None:
        """A signal with targetClientId reaches only that client."""
        self.alice.push(
            "submitSignal",
            {
                "clientId": self.alice.client_id,
                "contentBatches": [[{"content": "psst", "targetClientId": "client-2"}]],
            },
        )
        self.assertEqual(self.alice.events("signal"), [])
        self.assertEqual(
            self.bob.events("signal"),
            [{"clientId": "client-1", "content": "psst", "targetClientId": "client-2"}],
        )

    def test_ignored_signals(self) -> None:
        """Signals before connecting, with another clientId or malformed are dropped silently."""
        pending = self.relay.client()
        pending.push(
            "submitSignal", {"clientId": "client-1", "contentBatches": [["x"]]}
        )
        self.alice.push(
            "submitSignal", {"clientId": "client-2", "contentBatches": [["x"]]}
        )
        self.alice.push("submitSignal", {"clientId": "client-1"})
        for client in (pending, self.alice, self.bob):
            self.assertEqual(client.events("signal"), [])
            self.assertEqual(client.events("nack"), [])


class CatchUpTests(SynchronousTestCase):
    """C{requestOps}."""

    def test_replay_to_requester_only(self) -> None:
        """requestOps replays the ops after C{from} to the requester alone."""
        relay = Relay()
        alice = relay.client()
        alice.connect()
        alice.submit(op(1, 1), op(2, 1))
        bob = relay.client()
        bob.connect(user="bob")
        alice.clear()
        bob.clear()
        bob.push("requestOps", {"from": 1})
        [payload] = bob.events("op")
        self.assertEqual(payload["documentId"], DOCUMENT)
        self.assertEqual([o["sequenceNumber"] for o in payload["op"]], [2, 3, 4])
        self.assertEqual(alice.events("op"), [])
        bob.push("requestOps", {"from": 4})
        bob.push("requestOps", {"from": "x"})
        self.assertEqual(len(bob.events("op")), 1)

    def test_request_before_connect_ignored(self) -> None:
        """requestOps before connect_document is ignored."""
        relay = Relay()
        client = relay.client()
        client.push("requestOps", {"from": 0})
        self.assertEqual(client.collect(), [])


class LeaveTests(SynchronousTestCase):
    """Leaving, disconnecting and reconnecting."""

    def setUp(self) -> None:
        self.relay = Relay()
        self.alice = self.relay.client()
        self.alice.connect()
        self.bob = self.relay.client()
        self.bob.connect(user="bob")
        self.alice.clear()
        self.bob.clear()

    def assert_left(self, client_id: str, sequence_number: int) -> None:
        """Bob saw a leave op for C{client_id} at C{sequence_number}, then a leave signal."""
        events = self.bob.collect()
        self.assertEqual([event for event, _ in events], ["op", "signal"])
        [leave] = events[0][1]["op"]
        self.assertEqual(
            (leave["type"], leave["sequenceNumber"], json.loads(leave["data"])),
            ("leave", sequence_number, client_id),
        )
        self.assertEqual(
            json.loads(events[1][1]["content"]), {"type": "leave", "content": client_id}
        )

    def test_leave(self) -> None:
        """phx_leave sequences a leave op that the others see."""
        self.alice.push("phx_leave", {})
        self.assert_left("client-1", 3)
        self.assertEqual(self.alice.collect(), [("phx_close", {})])

    def test_disconnect(self) -> None:
        """A dropped socket sequences a leave op that the others see."""
        self.alice.socket.disconnect()
        self.assert_left("client-1", 3)
        self.assertEqual(
            list(self.relay.relay.connected_clients(TENANT, DOCUMENT)), ["client-2"]
        )

    def test_rejoin_same_socket(self) -> None:
        """Joining the topic again on the same socket ends the old connection with a leave op."""
        self.alice.join()
        self.assert_left("client-1", 3)

    def test_reconnect(self) -> None:
        """A client that reconnects gets a new id, a join op at the next SN, and can catch up."""
        self.alice.submit(op(1, 2))
        self.alice.socket.disconnect()
        again = self.relay.client()
        success = again.connect()
        self.assertEqual(success["clientId"], "client-3")
        self.assertEqual(success["checkpointSequenceNumber"], 5)
        self.assertEqual(
            [c["clientId"] for c in success["initialClients"]], ["client-2", "client-3"]
        )
        again.push("requestOps", {"from": 0})
        replay = again.events("op")[-1]["op"]
        self.assertEqual([o["sequenceNumber"] for o in replay], [1, 2, 3, 4, 5])
        self.assertEqual(
            [o["type"] for o in replay], ["join", "join", "op", "leave", "join"]
        )

    def test_session_continues_after_everyone_left(self) -> None:
        """When the last client leaves the session is dropped; the next one continues the SNs."""
        self.alice.socket.disconnect()
        self.bob.socket.disconnect()
        self.assertIsNone(self.relay.relay.sessions.get(TENANT, DOCUMENT))
        carol = self.relay.client()
        self.assertEqual(carol.connect(user="carol")["checkpointSequenceNumber"], 5)

    def test_documents_isolated(self) -> None:
        """Ops of one document never reach the clients of another."""
        other = self.relay.client("document:acme:other")
        other.push("connect_document", connect_payload(document="other"))
        other.clear()
        self.alice.submit(op(1, 2))
        self.assertEqual(other.collect(), [])
        self.assertEqual(len(self.bob.ops()), 1)
