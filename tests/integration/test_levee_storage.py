"""
Tests for L{beryl.levee.storage} on disk: SQLite in a directory, written by
the adbapi worker thread, read again after the database is closed and
reopened (as a restarted server does).
"""

from __future__ import annotations

from typing import Any, Generator

from twisted.internet import reactor
from twisted.internet.defer import inlineCallbacks
from twisted.trial.unittest import TestCase

from beryl.levee.protocol import SequencedMessage
from beryl.levee.storage import Database, DurableDocumentStore, LeveeStorage


def message(number: int) -> SequencedMessage:
    """A sequenced op numbered C{number}."""
    return SequencedMessage("c", number, 0, number, 0, "op", {"n": number}, 0)


class DiskStorageTests(TestCase):
    """What a server wrote is there after a restart."""

    @inlineCallbacks
    def test_ops_and_objects_survive_reopening(self) -> Generator[Any, Any, None]:
        """Ops queued before close, blobs and the sequence number are read back after reopening."""
        directory = self.mktemp()
        database = Database(directory, reactor)
        store = DurableDocumentStore(database)
        storage = LeveeStorage(database)
        sha = yield storage.put_blob("t", b"kept")
        # Closing right after queueing the writes waits for them.
        store.append("t", "d", [message(n) for n in range(1, 51)])
        store.append("t", "d", [message(n) for n in range(51, 101)])
        database.close()

        again = Database(directory, reactor)
        self.addCleanup(again.close)
        self.assertEqual(DurableDocumentStore(again).sequence_number("t", "d"), 100)
        reopened = LeveeStorage(again)
        ops = yield reopened.deltas("t", "d", 1, None)
        self.assertEqual([op["sequenceNumber"] for op in ops], list(range(1, 101)))
        self.assertEqual((yield reopened.get_blob("t", sha)), b"kept")
        self.assertEqual(DurableDocumentStore(again).sequence_number("t", "other"), 0)
