"""
Single-node presence: who is online on this node only, in Phoenix Presence
format.  The replicated tracker (L{beryl.presence.tracker}) replaces it in a
cluster; both provide L{IPresence}.
"""

from __future__ import annotations

import base64
import secrets
from typing import Any, Callable, List

import attrs
from zope.interface import implementer

from beryl.interfaces import IPresence, PresenceList, PresenceMeta

__all__ = ["LocalPresence", "new_phx_ref"]

DiffCallback = Callable[[str, dict[str, PresenceList]], None]


def new_phx_ref() -> str:
    """
    A fresh presence reference: 16 URL-safe characters, as phoenix_pubsub
    makes them.
    """
    return base64.urlsafe_b64encode(secrets.token_bytes(12)).decode("ascii")


def _add(presences: PresenceList, key: str, meta: dict[str, Any]) -> None:
    presences.setdefault(key, {"metas": []})["metas"].append(meta)


@implementer(IPresence)
@attrs.define
class LocalPresence:
    """
    Presence held in memory for this node, indexed by topic and by owner so
    that tracking and listing cost nothing in the size of other topics.
    """

    _ref: Callable[[], str] = new_phx_ref
    # topic -> key -> owner -> meta (dicts keep insertion order)
    _topics: dict[str, dict[str, dict[str, dict[str, Any]]]] = attrs.field(
        factory=dict
    )
    _owners: dict[str, set[tuple[str, str]]] = attrs.field(factory=dict)
    _pending: dict[str, dict[str, PresenceList]] = attrs.field(factory=dict)
    _observers: List[DiffCallback] = attrs.field(factory=list)

    def track(self, topic: str, key: str, owner: str, meta: PresenceMeta) -> str:
        ref = self._ref()
        entry = {**meta, "phx_ref": ref}
        self._topics.setdefault(topic, {}).setdefault(key, {})[owner] = entry
        self._owners.setdefault(owner, set()).add((topic, key))
        joins: PresenceList = {}
        _add(joins, key, entry)
        self._emit(topic, joins, {})
        return ref

    def untrack(self, topic: str, key: str, owner: str) -> None:
        keys = self._topics.get(topic, {})
        metas = keys.get(key, {})
        entry = metas.pop(owner, None)
        if entry is None:
            return
        if not metas:
            del keys[key]
            if not keys:
                del self._topics[topic]
        places = self._owners.get(owner, set())
        places.discard((topic, key))
        if not places:
            self._owners.pop(owner, None)
        leaves: PresenceList = {}
        _add(leaves, key, entry)
        self._emit(topic, {}, leaves)

    def untrack_all(self, owner: str) -> None:
        for topic, key in sorted(self._owners.get(owner, set())):
            self.untrack(topic, key, owner)

    def update(self, topic: str, key: str, owner: str, meta: PresenceMeta) -> str:
        metas = self._topics.get(topic, {}).get(key, {})
        old = metas.get(owner)
        if old is None:
            return self.track(topic, key, owner, meta)
        ref = self._ref()
        entry = {**meta, "phx_ref": ref, "phx_ref_prev": old["phx_ref"]}
        metas[owner] = entry
        joins: PresenceList = {}
        leaves: PresenceList = {}
        _add(joins, key, entry)
        _add(leaves, key, old)
        self._emit(topic, joins, leaves)
        return ref

    def list(self, topic: str) -> PresenceList:
        return {
            key: {"metas": list(metas.values())}
            for key, metas in self._topics.get(topic, {}).items()
        }

    def get_by_key(self, topic: str, key: str) -> List[dict[str, Any]]:
        return list(self._topics.get(topic, {}).get(key, {}).values())

    def get_diff(self, topic: str) -> dict[str, PresenceList]:
        """
        The joins and leaves since the last call; the first call starts
        collecting for C{topic} and returns an empty diff.
        """
        diff = self._pending.get(topic, {"joins": {}, "leaves": {}})
        self._pending[topic] = {"joins": {}, "leaves": {}}
        return diff

    def subscribe_diffs(self, callback: DiffCallback) -> Callable[[], None]:
        self._observers.append(callback)

        def stop() -> None:
            if callback in self._observers:
                self._observers.remove(callback)

        return stop

    def _emit(self, topic: str, joins: PresenceList, leaves: PresenceList) -> None:
        pending = self._pending.get(topic)
        if pending is not None:
            for key, value in joins.items():
                for meta in value["metas"]:
                    _add(pending["joins"], key, meta)
            for key, value in leaves.items():
                for meta in value["metas"]:
                    _add(pending["leaves"], key, meta)
        diff = {"joins": joins, "leaves": leaves}
        for observer in list(self._observers):
            observer(topic, diff)
