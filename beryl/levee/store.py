"""
Where a document's sequence number and recent op log are kept between
sessions.
"""

from __future__ import annotations

from collections import deque
from typing import Sequence

import attrs
from twisted.internet.defer import Deferred
from zope.interface import Interface, implementer

from beryl.levee.protocol import SequencedMessage

__all__ = ["IDocumentStore", "InMemoryDocumentStore"]


class IDocumentStore(Interface):
    """
    Durable state of the documents: the last sequence number handed out and
    the sequenced ops, so that a document's session can be discarded when
    its last client leaves and a later one continues the same sequence.

    Calls are synchronous: the sequencer must see its own writes at once.
    """

    def sequence_number(tenant_id: str, document_id: str) -> int:
        """
        The last sequence number given to an op of the document; 0 for a
        document never seen.
        """

    def append(
        tenant_id: str, document_id: str, messages: Sequence[SequencedMessage]
    ) -> None:
        """
        Record newly sequenced ops, which continue the document's sequence
        without a gap; that also advances its sequence number.

        @raise ValueError: when the first op does not follow the current
            sequence number or the ops are not consecutive.
        """

    def messages_after(
        tenant_id: str, document_id: str, after: int
    ) -> list[SequencedMessage]:
        """
        The kept ops whose sequence number is greater than C{after}, oldest
        first.  A store may keep only recent ops, so the list can start
        later than C{after + 1}.
        """

    def written() -> Deferred[None] | None:
        """
        A C{Deferred} that fires once every op appended so far is durable,
        or C{None} when they already are (or the store keeps nothing).  The
        channel delivers ops only after that, so that an op a client saw
        sequenced survives a crash.
        """


@attrs.define
class _DocumentLog:
    """The state kept for one document."""

    sequence_number: int
    messages: deque[SequencedMessage]


@implementer(IDocumentStore)
class InMemoryDocumentStore:
    """
    An L{IDocumentStore} in process memory, keeping the newest
    C{max_ops_per_document} ops of each document (the sequence number is
    kept regardless).
    """

    def __init__(self, max_ops_per_document: int = 1000) -> None:
        """
        @param max_ops_per_document: how many of each document's newest ops
            C{requestOps} can replay; at least 1.
        """
        if max_ops_per_document < 1:
            raise ValueError("max_ops_per_document must be at least 1")
        self.max_ops_per_document = max_ops_per_document
        self._documents: dict[tuple[str, str], _DocumentLog] = {}

    def sequence_number(self, tenant_id: str, document_id: str) -> int:
        """See L{IDocumentStore.sequence_number}."""
        log = self._documents.get((tenant_id, document_id))
        return 0 if log is None else log.sequence_number

    def append(
        self, tenant_id: str, document_id: str, messages: Sequence[SequencedMessage]
    ) -> None:
        """See L{IDocumentStore.append}."""
        log = self._documents.get((tenant_id, document_id))
        if log is None:
            log = _DocumentLog(0, deque(maxlen=self.max_ops_per_document))
        expected = log.sequence_number
        for message in messages:
            expected += 1
            if message.sequence_number != expected:
                raise ValueError(
                    f"op {message.sequence_number} does not follow "
                    f"{expected - 1} in {tenant_id}/{document_id}"
                )
        log.messages.extend(messages)
        log.sequence_number = expected
        self._documents[(tenant_id, document_id)] = log

    def messages_after(
        self, tenant_id: str, document_id: str, after: int
    ) -> list[SequencedMessage]:
        """See L{IDocumentStore.messages_after}."""
        log = self._documents.get((tenant_id, document_id))
        if log is None:
            return []
        return [message for message in log.messages if message.sequence_number > after]

    def written(self) -> None:
        """See L{IDocumentStore.written}: memory is as durable as it gets."""
        return None
