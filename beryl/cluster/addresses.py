"""
Turning command-line style cluster addresses into endpoint descriptions
and node names.
"""

from __future__ import annotations

import socket

__all__ = ["default_node_name", "gossip_safe", "peer_endpoint_description"]

_GOSSIP_TYPES = ("tcp", "tls")


def _is_endpoint_string(text: str) -> bool:
    """
    Whether C{text} is a client endpoint string (C{tcp:host=h:port=p},
    C{tls:h:443}) rather than C{host:port}.
    """
    return "=" in text or (not text.startswith("[") and text.count(":") >= 2)


def gossip_safe(description: str) -> bool:
    """
    Whether a peer address learned from another node may be dialled: only
    TCP and TLS endpoints, never a UNIX socket or another kind of endpoint
    a hostile peer could name.
    """
    kind = description.split(":", 1)[0].lower()
    return kind in _GOSSIP_TYPES and "\n" not in description


def peer_endpoint_description(text: str) -> str:
    """
    The client endpoint description for a peer written C{host:port} (or
    C{[ipv6-address]:port}), e.g. C{"10.0.0.2:4001"} gives
    C{"tcp:host=10.0.0.2:port=4001"}.  A client endpoint string
    (C{"tls:10.0.0.2:4001"}) is checked and kept as it is.

    @raise ValueError: when C{text} is neither C{host:port} with a port
        from 1 to 65535 nor a valid client endpoint string.
    """
    text = text.strip()
    if _is_endpoint_string(text):
        from twisted.internet.endpoints import clientFromString
        from twisted.internet.testing import MemoryReactor

        try:
            clientFromString(MemoryReactor(), text)
        except (ValueError, TypeError, KeyError) as error:
            raise ValueError(f"bad peer endpoint {text!r}: {error}") from None
        except (NameError, ImportError):
            # Twisted's TLS endpoints need pyOpenSSL and service_identity.
            raise ValueError(
                f"{text!r} needs TLS support: pip install 'twisted[tls]'"
            ) from None
        return text
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
