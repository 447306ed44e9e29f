"""
Every class in C{beryl} that declares an interface implements it: its
methods exist with compatible signatures (C{verifyClass}); instances of
the core services are checked with C{verifyObject} in their own tests.
"""

from __future__ import annotations

import importlib
import inspect
import pkgutil

from twisted.internet.interfaces import IDelayedCall
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase
from zope.interface import implementedBy
from zope.interface.verify import verifyClass, verifyObject

import beryl
from beryl.app import App
from beryl.channel import Channel, JoinOk
from beryl.coordinator import Coordinator
from beryl.interfaces import IConnection, IMembershipObserver, IPubSub
from beryl.pubsub import PubSub
from beryl.testing import FakeClient, FakeConnection


def declaring_classes() -> list[tuple[type, object]]:
    """
    Every (class, interface) that a class defined in C{beryl} declares with
    C{@implementer}.
    """
    found = []
    for module_info in pkgutil.walk_packages(beryl.__path__, "beryl."):
        module = importlib.import_module(module_info.name)
        for _, cls in inspect.getmembers(module, inspect.isclass):
            if cls.__module__ != module.__name__:
                continue
            for interface in implementedBy(cls).declared:
                found.append((cls, interface))
    return found


class DeclaredInterfaceTests(SynchronousTestCase):
    def test_declared_interfaces_verified(self) -> None:
        """Every @implementer declaration in beryl passes verifyClass."""
        pairs = declaring_classes()
        names = {(cls.__name__, iface.__name__) for cls, iface in pairs}  # type: ignore[attr-defined]
        # the seams this suite relies on are among them
        self.assertTrue(
            {
                ("Coordinator", "ISocketHost"),
                ("FanOut", "ISubscriber"),
                ("InfoTimer", "IDelayedCall"),
                ("PhoenixWebSocketProtocol", "IConnection"),
                ("HostConnectionAdapter", "IConnection"),
            }
            <= names,
            names,
        )
        for cls, interface in pairs:
            self.assertTrue(verifyClass(interface, cls), (cls, interface))

    def test_pubsub_observes_membership(self) -> None:
        """PubSub provides IPubSub and IMembershipObserver."""
        pubsub = PubSub(None)
        self.assertTrue(verifyObject(IPubSub, pubsub))
        self.assertTrue(verifyObject(IMembershipObserver, pubsub))

    def test_fake_connection(self) -> None:
        """The test double connection provides IConnection."""
        self.assertTrue(verifyObject(IConnection, FakeConnection()))

    def test_info_timer(self) -> None:
        """A send_info_later handle provides IDelayedCall."""
        clock = Clock()
        saved = []

        def join(topic: str, payload: object, ctx: object) -> JoinOk[None]:
            saved.append(ctx.send_info_later(5, "tick"))  # type: ignore[attr-defined]
            return JoinOk(None)

        coordinator = Coordinator(
            App().channel("room:*", Channel.create(join)), clock=clock
        )
        client = FakeClient(coordinator)
        client.send("1", "1", "room:a", "phx_join", {})
        (timer,) = saved
        self.assertTrue(verifyObject(IDelayedCall, timer))
        self.assertEqual(timer.getTime(), 5)
        timer.cancel()
        client.disconnect()
