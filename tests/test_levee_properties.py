"""
Property tests for L{beryl.levee.sequencer}: ordering invariants under
random interleavings of valid client actions.
"""

from __future__ import annotations

import json
from typing import Any, Iterable, cast

from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.trial.unittest import SynchronousTestCase

from beryl.levee.auth import Grant
from beryl.levee.effects import Effect
from beryl.levee.protocol import Claims
from beryl.levee.requests import (
    ConnectRequest,
    SubmitOp,
    parse_connect,
    parse_submit_op,
)
from beryl.levee.sequencer import Connected
from tests.test_levee_sequencer import DOCUMENT, FULL_SCOPES, TENANT, Document, op


class _Client:
    """A model client in the property test: what it has seen and sent."""

    def __init__(self, client_id: str, writer: bool) -> None:
        self.client_id = client_id
        self.writer = writer
        self.csn = 0
        self.floor = 0
        self.seen = 0
        self.received: list[int] = []


_actions = st.lists(
    st.tuples(
        st.sampled_from(
            ["write", "read", "leave", "op", "batch", "noop", "noop_event"]
        ),
        st.integers(0, 3),
        st.integers(0, 5),
    ),
    max_size=60,
)


class PropertyTests(SynchronousTestCase):
    """Invariants under random interleavings of valid client actions."""

    @settings(max_examples=200, deadline=None)
    @given(_actions)
    def test_ordering_invariants(self, actions: list[tuple[str, int, int]]) -> None:
        """SNs are consecutive, the MSN never decreases and stays at or below every writer's reference SN."""
        document = Document()
        session = document.session
        slots: dict[int, _Client] = {}

        def deliver(effects: Iterable[Effect]) -> None:
            for effect in effects:
                self.assertNotEqual(effect.event, "nack")
                if effect.event != "op":
                    continue
                for client_id in effect.recipients:
                    client = next(c for c in slots.values() if c.client_id == client_id)
                    for message in cast(Any, effect.payload)["op"]:
                        client.received.append(message["sequenceNumber"])
                        client.seen = message["sequenceNumber"]
                        if (
                            message["type"] == "join"
                            and json.loads(message["data"])["clientId"] == client_id
                        ):
                            client.floor = message["minimumSequenceNumber"]

        for action, slot, lag in actions:
            client = slots.get(slot)
            if action in ("write", "read") and client is None:
                request = parse_connect(
                    document.connect_payload(action), TENANT, DOCUMENT
                )
                assert isinstance(request, ConnectRequest)
                claims = Claims(TENANT, DOCUMENT, FULL_SCOPES, None, 0, 2**40)
                connected = session.connect(request, Grant(action, claims))
                assert isinstance(connected, Connected)
                slots[slot] = _Client(connected.client_id, action == "write")
                deliver(connected.effects)
            elif action == "leave" and client is not None:
                del slots[slot]
                deliver(session.disconnect(client.client_id))
            elif client is not None and client.writer:
                reference = max(client.floor, client.seen - lag)
                if action == "noop_event":
                    deliver(session.update_reference(client.client_id, reference))
                else:
                    size = 1 + lag % 3 if action == "batch" else 1
                    ops = []
                    for _ in range(size):
                        client.csn += 1
                        ops.append(
                            op(
                                client.csn,
                                reference,
                                type="noop" if action == "noop" else "op",
                            )
                        )
                    submission = parse_submit_op(
                        {"clientId": client.client_id, "messageBatches": [ops]}
                    )
                    assert isinstance(submission, SubmitOp)
                    deliver(session.submit_ops(client.client_id, submission.messages))
                client.floor = reference
            for model in slots.values():
                if model.writer:
                    self.assertLessEqual(
                        session.minimum_sequence_number,
                        session.clients[model.client_id].reference_sequence_number,
                    )
                    self.assertLessEqual(session.minimum_sequence_number, model.floor)

        logged = document.store.messages_after(TENANT, DOCUMENT, 0)
        self.assertEqual(
            [m.sequence_number for m in logged], list(range(1, len(logged) + 1))
        )
        msns = [m.minimum_sequence_number for m in logged]
        self.assertEqual(msns, sorted(msns))
        for message in logged:
            self.assertLessEqual(
                message.minimum_sequence_number, message.sequence_number
            )
        for model in slots.values():
            if model.received:
                first = model.received[0]
                self.assertEqual(
                    model.received, list(range(first, first + len(model.received)))
                )
