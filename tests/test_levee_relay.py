"""
Tests for the relay side of L{beryl.levee.sequencer}: signals and
C{requestOps} catch-up.
"""

from __future__ import annotations

from typing import Any, cast

from twisted.trial.unittest import SynchronousTestCase

from beryl.levee.effects import SendTo
from beryl.levee.requests import parse_submit_signal
from tests.test_levee_sequencer import DOCUMENT, TENANT, Document, op


class SignalTests(SynchronousTestCase):
    """Relaying signals."""

    def setUp(self) -> None:
        self.document = Document()
        self.alice = self.document.connect().client_id
        self.bob = self.document.connect(user="bob").client_id
        self.reader = self.document.connect(mode="read", user="rita").client_id
        self.document.inbox.clear()

    def test_broadcast_includes_sender(self) -> None:
        """A signal reaches every client of the document, the sender included."""
        [effect] = self.document.signal(
            self.alice, {"content": '{"x":1}', "type": "cursor"}
        )
        self.assertEqual(effect.recipients, (self.alice, self.bob, self.reader))
        self.assertEqual(
            effect.payload,
            {"clientId": self.alice, "content": '{"x":1}', "type": "cursor"},
        )

    def test_v1_content_relayed_verbatim(self) -> None:
        """A v1 entry (a JSON string) is relayed as C{{clientId, content}}."""
        [effect] = self.document.signal(self.bob, '{"address":"a","contents":{}}')
        self.assertEqual(
            effect.payload,
            {"clientId": self.bob, "content": '{"address":"a","contents":{}}'},
        )

    def test_flat_content_batches(self) -> None:
        """Flat C{contentBatches} are accepted like nested ones."""
        submission = parse_submit_signal(
            {
                "clientId": self.alice,
                "contentBatches": [{"content": "a"}, {"content": "b"}],
            }
        )
        assert submission is not None
        effects = self.document.session.submit_signals(self.alice, submission.signals)
        self.assertEqual(
            [cast(Any, effect.payload)["content"] for effect in effects], ["a", "b"]
        )

    def test_target_client(self) -> None:
        """A targeted signal reaches only its target, carrying C{targetClientId}."""
        [effect] = self.document.signal(
            self.alice, {"content": "hi", "targetClientId": self.bob}
        )
        self.assertEqual(effect.recipients, (self.bob,))
        self.assertEqual(cast(Any, effect.payload)["targetClientId"], self.bob)
        self.assertEqual(
            self.document.signal(
                self.alice, {"content": "hi", "targetClientId": "gone"}
            ),
            [],
        )

    def test_targeted_and_ignored_clients(self) -> None:
        """Levee's targetedClients and ignoredClients lists pick the recipients."""
        [targeted] = self.document.signal(
            self.alice, {"content": "x", "targetedClients": [self.reader, "gone"]}
        )
        self.assertEqual(targeted.recipients, (self.reader,))
        [ignored] = self.document.signal(
            self.alice, {"content": "x", "ignoredClients": [self.bob]}
        )
        self.assertEqual(ignored.recipients, (self.alice, self.reader))

    def test_unknown_sender_ignored(self) -> None:
        """Signals from a client the session does not know are dropped without a nack."""
        self.assertEqual(self.document.signal("stranger", {"content": "x"}), [])

    def test_reader_may_signal(self) -> None:
        """Read clients may send signals."""
        [effect] = self.document.signal(self.reader, {"content": "x"})
        self.assertEqual(cast(Any, effect.payload)["clientId"], self.reader)


class RequestOpsTests(SynchronousTestCase):
    """Catching up with C{requestOps}."""

    def test_replay_after(self) -> None:
        """requestOps returns the ops after C{from} to the requester only."""
        document = Document()
        alice = document.connect().client_id
        document.submit(alice, op(1, 1), op(2, 1))
        [effect] = document.session.request_ops(alice, 1)
        assert isinstance(effect, SendTo)
        self.assertEqual((effect.client_id, effect.event), (alice, "op"))
        self.assertEqual(effect.payload["documentId"], DOCUMENT)
        self.assertEqual(
            [message["sequenceNumber"] for message in effect.payload["op"]], [2, 3]
        )
        self.assertEqual(document.session.request_ops(alice, 3), ())
        self.assertEqual(document.session.request_ops("stranger", 0), ())

    def test_bounded_op_log(self) -> None:
        """The store keeps only the newest ops, while the SN keeps counting."""
        document = Document(max_ops=3)
        alice = document.connect().client_id
        document.submit(alice, *(op(csn, 1) for csn in range(1, 6)))
        [effect] = document.session.request_ops(alice, 0)
        self.assertEqual(
            [message["sequenceNumber"] for message in cast(Any, effect.payload)["op"]],
            [4, 5, 6],
        )
        self.assertEqual(document.store.sequence_number(TENANT, DOCUMENT), 6)
