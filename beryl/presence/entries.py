"""
The values of the presence CRDT and what its operations report.

Pure data: no I/O, no reactor.
"""

from __future__ import annotations

import base64
import os
from typing import AbstractSet, Any, Mapping

import attrs

__all__ = [
    "ReadOnlyDict",
    "ReadOnlyList",
    "AlreadyTrackedError",
    "Changes",
    "Diff",
    "Entry",
    "FullState",
    "NoPresenceError",
    "Replica",
    "Tag",
    "random_ref",
]

Replica = tuple[str, str]
"""A replica: C{(node name, incarnation)}.  A restarted node is a new one."""

Tag = tuple[Replica, int]
"""A dot: the replica that made an operation and its clock at the time."""


def _read_only(*args: Any, **kwargs: Any) -> Any:
    raise TypeError(
        "presence data is shared and read-only; copy it (dict(...), list(...)) "
        "to change it"
    )


class ReadOnlyDict(dict[str, Any]):
    """
    A dictionary that refuses changes: presence metas and snapshots are
    shared between the state, its views and every caller of C{list}.  It is
    still a C{dict}, so encoders (orjson) write it as one.
    """

    __slots__ = ()
    __setitem__ = __delitem__ = __ior__ = _read_only
    clear = pop = popitem = setdefault = update = _read_only


class ReadOnlyList(list[Any]):
    """
    A list that refuses changes (the metas of one key in a snapshot).
    """

    __slots__ = ()
    __setitem__ = __delitem__ = __iadd__ = __imul__ = _read_only
    append = extend = insert = pop = remove = clear = sort = reverse = _read_only


def read_only_meta(meta: Mapping[str, Any]) -> ReadOnlyDict:
    """
    C{meta} as a L{ReadOnlyDict} (itself when it is one already).
    """
    return meta if isinstance(meta, ReadOnlyDict) else ReadOnlyDict(meta)


@attrs.frozen
class Entry:
    """
    One tracked presence: C{owner} (a socket id, say) is present on
    C{topic} under C{key} with C{meta}, which carries its C{phx_ref}.

    The meta is shared, never copied, between states, deltas, views and
    snapshots, so it is a L{ReadOnlyDict}.
    """

    topic: str
    key: str
    owner: str
    meta: Mapping[str, Any] = attrs.field(eq=True, hash=False, converter=read_only_meta)


@attrs.frozen
class FullState:
    """
    A full-state extract, as sent to a peer too far behind for a delta.

    @ivar context: Contiguous clock per replica.
    @ivar clouds: Dots seen beyond each replica's contiguous clock.
    @ivar values: Every value held for the replicas in C{context}.
    """

    context: dict[Replica, int]
    clouds: dict[Replica, set[int]]
    values: dict[Tag, Entry]


@attrs.frozen
class Diff:
    """
    The visible changes one operation caused: the values that became
    visible and the values that stopped being visible.  An update is a
    leave of the old value and a join of the new one.
    """

    joins: list[tuple[Tag, Entry]] = attrs.Factory(list)
    leaves: list[tuple[Tag, Entry]] = attrs.Factory(list)

    def __bool__(self) -> bool:
        return bool(self.joins or self.leaves)


def random_ref() -> str:
    """
    A new C{phx_ref}: 16 URL-safe base64 characters of 12 random bytes.
    """
    return base64.urlsafe_b64encode(os.urandom(12)).decode("ascii")


class AlreadyTrackedError(ValueError):
    """
    The owner already has a presence under this key on this topic.
    """


class NoPresenceError(LookupError):
    """
    The owner has no presence under this key on this topic.
    """


class Changes:
    """
    The visible joins and leaves of one merge (or, in the tracker, of one
    topic since the last C{get_diff}), with a join and a leave of the same
    value cancelling out.
    """

    def __init__(self, down: AbstractSet[Replica] = frozenset()) -> None:
        """
        @param down: The replicas whose values are hidden, so not reported.
        """
        self.down = down
        self.joins: dict[Tag, Entry] = {}
        self.leaves: dict[Tag, Entry] = {}

    def join(self, tag: Tag, entry: Entry) -> None:
        """
        Record that C{tag} became held.
        """
        if tag[0] in self.down:
            return
        if self.leaves.pop(tag, None) is None:
            self.joins[tag] = entry

    def leave(self, tag: Tag, entry: Entry) -> None:
        """
        Record that C{tag} stopped being held.
        """
        if tag[0] in self.down:
            return
        if self.joins.pop(tag, None) is None:
            self.leaves[tag] = entry

    def diff(self) -> Diff:
        """
        The changes recorded so far.
        """
        return Diff(list(self.joins.items()), list(self.leaves.items()))
