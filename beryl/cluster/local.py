"""
Node messaging for a node that is alone: no peers, nothing to send.
"""

from __future__ import annotations

import secrets
from typing import Callable, Mapping

from twisted.logger import Logger
from zope.interface import implementer

from beryl.interfaces import IMembershipObserver, INodeMessaging

__all__ = ["LocalMessaging", "MembershipObservers", "new_incarnation"]


def new_incarnation() -> str:
    """
    A fresh random incarnation id.
    """
    return secrets.token_hex(8)


class MembershipObservers:
    """
    The membership observers of one messaging service (the cluster's or the
    backplane's), told in the order they were added.  One that raises is
    logged and the others are still told.
    """

    log = Logger()

    def __init__(self) -> None:
        self._observers: list[IMembershipObserver] = []

    def add(self, observer: IMembershipObserver) -> None:
        """
        Tell C{observer} of peers going up and down from now on.
        """
        self._observers.append(observer)

    def node_up(self, name: str, incarnation: str) -> None:
        """
        Peer C{name} (in C{incarnation}) is up.
        """
        self._tell("node_up", name, incarnation)

    def node_down(self, name: str, incarnation: str) -> None:
        """
        Peer C{name} (in C{incarnation}) is down.
        """
        self._tell("node_down", name, incarnation)

    def _tell(self, event: str, name: str, incarnation: str) -> None:
        for observer in list(self._observers):
            try:
                getattr(observer, event)(name, incarnation)
            except Exception:
                self.log.failure(
                    "A cluster membership observer failed on {event} of {node}",
                    event=event,
                    node=name,
                )


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
