"""
Bad input to Levee documents: malformed ops, summaries naming what was never
uploaded, tokens for another document.  Each is refused with a clear error,
nothing sequenced is lost, and the other documents carry on unaffected.
"""

from __future__ import annotations

from typing import Any

from twisted.trial.unittest import SynchronousTestCase

from beryl.levee.auth import TenantTokens, mint_token
from beryl.levee.storage import Database, DurableDocumentStore, LeveeStorage
from tests.test_levee_channel import TENANT, DocumentClient, Relay, op

SECRET = "a-bad-input-secret-of-at-least-32-bytes"


class BadInputTests(SynchronousTestCase):
    """Two documents with real tokens and SQLite storage; one is fed garbage."""

    def setUp(self) -> None:
        database = Database(":memory:")
        self.addCleanup(database.close)
        self.storage = LeveeStorage(database)
        self.relay = Relay(
            DurableDocumentStore(database),
            self.storage,
            validate=TenantTokens({TENANT: SECRET}),
        )
        self.victim = self.client("victim")
        self.bystander = self.client("bystander")

    def token(self, document: str) -> str:
        """A token for C{document}, issued now on the relay's clock."""
        return mint_token(TENANT, document, SECRET, now=self.relay.clock.seconds())

    def client(self, document: str) -> DocumentClient:
        """A writer connected to C{document}."""
        client = self.relay.client(f"document:{TENANT}:{document}")
        client.connect(token=self.token(document))
        return client

    def test_garbage_refused_and_nothing_lost(self) -> None:
        """Malformed ops and summaries are nacked; the good ops around them and the other document are intact."""
        victim, bystander = self.victim, self.bystander
        victim.submit(op(1, 1, contents="first"))
        bystander.submit(op(1, 1, contents="elsewhere"))
        garbage: list[Any] = [
            "not an object",
            {"clientId": victim.client_id, "messageBatches": "nope"},
            {"clientId": victim.client_id, "messageBatches": [["x", 3]]},
            {"clientId": victim.client_id, "messageBatches": [[{"type": "op"}]]},
            {"clientId": victim.client_id, "messageBatches": [[op(2, 99)]]},
            {"clientId": victim.client_id, "messageBatches": [[op(2, 2, type="join")]]},
        ]
        for payload in garbage:
            victim.push("submitOp", payload)
        victim.push("submitSignal", {"clientId": victim.client_id, "contentBatches": 7})
        victim.push("requestOps", {"from": "zero"})
        summarize = op(2, 2, {"handle": "0" * 40}, type="summarize")
        victim.submit(summarize)
        victim.submit(op(3, 3, contents="after"))

        codes = [nack["content"]["code"] for nack in victim.nacks()]
        # One nack per refused op: the batch ["x", 3] holds two.
        self.assertEqual(len(codes), len(garbage) + 1)
        self.assertEqual(set(codes), {400})
        ops = victim.ops()
        self.assertEqual(
            [o["sequenceNumber"] for o in ops], list(range(1, len(ops) + 1))
        )
        self.assertEqual(
            [(o["type"], o["contents"]) for o in ops if o["clientId"] is not None],
            [
                ("op", "first"),
                ("summarize", {"handle": "0" * 40}),
                ("op", "after"),
            ],
        )
        [nack] = [o for o in ops if o["type"] == "summaryNack"]
        self.assertIn("was not uploaded", nack["contents"]["message"])
        stored = self.successResultOf(self.storage.deltas(TENANT, "victim", 1, None))
        self.assertEqual(stored, ops)
        self.assertEqual(
            [(o["sequenceNumber"], o["type"]) for o in bystander.ops()],
            [(1, "join"), (2, "op")],
        )
        self.assertEqual(bystander.nacks(), [])
        bystander.submit(op(2, 2, contents="still fine"))
        self.assertEqual(bystander.ops()[-1]["sequenceNumber"], 3)

    def test_token_for_another_document(self) -> None:
        """A token for one document cannot connect to another; expired and forged ones neither."""
        cases = [
            (self.token("bystander"), 403, "Token not valid for this document"),
            (
                mint_token(TENANT, "victim", SECRET, now=0),
                401,
                "Token has expired",
            ),
            (
                mint_token(TENANT, "victim", "x" * 40),
                401,
                "Invalid authentication token",
            ),
        ]
        for token, code, message in cases:
            intruder = self.relay.client(f"document:{TENANT}:victim")
            intruder.push(
                "connect_document",
                {
                    "tenantId": TENANT,
                    "id": "victim",
                    "token": token,
                    "client": {"mode": "write"},
                    "mode": "write",
                    "versions": ["^0.4.0"],
                },
            )
            self.assertEqual(
                intruder.events("connect_document_error"),
                [{"code": code, "message": message}],
            )
        self.assertEqual(
            list(self.relay.relay.connected_clients(TENANT, "victim")),
            [self.victim.client_id],
        )
