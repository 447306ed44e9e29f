"""
Presence: who is online on which topic, replicated across a cluster.

L{beryl.presence.state} is the pure CRDT (an add-wins observed-remove set
with causal context, after Phoenix's tracker), L{beryl.presence.delta} its
deltas and delta generations, L{beryl.presence.codec} their wire forms, and
L{beryl.presence.tracker} the service that implements
L{IPresence<beryl.interfaces.IPresence>} on top of them.
"""

from beryl.presence.state import AlreadyTrackedError, NoPresenceError
from beryl.presence.tracker import PresenceTracker

__all__ = ["AlreadyTrackedError", "NoPresenceError", "PresenceTracker"]
