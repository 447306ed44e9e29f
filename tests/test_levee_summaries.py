"""
Tests for summaries: a sequenced C{summarize} op is checked against the
uploaded storage and answered by a C{summaryAck} or C{summaryNack} op in the
op stream (L{beryl.levee.sequencer}, L{beryl.levee.channel},
L{beryl.levee.storage}).
"""

from __future__ import annotations

import json
from typing import Any, cast

from twisted.trial.unittest import SynchronousTestCase

from beryl.levee.git import Person, TreeEntry
from beryl.levee.storage import Database, DurableDocumentStore, LeveeStorage
from tests.test_levee_channel import TENANT, DocumentClient, Relay, op

AUTHOR = Person("A", "a@example.com", "2026-01-01T00:00:00Z", 1767225600)


class SummaryTests(SynchronousTestCase):
    """The summary protocol through a real coordinator and SQLite storage."""

    def setUp(self) -> None:
        self.database = Database(":memory:")
        self.addCleanup(self.database.close)
        self.storage = LeveeStorage(self.database)
        self.relay = Relay(DurableDocumentStore(self.database), self.storage)
        self.writer = self.relay.client()
        self.writer.connect(token="rws")
        self.other = self.relay.client()
        self.other.connect(token="rw", user="bob")

    def upload(self, protocol: bool = True) -> str:
        """Upload a summary as the driver does (with .protocol/attributes); its commit sha."""
        blob = self.successResultOf(self.storage.put_blob(TENANT, b'{"v":1}'))
        entries = [TreeEntry("root", "100644", "blob", blob)]
        if protocol:
            inner = self.successResultOf(
                self.storage.put_tree(
                    TENANT, [TreeEntry("attributes", "100644", "blob", blob)]
                )
            )
            entries.append(TreeEntry(".protocol", "40000", "tree", inner))
        tree = self.successResultOf(self.storage.put_tree(TENANT, entries))
        return self.successResultOf(
            self.storage.put_commit(TENANT, tree, [], AUTHOR, "Summary")
        )

    def summarize(self, client: DocumentClient, handle: Any, csn: int = 1) -> None:
        """Submit a summarize op naming C{handle}."""
        contents = {"handle": handle, "head": "", "message": "m", "parents": []}
        rsn = client.ops()[-1]["sequenceNumber"]
        client.submit(op(csn, rsn, contents=contents, type="summarize"))

    def test_uploaded_summary_acked(self) -> None:
        """A summary that was uploaded is acked in the op stream, to everyone, and becomes the head."""
        commit = self.upload()
        self.summarize(self.writer, commit)
        for client in (self.writer, self.other):
            summarize, ack = client.ops()[-2:]
            self.assertEqual(summarize["type"], "summarize")
            self.assertEqual(ack["type"], "summaryAck")
            self.assertIsNone(ack["clientId"])
            self.assertEqual(ack["sequenceNumber"], summarize["sequenceNumber"] + 1)
            expected = {
                "handle": commit,
                "summaryProposal": {
                    "summarySequenceNumber": summarize["sequenceNumber"]
                },
            }
            self.assertEqual(ack["contents"], expected)
            self.assertEqual(json.loads(ack["data"]), expected)
        self.assertEqual(self.successResultOf(self.storage.head(TENANT, "doc")), commit)

    def test_single_commit_summary_flattened(self) -> None:
        """A summary uploaded as .app beside .protocol is acked as a commit with the .app children at the root."""
        blob = self.successResultOf(self.storage.put_blob(TENANT, b"{}"))
        leaf = [TreeEntry("attributes", "100644", "blob", blob)]
        protocol = self.successResultOf(self.storage.put_tree(TENANT, leaf))
        app = self.successResultOf(
            self.storage.put_tree(TENANT, [TreeEntry("root", "100644", "blob", blob)])
        )
        tree = self.successResultOf(
            self.storage.put_tree(
                TENANT,
                [
                    TreeEntry(".app", "40000", "tree", app),
                    TreeEntry(".protocol", "40000", "tree", protocol),
                ],
            )
        )
        uploaded = self.successResultOf(
            self.storage.put_commit(TENANT, tree, [], AUTHOR, "Summary")
        )
        self.summarize(self.writer, uploaded)
        ack = self.writer.ops()[-1]
        self.assertEqual(ack["type"], "summaryAck")
        handle = ack["contents"]["handle"]
        self.assertNotEqual(handle, uploaded)
        self.assertEqual(self.successResultOf(self.storage.head(TENANT, "doc")), handle)
        commit = self.successResultOf(self.storage.get_commit(TENANT, handle))
        assert commit is not None
        self.assertEqual(commit.message, "Summary")
        entries = self.successResultOf(self.storage.get_tree(TENANT, commit.tree))
        assert entries is not None
        self.assertEqual([e.path for e in entries], [".protocol", "root"])

    def test_protocol_written_by_the_service(self) -> None:
        """A summary without .protocol gets the quorum at its reference SN, as scribe writes it."""
        protocol = {
            "type": 1,
            "tree": {
                "attributes": {
                    "type": 2,
                    "content": '{"minimumSequenceNumber":0,"sequenceNumber":0}',
                },
                "quorumMembers": {"type": 2, "content": "[]"},
                "quorumProposals": {"type": 2, "content": "[]"},
                "quorumValues": {"type": 2, "content": '[["code",{"key":"code"}]]'},
            },
        }
        summary = {"type": 1, "tree": {".protocol": protocol}}
        self.successResultOf(
            self.storage.create_document(TENANT, "doc", summary, AUTHOR, 0)
        )
        self.summarize(self.writer, self.upload(protocol=False))
        summarize, ack = self.writer.ops()[-2:]
        self.assertEqual(ack["type"], "summaryAck")
        commit = self.successResultOf(
            self.storage.get_commit(TENANT, ack["contents"]["handle"])
        )
        assert commit is not None
        entries = self.successResultOf(
            self.storage.get_tree(TENANT, commit.tree, recursive=True)
        )
        assert entries is not None
        blobs = {
            e.path: json.loads(
                cast(bytes, self.successResultOf(self.storage.get_blob(TENANT, e.sha)))
            )
            for e in entries
            if e.path.startswith(".protocol/")
        }
        self.assertEqual(
            blobs[".protocol/attributes"],
            {
                "minimumSequenceNumber": summarize["minimumSequenceNumber"],
                "sequenceNumber": summarize["referenceSequenceNumber"],
            },
        )
        members = dict(blobs[".protocol/quorumMembers"])
        self.assertEqual(
            {key: value["sequenceNumber"] for key, value in members.items()},
            {self.writer.client_id: 1, self.other.client_id: 2},
        )
        self.assertEqual(members[self.other.client_id]["client"]["user"], {"id": "bob"})
        self.assertEqual(blobs[".protocol/quorumValues"], [["code", {"key": "code"}]])
        self.assertIn("root", [e.path for e in entries])

    def test_string_contents(self) -> None:
        """Summarize contents sent as JSON text are read too."""
        commit = self.upload()
        rsn = self.writer.ops()[-1]["sequenceNumber"]
        contents = json.dumps({"handle": commit, "message": "m"})
        self.writer.submit(op(1, rsn, contents=contents, type="summarize"))
        self.assertEqual(self.writer.ops()[-1]["type"], "summaryAck")

    def test_missing_summary_nacked(self) -> None:
        """A handle naming nothing, a tree, or nothing at all gets a summaryNack with the reason."""
        tree = self.successResultOf(self.storage.put_tree(TENANT, []))
        cases = [
            ("f" * 40, "was not uploaded"),
            (tree, "is a tree, not a commit"),
            (None, "handle is missing"),
            (self.upload(protocol=False), "no earlier summary to start one from"),
        ]
        for csn, (handle, reason) in enumerate(cases, 1):
            self.summarize(self.writer, handle, csn)
            nack = self.other.ops()[-1]
            self.assertEqual(nack["type"], "summaryNack")
            self.assertIn(reason, nack["contents"]["message"])
            self.assertEqual(
                nack["contents"]["summaryProposal"]["summarySequenceNumber"],
                nack["sequenceNumber"] - 1,
            )
        self.assertIsNone(self.successResultOf(self.storage.head(TENANT, "doc")))
        self.assertEqual(self.writer.nacks(), [])

    def test_without_storage_nacked(self) -> None:
        """A relay without storage nacks every summary."""
        relay = Relay()
        client = relay.client()
        client.connect(token="rws")
        self.summarize(client, "a" * 40)
        self.assertEqual(
            client.ops()[-1]["contents"]["message"], "This server stores no summaries"
        )

    def test_summarize_needs_scope(self) -> None:
        """A writer without summary:write is nacked 403 and nothing is sequenced."""
        before = self.other.ops()[-1]["sequenceNumber"]
        self.summarize(self.other, self.upload())
        self.assertEqual(self.other.ops()[-1]["sequenceNumber"], before)
        self.assertEqual(self.other.nacks()[0]["content"]["code"], 403)

    def test_ops_persisted(self) -> None:
        """Every sequenced op, acks included, is in the database for /deltas."""
        self.summarize(self.writer, self.upload())
        stored = self.successResultOf(self.storage.deltas(TENANT, "doc", 1, None))
        self.assertEqual(stored, self.writer.ops())
