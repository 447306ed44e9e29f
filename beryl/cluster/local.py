"""
Node messaging for a node that is alone: no peers, nothing to send.
"""

from __future__ import annotations

import secrets
from typing import Callable, Mapping

from zope.interface import implementer

from beryl.interfaces import IMembershipObserver, INodeMessaging

__all__ = ["LocalMessaging", "new_incarnation"]


def new_incarnation() -> str:
    """
    A fresh random incarnation id.
    """
    return secrets.token_hex(8)


@implementer(INodeMessaging)
class LocalMessaging:
    """
    The L{INodeMessaging} of a single-node deployment, so that the services
    above it always have a messaging object.  Sends go nowhere, no message
    ever arrives and no peer ever comes up.
    """

    def __init__(self, node_name: str = "local", incarnation: str = "") -> None:
        """
        @param incarnation: defaults to a fresh random id.
        """
        self.node_name = node_name
        self.incarnation = incarnation or new_incarnation()

    def send(self, node_name: str, channel: str, data: bytes) -> None:
        """
        Drop C{data}: there is no other node.
        """

    def send_all(self, channel: str, data: bytes) -> None:
        """
        Drop C{data}: there is no other node.
        """

    def add_handler(self, channel: str, handler: Callable[[str, bytes], None]) -> None:
        """
        Accept C{handler}, which is never called.
        """

    def add_membership_observer(self, observer: IMembershipObserver) -> None:
        """
        Accept C{observer}, which is never told anything.
        """

    def peers(self) -> Mapping[str, str]:
        """
        No peers.
        """
        return {}
