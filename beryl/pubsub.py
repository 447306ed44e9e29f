"""
Topic publish/subscribe across the cluster, with Phoenix.PubSub semantics.

Subscribers live on their node; a broadcast goes to each remote node as one
message over L{INodeMessaging} and is fanned out to the subscribers there.
"""

from __future__ import annotations

from typing import Any, Sequence

import orjson
from twisted.application.service import Service
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.logger import Logger
from zope.interface import implementer

from beryl.cluster.local import LocalMessaging
from beryl.counters import Counters
from beryl.interfaces import IMembershipObserver, INodeMessaging, IPubSub, ISubscriber
from beryl.wire import Binary, Payload, json_bytes, json_value

__all__ = ["PubSub"]

_BROADCAST = "broadcast"
_COUNTS = "counts"


def encode_cluster_broadcast(
    topic: str, event: str, payload: Payload, from_id: str | None
) -> bytes:
    """
    The cluster message for one broadcast: a JSON header, a NUL byte, then
    the payload as JSON or, for a L{Binary} payload, its raw bytes.

    @raise TypeError: when C{payload} is not JSON-serialisable.
    """
    binary = isinstance(payload, Binary)
    header = {"k": _BROADCAST, "t": topic, "e": event, "f": from_id, "b": binary}
    body = payload.data if isinstance(payload, Binary) else json_bytes(payload)
    return orjson.dumps(header) + b"\0" + body


def encode_counts(counts: dict[str, int], full: bool) -> bytes:
    """
    The cluster message reporting this node's subscriber counts: every
    topic (C{full}) or the topics whose counts changed.
    """
    return orjson.dumps({"k": _COUNTS, "c": counts, "full": full}) + b"\0"


_UNDECODED = object()


