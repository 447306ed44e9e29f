"""
The seams of Beryl that users see and may replace.

Each seam is declared here by a zope Interface with typed, documented
methods.  Every implementation in this package has a C{verifyObject} (or,
for test doubles, C{verifyClass}) check in the test suite; an
implementation added later needs one too.
"""

from __future__ import annotations

from typing import Any, Callable, List, Mapping, Sequence

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IReactorTime
from zope.interface import Attribute, Interface

from beryl.app import ConnectInfo, ConnectResult
from beryl.counters import Counters
from beryl.wire import Frame, Payload, PresenceList, PresenceMeta, Serializer


class ISubscriber(Interface):
    """
    Something that receives the broadcasts published on the topics it is
    subscribed to: a node's coordinator (which fans out to its sockets), a
    bot, a bridge, a test.
    """

    subscriber_id: str = Attribute(
        "A string that names this subscriber; C{broadcast_from} skips the "
        "subscriber whose id is the sender's id."
    )

    accepts_encoded_json: bool = Attribute(
        "Whether C{deliver} may be given a payload that is already encoded "
        "JSON (an C{orjson.Fragment}, from a group broadcast), as encoders "
        "that write it out unchanged can take.  When false, PubSub decodes "
        "such a payload once per broadcast and delivers the value."
    )

    def deliver(
        topic: str,
        event: str,
        payload: Payload,
        from_id: str | None,
    ) -> None:
        """
        Receive one broadcast.

        @param from_id: the id of the sender given to C{broadcast_from}, or
            C{None}.  A subscriber that stands for many receivers (the
            coordinator stands for all of its node's sockets) skips the
            receiver with this id itself.
        """


class IPubSub(Interface):
    """
    Topic-based publish/subscribe, across every node of the cluster.

    A broadcast reaches each remote node as one message and is fanned out to
    subscribers there.  Messages published by one sender arrive at every
    node in the order they were sent; there is no ordering between senders
    and delivery is at most once.
    """

    node_name: str = Attribute("The name of this node, unique in the cluster.")

    def subscribe(topic: str, subscriber: ISubscriber) -> None:
        """
        Subscribe C{subscriber} to C{topic}.  Subscribing twice delivers
        twice.
        """

    def unsubscribe(topic: str, subscriber: ISubscriber) -> None:
        """
        Remove every subscription of C{subscriber} to C{topic}; a no-op when
        there is none.
        """

    def broadcast(topic: str, event: str, payload: Payload) -> None:
        """
        Deliver to every subscriber of C{topic} on every node.
        """

    def broadcast_from(from_id: str, topic: str, event: str, payload: Payload) -> None:
        """
        Deliver to every subscriber of C{topic} on every node, except the
        subscriber (or, inside an aggregate subscriber, the receiver) whose
        id is C{from_id}.
        """

    def local_broadcast(
        topic: str, event: str, payload: Payload, from_id: str | None = None
    ) -> None:
        """
        Deliver to the subscribers of C{topic} on this node only.
        """

    def direct_broadcast(
        node_name: str, topic: str, event: str, payload: Payload
    ) -> None:
        """
        Deliver to the subscribers of C{topic} on the named node only.  An
        unknown node drops the message silently, as Phoenix does.
        """

    def subscribers(topic: str) -> Sequence[ISubscriber]:
        """
        The subscribers of C{topic} on this node.
        """

    def subscriber_count(topic: str) -> int:
        """
        The number of subscribers of C{topic} across the cluster.  Remote
        counts are eventually consistent: they are what the peers last
        reported.  A node's coordinator is one subscriber for all of its
        sockets on a topic, so this counts nodes with sockets there plus
        other subscribers (bots, bridges); the coordinator's
        C{local_subscriber_count} counts sockets.
        """

    def local_subscriber_count(topic: str) -> int:
        """
        The number of subscribers of C{topic} on this node.
        """


class IPresence(Interface):
    """
    Who is online on which topic.

    Entries are keyed by topic and key (a user id, say) and owned by an
    owner (a socket id): one key may have many metas, one per owner (two
    browser tabs of the same user).
    """

    def track(topic: str, key: str, owner: str, meta: PresenceMeta) -> str:
        """
        Add a presence and return its C{phx_ref}.
        """

    def untrack(topic: str, key: str, owner: str) -> None:
        """
        Remove the presence of C{owner} under C{key} on C{topic}.
        """

    def untrack_all(owner: str) -> None:
        """
        Remove every presence of C{owner}, on every topic.
        """

    def update(topic: str, key: str, owner: str, meta: PresenceMeta) -> str:
        """
        Replace the meta of a tracked presence; it gets a new C{phx_ref} and
        carries the old one as C{phx_ref_prev}.  Return the new ref.
        """

    def list(topic: str) -> PresenceList:
        """
        Every presence on C{topic}, in Phoenix Presence format: a snapshot
        that later changes do not alter.  It may be shared (the tracker's
        is read-only throughout); copy it to add fields.
        """

    def get_by_key(topic: str, key: str) -> List[dict[str, Any]]:
        """
        The metas under C{key} on C{topic}, or an empty list.
        """

    def get_diff(topic: str) -> dict[str, PresenceList]:
        """
        The joins and leaves on C{topic} since the last call, as
        C{{"joins": ..., "leaves": ...}}; the first call for a topic starts
        collecting and returns an empty diff.
        """

    def subscribe_diffs(
        callback: Callable[[str, dict[str, PresenceList]], None],
    ) -> Callable[[], None]:
        """
        Call C{callback(topic, diff)} for every change, in order, and return
        a function that stops the calls.
        """


