"""
The effects a L{DocumentSession<beryl.levee.sequencer.DocumentSession>}
returns instead of doing I/O.

Every effect names its recipients by client id and carries one event and a
JSON-ready payload; an adapter performs it by pushing C{event} with
C{payload} on the document channel of each recipient, in the order the
effects were returned::

    for effect in effects:
        for client_id in effect.recipients:
            push(client_id, effect.event, effect.payload)
"""

from __future__ import annotations

from typing import Any, Sequence, Union

import attrs

from beryl.levee.protocol import NackMessage, nack_payload

__all__ = ["Broadcast", "CheckSummary", "Effect", "SendTo", "nack_to"]


@attrs.frozen
class Broadcast:
    """
    Push one event to several clients of the document.

    @ivar recipients: the client ids, resolved by the session when it made
        the effect (for most events: every connected client, sender
        included).
    """

    recipients: tuple[str, ...]
    event: str
    payload: Any


@attrs.frozen
class SendTo:
    """Push one event to a single client of the document."""

    client_id: str
    event: str
    payload: Any

    @property
    def recipients(self) -> tuple[str, ...]:
        """The one recipient, so that every effect can be handled alike."""
        return (self.client_id,)


@attrs.frozen
class CheckSummary:
    """
    A C{summarize} op was sequenced: the adapter must check that the summary
    its C{handle} names was uploaded, then pass the verdict to
    L{DocumentSession.summary_checked
    <beryl.levee.sequencer.DocumentSession.summary_checked>} and perform the
    effects it returns.  Nothing is pushed for this effect itself.

    @ivar sequence_number: the SN of the C{summarize} op.
    @ivar handle: the op's C{contents.handle}, unchecked.
    """

    sequence_number: int
    handle: Any
    reference_sequence_number: int = 0
    """The op's reference SN: the SN the summary describes."""
    event = "summarize"
    payload = None

    @property
    def recipients(self) -> tuple[str, ...]:
        """Nobody: this effect asks for a check, not a push."""
        return ()


Effect = Union[Broadcast, SendTo, CheckSummary]
"""Something the adapter must push."""


def nack_to(client_id: str, nacks: Sequence[NackMessage]) -> SendTo:
    """A C{nack} push of one or more refusals to the client that caused them."""
    return SendTo(client_id, "nack", nack_payload(nacks))
