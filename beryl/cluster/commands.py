"""
The AMP commands spoken on a cluster link.

A link starts with a handshake: the connecting side sends L{Hello} and the
accepting side answers with its name, a random nonce and, when the nodes
share a secret, its proof of the secret (an HMAC over both sides' nonces;
the secret itself never crosses the wire).  The connecting side checks the
proof and sends L{Authenticate} with its own proof; only then, to a peer
that has proved the secret, do both sides tell their incarnation (new on
every start) and the address they advertise.  Nothing a stranger learns
before the proof can be replayed to pass for a node.

After the handshake the nodes exchange L{Members} (gossip), L{Deliver}
(chunked channel messages) and L{Ping} (heartbeats).
"""

from __future__ import annotations

import hashlib
import hmac

from twisted.protocols import amp

__all__ = [
    "PROTOCOL_VERSION",
    "Authenticate",
    "Deliver",
    "DuplicateNode",
    "Hello",
    "LinkRefused",
    "Members",
    "Ping",
    "prove_secret",
]

PROTOCOL_VERSION = 2
"""
The version of this command set, sent in L{Hello}.  Version 2 moved the
incarnation and the advertised address from L{Hello} to L{Authenticate},
which is answered.
"""


class LinkRefused(Exception):
    """
    The accepting node refused the link: unsupported version, a handshake
    out of order, or a wrong or missing secret.
    """


class DuplicateNode(Exception):
    """
    The accepting node already has a live link to another node of the same
    name: two nodes were started with one name.
    """


class Hello(amp.Command):
    """
    Sent by the connecting node to open a link: the protocol version, its
    node name and a fresh random nonce.  The answer is the accepting node's
    name and nonce, whether it requires the shared secret, and its proof of
    the secret (empty without one).
    """

    arguments = [
        (b"version", amp.Integer()),
        (b"node_name", amp.Unicode()),
        (b"nonce", amp.String()),
    ]
    response = [
        (b"node_name", amp.Unicode()),
        (b"nonce", amp.String()),
        (b"secret_required", amp.Boolean()),
        (b"proof", amp.String()),
    ]
    fatalErrors = {LinkRefused: b"LINK_REFUSED"}


class Authenticate(amp.Command):
    """
    The last step of the handshake: the connecting node's proof of the
    shared secret (empty without one), its incarnation and the client
    endpoint description other nodes can use to reach it (C{advertise},
    empty when it accepts no connections).  The answer carries the same two
    facts about the accepting node.
    """

    arguments = [
        (b"proof", amp.String()),
        (b"incarnation", amp.Unicode()),
        (b"advertise", amp.Unicode()),
    ]
    response = [
        (b"incarnation", amp.Unicode()),
        (b"advertise", amp.Unicode()),
    ]
    fatalErrors = {LinkRefused: b"LINK_REFUSED", DuplicateNode: b"DUPLICATE_NODE"}


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