class ICoordinator(Interface):
    """
    The channel system of one node: the registry of channel routes, the
    table of connected sockets, the channels they joined and their assigns.
    """

    def broadcast(topic: str, event: str, payload: Payload) -> None:
        """
        Send C{event} to every subscriber of C{topic}, on every node.
        """

    def broadcast_from(
        socket_id: str, topic: str, event: str, payload: Payload
    ) -> None:
        """
        Send C{event} to every subscriber of C{topic} except the channel of
        socket C{socket_id}.
        """

    def push_to_socket(
        socket_id: str, topic: str, event: str, payload: Payload
    ) -> bool:
        """
        Push C{event} to one local socket's channel on C{topic}; return
        whether such a channel exists here.
        """

    def socket_count() -> int:
        """
        The number of sockets connected to this node.
        """


class IMembershipObserver(Interface):
    """
    Told when cluster peers come and go.
    """

    def node_up(node_name: str, incarnation: str) -> None:
        """
        A peer is reachable (a restarted peer comes back with a new
        incarnation).
        """

    def node_down(node_name: str, incarnation: str) -> None:
        """
        A peer disconnected or stopped answering heartbeats.
        """


class INodeMessaging(Interface):
    """
    Messages between the nodes of a cluster, the transport under PubSub and
    Presence replication.

    Messages are addressed to a named I{channel} (C{"pubsub"},
    C{"presence"}, ...) so several services share the links.  Payloads of
    any size are accepted (links chunk them).  Messages from this node to
    one peer arrive in the order they were sent; delivery is at most once.
    """

    node_name: str = Attribute("This node's name, unique in the cluster.")
    incarnation: str = Attribute("A new random id on every start of the node.")

    def send(node_name: str, channel: str, data: bytes) -> None:
        """
        Send C{data} to the handler of C{channel} on one peer.  Unknown or
        unreachable peers drop it silently.
        """

    def send_all(channel: str, data: bytes) -> None:
        """
        Send C{data} to the handler of C{channel} on every reachable peer,
        one message per peer.
        """

    def add_handler(channel: str, handler: Callable[[str, bytes], None]) -> None:
        """
        Call C{handler(from_node_name, data)} for each message that arrives
        on C{channel}.
        """

    def add_membership_observer(observer: IMembershipObserver) -> None:
        """
        Report peers going up and down to C{observer}.
        """

    def peers() -> Mapping[str, str]:
        """
        The reachable peers: node name to incarnation.
        """


class IConnection(Interface):
    """
    One client connection as the coordinator sees it: a place to write
    encoded frames.  Implemented by each transport (WebSocket, long-poll,
    a host application's own connections).
    """

    prepare_key: object = Attribute(
        "Connections with equal keys accept the same prepared frames, so a "
        "broadcast is prepared once per key."
    )

    def send(frame: Frame) -> None:
        """
        Write one encoded frame.
        """

    def prepare(frame: Frame) -> object:
        """
        Turn a frame into what L{send_prepared} writes (for a WebSocket:
        the framed bytes), once per broadcast and key.
        """

    def send_prepared(prepared: object) -> None:
        """
        Write a frame prepared by L{prepare} on a connection with the same
        C{prepare_key}.
        """

    def close(code: int, reason: str) -> None:
        """
        Close the connection with a WebSocket close code and reason.
        """


class ISocketHost(Interface):
    """
    What a transport needs from the core: the whole seam between a way of
    carrying frames (WebSocket, long-poll, a host application's own
    connections) and Beryl's channels.  A transport decodes nothing and
    knows no channel rules; it calls these methods in this order:
    L{connect}, then (if accepted) L{open}, then L{receive_data},
    L{touch} and L{received_ping} any number of times, then L{closed}
    exactly once.

    The socket handle that L{open} returns is opaque to the transport: it
    only hands it back.
    """

    clock: IReactorTime = Attribute(
        "The time source of the core, for transports that schedule (write "
        "turns, long-poll windows)."
    )

    counters: Counters = Attribute(
        "The node's numbers: what the core sends is counted there (a "
        "transport's write budget reads messages out from it), and "
        "transports add what only they see."
    )

    def connect(
        params: Mapping[str, Any], info: ConnectInfo
    ) -> Deferred[ConnectResult]:
        """
        Run the application's connect hook for a new client.  Fires with
        C{ConnectOk} (open the socket with its assigns) or C{ConnectError}
        (refuse it, with that HTTP status); never fails.
        """

    def open(
        connection: IConnection,
        serializer: Serializer,
        params: Mapping[str, Any],
        info: ConnectInfo,
        assigns: Any,
    ) -> object:
        """
        Register an accepted connection; returns the socket handle the
        transport passes to the other methods.  If the node is stopping,
        the connection is closed at once.
        """

    def receive_data(socket: object, data: bytes | str, is_binary: bool) -> None:
        """
        One inbound frame or message, as it arrived: the core decodes it
        with the socket's serializer and answers, or closes the socket with
        a reason if it cannot be decoded.
        """

    def touch(socket: object) -> None:
        """
        Inbound traffic that is not a message but shows the client is there
        (a WebSocket ping, a long-poll request): it resets the idle timeout.
        """

    def received_ping(socket: object) -> None:
        """
        A WebSocket ping (or another control message of the transport's
        own) arrived: it counts against the socket's inbound message rate
        like a message, and a socket far past the rate is closed with 1008.
        It does not reset the idle timeout.
        """

    def closed(
        socket: object, local_code: int | None = None, local_reason: str = ""
    ) -> None:
        """
        The connection is gone: end every channel of the socket (presence
        is untracked, C{terminate} runs) and forget it.  Safe to call more
        than once.

        @param local_code: the close code the transport sent itself when it
            closed the connection for its own reasons (invalid UTF-8, an
            oversized message, a protocol violation), or C{None}; the core
            logs it with the socket's id.
        @param local_reason: the reason sent with C{local_code}.
        """
