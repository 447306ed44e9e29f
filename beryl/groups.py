"""
Groups: named collections of topics that can be broadcast to as one.

A group is a name for a set of topics (the rooms of a team, the dashboards
of a customer).  L{Groups.broadcast} sends one event to every topic of a
group through the ordinary broadcast path, so it reaches the subscribers of
those topics on every node of the cluster::

    groups = Groups(server.coordinator)
    groups.create("team:42")
    groups.add("team:42", "room:design")
    groups.add("team:42", "room:ops")
    groups.broadcast("team:42", "announcement", {"body": "deploy at 5"})

The table of groups belongs to this object on this node: it is not
replicated, so every node that broadcasts to a group must be told its
topics (the broadcasts themselves reach every node).
"""

from __future__ import annotations

from typing import Iterator, Protocol

import orjson

from beryl.wire import Payload, encode_once

__all__ = ["Broadcaster", "GroupError", "GroupExists", "Groups", "UnknownGroup"]


class Broadcaster(Protocol):
    """
    What groups broadcast through: anything with the C{broadcast} of
    L{ICoordinator<beryl.interfaces.ICoordinator>} or
    L{IPubSub<beryl.interfaces.IPubSub>}.
    """

    def broadcast(self, topic: str, event: str, payload: Payload) -> None:
        """
        Send C{event} to every subscriber of C{topic}, on every node.
        """


class GroupError(Exception):
    """
    A group operation named a group in a way that cannot be honoured.

    @ivar group: the group's name.
    """

    def __init__(self, group: str) -> None:
        super().__init__(group)
        self.group = group


class UnknownGroup(GroupError):
    """
    There is no group of that name (it was never created, or was deleted).
    """

    def __str__(self) -> str:
        return f"no group named {self.group!r}"


class GroupExists(GroupError):
    """
    A group of that name already exists; creating it again would silently
    merge two users' idea of it, so it is refused.
    """

    def __str__(self) -> str:
        return f"a group named {self.group!r} already exists"


class Groups:
    """
    Named collections of topics on this node, broadcast to through a
    L{Broadcaster} (normally the L{Coordinator<beryl.coordinator.Coordinator>}).

    A group's topics are a set kept in the order they were added; adding a
    topic twice keeps it once.  Topics are exact topic names, not patterns.
    """

    def __init__(self, broadcaster: Broadcaster) -> None:
        """
        @param broadcaster: where group broadcasts go, one per topic.
        """
        self._broadcaster = broadcaster
        self._groups: dict[str, dict[str, None]] = {}

    def create(self, group: str) -> None:
        """
        Create an empty group.

        @raise GroupExists: when C{group} exists already.
        """
        if group in self._groups:
            raise GroupExists(group)
        self._groups[group] = {}

    def delete(self, group: str) -> None:
        """
        Forget a group and its topics (the topics themselves and their
        subscribers are not affected).

        @raise UnknownGroup: when there is no such group.
        """
        if self._groups.pop(group, None) is None:
            raise UnknownGroup(group)

    def add(self, group: str, topic: str) -> None:
        """
        Put C{topic} in C{group}; a topic already there stays once.

        @raise UnknownGroup: when there is no such group.
        """
        self._topic_set(group)[topic] = None

    def remove(self, group: str, topic: str) -> None:
        """
        Take C{topic} out of C{group}; a topic that is not in it is ignored,
        so removing is idempotent.

        @raise UnknownGroup: when there is no such group.
        """
        self._topic_set(group).pop(topic, None)

    def topics(self, group: str) -> tuple[str, ...]:
        """
        The topics of C{group}, in the order they were added.

        @raise UnknownGroup: when there is no such group.
        """
        return tuple(self._topic_set(group))

    def names(self) -> tuple[str, ...]:
        """
        The names of every group, in the order they were created.
        """
        return tuple(self._groups)

    def __contains__(self, group: object) -> bool:
        """
        Whether a group of that name exists.
        """
        return group in self._groups

    def __iter__(self) -> Iterator[str]:
        """
        The group names, as L{names}.
        """
        return iter(self.names())

    def broadcast(self, group: str, event: str, payload: Payload) -> int:
        """
        Send C{event} with C{payload} to every subscriber of every topic in
        C{group}, on every node.

        A JSON payload is encoded once for the whole group (an
        C{orjson.Fragment} is handed to the broadcaster), so a group of
        thousands of topics costs one encoding plus, per topic, the copy of
        those bytes into its frame.  Other in-process subscribers of the
        pubsub layer get the decoded value.

        @return: the number of topics the event was sent to.
        @raise UnknownGroup: when there is no such group.
        @raise TypeError: when C{payload} is neither JSON-serialisable nor
            L{Binary}; nothing has been sent then.
        """
        topics = tuple(self._topic_set(group))
        if not topics:
            return 0
        try:
            shared = encode_once(payload)
        except orjson.JSONEncodeError as error:
            raise TypeError(
                f"the payload of {event!r} to group {group!r} is not "
                f"JSON-serialisable: {error}"
            ) from None
        for topic in topics:
            self._broadcaster.broadcast(topic, event, shared)
        return len(topics)

    def _topic_set(self, group: str) -> dict[str, None]:
        topics = self._groups.get(group)
        if topics is None:
            raise UnknownGroup(group)
        return topics
