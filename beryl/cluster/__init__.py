"""
The links between Beryl nodes: L{ClusterService}, an AMP implementation of
L{beryl.interfaces.INodeMessaging}, and L{LocalMessaging} for a node on its
own.
"""

from beryl.cluster.addresses import (
    default_node_name,
    gossip_safe,
    peer_endpoint_description,
)
from beryl.cluster.local import LocalMessaging
from beryl.cluster.service import ClusterService

__all__ = [
    "ClusterService",
    "LocalMessaging",
    "default_node_name",
    "gossip_safe",
    "peer_endpoint_description",
]