@implementer(IPubSub, IMembershipObserver)
class PubSub(Service):
    """
    Phoenix.PubSub for Beryl.

    Duplicate subscriptions deliver twice and C{unsubscribe} removes them
    all; C{broadcast_from} skips the sender; C{direct_broadcast} to an
    unknown node is dropped silently.  Delivery is at most once and ordered
    per sender.

    C{subscriber_count} is cluster-wide and eventually consistent: every
    node sends a peer all its counts when the peer comes up, and then the
    counts that changed, batched over C{count_report_delay} seconds (or at
    once without a clock).  A node that goes down stops counting.

    @ivar scope: the name of this PubSub; instances with different scopes
        are isolated, even over the same messaging.
    """

    log = Logger()

    def __init__(
        self,
        messaging: INodeMessaging | None,
        name: str = "beryl",
        clock: IReactorTime | None = None,
        count_report_delay: float = 0.1,
        counters: Counters | None = None,
    ) -> None:
        """
        @param messaging: the links to the other nodes; C{None} for a node
            on its own.
        @param name: the scope.
        @param clock: batches count reports; without one each change is
            reported at once.
        @param counters: where broadcasts are counted, for metrics.
        """
        self.counters = counters if counters is not None else Counters()
        self.scope = name
        self._messaging: INodeMessaging = (
            messaging if messaging is not None else LocalMessaging()
        )
        self._channel = f"pubsub:{name}"
        self._clock = clock
        self._count_report_delay = count_report_delay
        # Each tuple is replaced, never mutated, so delivery can iterate it
        # while subscribers subscribe and unsubscribe.
        self._subscriptions: dict[str, tuple[ISubscriber, ...]] = {}
        # peer node name -> topic -> its (non-zero) subscriber count
        self._remote_counts: dict[str, dict[str, int]] = {}
        self._changed_topics: set[str] = set()
        self._report_call: IDelayedCall | None = None
        self._messaging.add_handler(self._channel, self._received)
        self._messaging.add_membership_observer(self)

    @property
    def node_name(self) -> str:
        """
        The name of this node, unique in the cluster.
        """
        return self._messaging.node_name

    def stopService(self) -> None:
        """
        Cancel a pending count report.
        """
        Service.stopService(self)
        if self._report_call is not None and self._report_call.active():
            self._report_call.cancel()
        self._report_call = None

    # Subscriptions

    def subscribe(self, topic: str, subscriber: ISubscriber) -> None:
        """
        Subscribe C{subscriber} to C{topic}; subscribing twice delivers twice.
        """
        self._subscriptions[topic] = self._subscriptions.get(topic, ()) + (subscriber,)
        self._count_changed(topic)

    def unsubscribe(self, topic: str, subscriber: ISubscriber) -> None:
        """
        Remove every subscription of C{subscriber} to C{topic}.
        """
        subscribers = self._subscriptions.get(topic)
        if subscribers is None:
            return
        kept = tuple(each for each in subscribers if each is not subscriber)
        if len(kept) == len(subscribers):
            return
        if kept:
            self._subscriptions[topic] = kept
        else:
            del self._subscriptions[topic]
        self._count_changed(topic)

    def subscribers(self, topic: str) -> Sequence[ISubscriber]:
        """
        The subscribers of C{topic} on this node, once per subscription.
        """
        return self._subscriptions.get(topic, ())

    def local_subscriber_count(self, topic: str) -> int:
        """
        The number of subscriptions to C{topic} on this node.
        """
        return len(self._subscriptions.get(topic, ()))

    def subscriber_count(self, topic: str) -> int:
        """
        The number of subscriptions to C{topic} on every node that is up, as
        last reported by the peers.
        """
        return self.local_subscriber_count(topic) + sum(
            counts.get(topic, 0) for counts in self._remote_counts.values()
        )

    # Broadcasts

    def broadcast(self, topic: str, event: str, payload: Payload) -> None:
        """
        Deliver to every subscriber of C{topic} on every node.  A payload
        that is neither JSON-serialisable nor L{Binary} cannot cross to
        other nodes: that is logged and it is delivered on this node only.
        """
        self.counters.broadcasts_local += 1
        self._send_to_peers(topic, event, payload, None)
        self.local_broadcast(topic, event, payload)

    def broadcast_from(
        self, from_id: str, topic: str, event: str, payload: Payload
    ) -> None:
        """
        Deliver to every subscriber of C{topic} on every node, except the
        one whose C{subscriber_id} is C{from_id}; every subscriber is told
        C{from_id}, so that aggregate subscribers skip it too.
        """
        self.counters.broadcasts_local += 1
        self._send_to_peers(topic, event, payload, from_id)
        self.local_broadcast(topic, event, payload, from_id)

    def local_broadcast(
        self, topic: str, event: str, payload: Payload, from_id: str | None = None
    ) -> None:
        """
        Deliver to the subscribers of C{topic} on this node only, except the
        one whose C{subscriber_id} is C{from_id}.  A subscriber that raises
        is logged and the others still get the broadcast.
        """
        subscribers = self._subscriptions.get(topic)
        if not subscribers:
            return
        encoded = isinstance(payload, orjson.Fragment)
        decoded: Payload = _UNDECODED
        for subscriber in subscribers:
            if from_id is not None and subscriber.subscriber_id == from_id:
                continue
            value = payload
            if encoded and not subscriber.accepts_encoded_json:
                # Pre-encoded JSON (from a group broadcast) is for encoders;
                # other subscribers get the value it stands for.
                if decoded is _UNDECODED:
                    decoded = json_value(orjson.dumps(payload))
                value = decoded
            try:
                subscriber.deliver(topic, event, value, from_id)
            except Exception:
                self.log.failure(
                    "Subscriber {subscriber} failed to take {event} on {topic}",
                    subscriber=subscriber.subscriber_id,
                    event=event,
                    topic=topic,
                )

    def direct_broadcast(
        self, node_name: str, topic: str, event: str, payload: Payload
    ) -> None:
        """
        Deliver to the subscribers of C{topic} on C{node_name} only; this
        node delivers locally and an unknown node drops it silently.
        """
        if node_name == self.node_name:
            self.local_broadcast(topic, event, payload)
        else:
            self._messaging.send(
                node_name,
                self._channel,
                encode_cluster_broadcast(topic, event, payload, None),
            )

    def _send_to_peers(
        self, topic: str, event: str, payload: Payload, from_id: str | None
    ) -> None:
        if not self._messaging.peers():
            return
        try:
            message = encode_cluster_broadcast(topic, event, payload, from_id)
        except TypeError as error:
            self.log.warn(
                "Broadcast {event} on {topic} cannot cross to other nodes: {error}",
                event=event,
                topic=topic,
                error=error,
            )
            return
        self._messaging.send_all(self._channel, message)

    # Subscriber counts

    def _count_changed(self, topic: str) -> None:
        if not self._messaging.peers():
            # Nobody to tell; peers get every count when they come up.
            return
        self._changed_topics.add(topic)
        if self._clock is None:
            self._report_counts()
        elif self._report_call is None:
            self._report_call = self._clock.callLater(
                self._count_report_delay, self._report_counts
            )

    def _report_counts(self) -> None:
        self._report_call = None
        topics, self._changed_topics = self._changed_topics, set()
        counts = {topic: self.local_subscriber_count(topic) for topic in topics}
        if counts:
            self._messaging.send_all(self._channel, encode_counts(counts, full=False))

    def node_up(self, node_name: str, incarnation: str) -> None:
        """
        Send a peer that came up the count of every topic here.
        """
        counts = {topic: len(subs) for topic, subs in self._subscriptions.items()}
        self._messaging.send(node_name, self._channel, encode_counts(counts, full=True))

    def node_down(self, node_name: str, incarnation: str) -> None:
        """
        Stop counting the subscribers of a peer that went down.
        """
        self._remote_counts.pop(node_name, None)

    def _set_remote_counts(
        self, node_name: str, counts: dict[str, int], full: bool
    ) -> None:
        known = {} if full else self._remote_counts.get(node_name, {})
        for topic, count in counts.items():
            if count:
                known[topic] = count
            else:
                known.pop(topic, None)
        if known:
            self._remote_counts[node_name] = known
        else:
            self._remote_counts.pop(node_name, None)

    # Messages from peers

    def _received(self, from_node: str, data: bytes) -> None:
        header_end = data.find(b"\0")
        try:
            header = orjson.loads(data[:header_end]) if header_end >= 0 else None
            if not isinstance(header, dict):
                raise ValueError("no message header")
            kind = header.get("k")
            if kind == _BROADCAST:
                self._received_broadcast(header, data[header_end + 1 :])
            elif kind == _COUNTS:
                self._received_counts(from_node, header)
            else:
                raise ValueError(f"unknown message kind {kind!r}")
        except ValueError as error:
            self.log.warn(
                "Dropped a malformed pubsub message from {node}: {reason}",
                node=from_node,
                reason=str(error),
            )

    def _received_broadcast(self, header: dict[str, Any], body: bytes) -> None:
        topic, event, from_id = header.get("t"), header.get("e"), header.get("f")
        if not (
            isinstance(topic, str)
            and isinstance(event, str)
            and (from_id is None or isinstance(from_id, str))
        ):
            raise ValueError("bad broadcast header")
        self.counters.broadcasts_remote += 1
        if topic not in self._subscriptions:
            return
        payload: Payload = Binary(body) if header.get("b") else json_value(body)
        self.local_broadcast(topic, event, payload, from_id)

    def _received_counts(self, from_node: str, header: dict[str, Any]) -> None:
        counts = header.get("c")
        if not isinstance(counts, dict) or not all(
            isinstance(count, int) and count >= 0 for count in counts.values()
        ):
            raise ValueError("bad subscriber counts")
        if from_node not in self._messaging.peers():
            return
        self._set_remote_counts(from_node, counts, full=bool(header.get("full")))
