"""
The AMP commands spoken on a cluster link.

A link starts with a handshake: the connecting side sends L{Hello} and the
accepting side answers with its own identity, then the connecting side
sends L{Authenticate}.  When the nodes share a secret each side proves it
knows the secret with an HMAC over both sides' random nonces; the secret
itself never crosses the wire.  After the handshake the nodes exchange
L{Members} (gossip), L{Deliver} (chunked channel messages) and L{Ping}
(heartbeats).
"""

from __future__ import annotations

import hashlib
import hmac

from twisted.protocols import amp

__all__ = [
    "PROTOCOL_VERSION",
    "Authenticate",
    "Deliver",
    "PeerHandshakeRefused",
    "Hello",
    "Members",
    "Ping",
    "prove_secret",
]

PROTOCOL_VERSION = 1
"""The version of this command set, sent in L{Hello}."""


class PeerHandshakeRefused(Exception):
    """
    The accepting node refused a L{Hello}: name clash, unsupported version
    or a handshake out of order.
    """


class Hello(amp.Command):
    """
    Sent by the connecting node to open a link.

    Both directions carry the node name, its incarnation (new on every
    start), the client endpoint description other nodes can use to reach it
    (C{advertise}, empty when it accepts no connections) and a fresh random
    nonce.  The answer adds whether the accepting node requires the shared
    secret and its proof of it (empty without a secret).
    """

    arguments = [
        (b"version", amp.Integer()),
        (b"node_name", amp.Unicode()),
        (b"incarnation", amp.Unicode()),
        (b"advertise", amp.Unicode()),
        (b"nonce", amp.String()),
    ]
    response = [
        (b"node_name", amp.Unicode()),
        (b"incarnation", amp.Unicode()),
        (b"advertise", amp.Unicode()),
        (b"nonce", amp.String()),
        (b"secret_required", amp.Boolean()),
        (b"proof", amp.String()),
    ]
    fatalErrors = {PeerHandshakeRefused: b"HANDSHAKE_REFUSED"}


class Authenticate(amp.Command):
    """
    The connecting node's proof of the shared secret (empty without one);
    the last step of the handshake.  Unanswered: a node that refuses it
    closes the link.
    """

    arguments = [(b"proof", amp.String())]
    requiresAnswer = False


class Members(amp.Command):
    """
    Gossip: the members the sender knows, with the client endpoint
    descriptions they advertise, so that a node that knows one peer joins
    the whole mesh.
    """

    arguments = [
        (
            b"members",
            amp.AmpList([(b"node_name", amp.Unicode()), (b"address", amp.Unicode())]),
        )
    ]
    requiresAnswer = False


class Deliver(amp.Command):
    """
    One chunk of a message for the handler of C{channel} on the receiving
    node.  Chunks of one message share C{message_id} and are sent
    consecutively, C{index} counting from 0 to C{count - 1}.
    """

    arguments = [
        (b"channel", amp.Unicode()),
        (b"message_id", amp.Integer()),
        (b"index", amp.Integer()),
        (b"count", amp.Integer()),
        (b"data", amp.String()),
    ]
    requiresAnswer = False


class Ping(amp.Command):
    """
    A heartbeat; the (empty) answer shows the peer is still there.
    """


def prove_secret(
    secret: bytes, role: bytes, first_nonce: bytes, second_nonce: bytes
) -> bytes:
    """
    The HMAC-SHA256 proof that one side of a handshake knows C{secret}.

    @param role: C{b"accept"} or C{b"connect"}, so that one side's proof
        cannot be replayed as the other's.
    @param first_nonce: the nonce of the side giving the proof's peer, which
        makes the proof fresh for this handshake.
    """
    message = b"beryl-cluster\0" + role + b"\0" + first_nonce + b"\0" + second_nonce
    return hmac.new(secret, message, hashlib.sha256).digest()
