"""
Turning command-line style cluster addresses into endpoint descriptions
and node names.
"""

from __future__ import annotations

import socket

__all__ = ["default_node_name", "peer_endpoint_description"]


def peer_endpoint_description(text: str) -> str:
    """
    The client endpoint description for a peer written C{host:port} (or
    C{[ipv6-address]:port}), e.g. C{"10.0.0.2:4001"} gives
    C{"tcp:host=10.0.0.2:port=4001"}.

    @raise ValueError: when C{text} is not C{host:port} with a port from 1
        to 65535.
    """
    text = text.strip()
    if text.startswith("["):
        host, bracket, rest = text[1:].partition("]")
        if not bracket or not rest.startswith(":"):
            raise ValueError(f"bad peer address {text!r}: expected [address]:port")
        port_text = rest[1:]
    else:
        host, colon, port_text = text.rpartition(":")
        if not colon or ":" in host:
            raise ValueError(f"bad peer address {text!r}: expected host:port")
    if not host or any(c.isspace() or c in "=\\[]" for c in host):
        raise ValueError(f"bad peer address {text!r}: bad host")
    if not port_text.isdigit() or not 0 < int(port_text) < 65536:
        raise ValueError(f"bad peer address {text!r}: bad port")
    escaped_host = host.replace(":", "\\:")
    return f"tcp:host={escaped_host}:port={int(port_text)}"


def default_node_name(cluster_port: int, hostname: str | None = None) -> str:
    """
    The node name to use when none is given: C{host:port} of the cluster
    listener, unique as long as host names are.
    """
    return f"{hostname or socket.gethostname()}:{cluster_port}"
