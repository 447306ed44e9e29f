"""
The numbers a node's hot paths count, as plain integers: counting costs an
attribute increment, and nothing is formatted until metrics are scraped
(L{beryl.metrics}).
"""

from __future__ import annotations

from collections import Counter

import attrs

__all__ = ["Counters"]


@attrs.define
class Counters:
    """
    The numbers the hot paths count, as plain integers, so counting costs
    an attribute increment.  One per node, shared by its transports,
    coordinator, PubSub and cluster links.

    @ivar messages_in: Phoenix messages received from clients.
    @ivar messages_out: Phoenix messages sent to clients (replies, pushes
        and each delivery of a broadcast).
    @ivar bytes_out: the encoded size of those messages.
    @ivar broadcasts_local: broadcasts published on this node.
    @ivar broadcasts_remote: broadcasts received from other nodes.
    @ivar slow_clients_dropped: sockets closed because they read too
        slowly.
    @ivar cluster_bytes_in: bytes received on cluster links.
    @ivar cluster_bytes_out: bytes sent on cluster links.
    @ivar limit_hits: how often each limit acted, by limit name.
    """

    messages_in: int = 0
    messages_out: int = 0
    bytes_out: int = 0
    broadcasts_local: int = 0
    broadcasts_remote: int = 0
    slow_clients_dropped: int = 0
    cluster_bytes_in: int = 0
    cluster_bytes_out: int = 0
    limit_hits: Counter[str] = attrs.field(factory=Counter)

    def slow_client_dropped(self) -> None:
        """
        Count one socket dropped for reading too slowly.
        """
        self.slow_clients_dropped += 1

    def limit_hit(self, limit: str) -> None:
        """
        Count one action of the limit named C{limit}.
        """
        self.limit_hits[limit] += 1
