"""
The local fan-out: which of this node's sockets joined which topic, and
the one place a broadcast reaches them.

A broadcast is encoded once per serializer, prepared once per kind of
connection (for a WebSocket: framed once), and the same bytes are written
to every subscribed socket.  No per-socket channel logic runs here: the
data plane bypasses the sessions, as Phoenix's fastlane does.
"""

from __future__ import annotations

import secrets
from typing import Callable

from twisted.logger import Logger
from zope.interface import implementer

from beryl.counters import Counters
from beryl.interfaces import ISubscriber
from beryl.sockets import SocketHandle
from beryl.wire import Payload

__all__ = ["FanOut"]


@implementer(ISubscriber)
class FanOut:
    """
    The subscription index of one node's sockets, subscribed to PubSub as
    one subscriber for all of them.

    @param on_failure: called with a socket whose connection raised while
        being written to; the fan-out goes on to the others.
    """

    log = Logger()
    # Broadcast payloads may be pre-encoded JSON (orjson.Fragment): the
    # serializers write them as they are.
    accepts_encoded_json = True

    def __init__(
        self,
        on_failure: Callable[[SocketHandle], None],
        counters: Counters | None = None,
    ) -> None:
        self.subscriber_id = f"fanout:{secrets.token_urlsafe(9)}"
        self.counters = counters if counters is not None else Counters()
        self._on_failure = on_failure
        # topic -> socket id -> socket
        self._topics: dict[str, dict[str, SocketHandle]] = {}

    def add(self, topic: str, socket: SocketHandle) -> bool:
        """
        Subscribe C{socket} to C{topic}; return whether it is the topic's
        first socket here.
        """
        sockets = self._topics.get(topic)
        if sockets is None:
            self._topics[topic] = {socket.socket_id: socket}
            return True
        sockets[socket.socket_id] = socket
        return False

    def remove(self, topic: str, socket: SocketHandle) -> bool:
        """
        Unsubscribe C{socket} from C{topic}; return whether that left the
        topic without sockets here.
        """
        sockets = self._topics.get(topic)
        if sockets is None or sockets.get(socket.socket_id) is not socket:
            return False
        del sockets[socket.socket_id]
        if sockets:
            return False
        del self._topics[topic]
        return True

    def count(self, topic: str) -> int:
        """
        How many of this node's sockets joined C{topic}.
        """
        sockets = self._topics.get(topic)
        return len(sockets) if sockets else 0

    def deliver(
        self, topic: str, event: str, payload: Payload, from_id: str | None
    ) -> None:
        """
        Write a broadcast to every socket joined to C{topic} except socket
        C{from_id}: encoded once per serializer, prepared once per kind of
        connection, the same bytes written to each.
        """
        sockets = self._topics.get(topic)
        if not sockets:
            return
        prepared: dict[object, tuple[object, int] | None] = {}
        # a copy: a socket whose write fails leaves the topic meanwhile
        receivers = list(sockets.values())
        if from_id is not None:
            sender = sockets.get(from_id)
            if sender is not None:
                receivers.remove(sender)
        for socket in receivers:
            try:
                ready = prepared[socket.broadcast_key]
            except KeyError:
                ready = prepared[socket.broadcast_key] = self._prepare(
                    socket, topic, event, payload
                )
            if ready is not None:
                try:
                    socket.connection.send_prepared(ready[0])
                except Exception:
                    self._on_failure(socket)
        # Counted afterwards, not per socket: this loop is every delivery's
        # cost.  Most topics have one kind of socket.
        if len(prepared) == 1:
            (ready,) = prepared.values()
            sent = len(receivers) if ready is not None else 0
            size = sent * ready[1] if ready is not None else 0
        else:
            sent = size = 0
            for socket in receivers:
                ready = prepared[socket.broadcast_key]
                if ready is not None:
                    sent += 1
                    size += ready[1]
        counters = self.counters
        counters.messages_out += sent
        counters.bytes_out += size

    def _prepare(
        self, socket: SocketHandle, topic: str, event: str, payload: Payload
    ) -> tuple[object, int] | None:
        """
        A broadcast encoded and prepared for sockets like C{socket}, with
        its encoded size, or C{None} when their protocol cannot carry it
        (binary for V1).
        """
        try:
            frame = socket.serializer.encode_broadcast(topic, event, payload)
        except (ValueError, TypeError) as error:
            self.log.warn(
                "Broadcast {event} on {topic} cannot be encoded for {vsn} clients: "
                "{error}",
                event=event,
                topic=topic,
                vsn=socket.serializer.vsn,
                error=error,
            )
            return None
        prepared = socket.connection.prepare(frame)
        return None if prepared is None else (prepared, len(frame.data))
