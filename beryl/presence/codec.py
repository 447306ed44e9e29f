"""
JSON-able forms of the presence CRDT's deltas, full states and clocks, as
they travel between nodes.

Replicas are listed once per message and values refer to them by index;
clouds are sent as runs of consecutive dots.  Decoding is strict and raises
L{CodecError} on anything malformed, so a bad peer message is dropped
whole.

A delta::

    {"kind": "delta", "replicas": [[node, incarnation], ...],
     "range": [[replica index, start, end], ...],
     "cloud": [[replica index, [[first, last], ...]], ...],
     "values": [[replica index, clock, topic, key, owner, meta], ...]}

A full state has C{"kind": "state"} and C{"context": [[replica index,
clock], ...]} in place of C{"range"}.
"""

from __future__ import annotations

from typing import Any, Mapping

from beryl.presence.delta import Delta, dots_to_runs
from beryl.presence.entries import Entry, Replica, Tag
from beryl.presence.state import FullState, Remote

__all__ = [
    "CodecError",
    "clock_from_json",
    "clock_to_json",
    "remote_from_json",
    "remote_to_json",
    "replica_from_json",
    "replica_to_json",
]

MAX_DOTS_PER_RUN = 10_000_000
"""A sanity bound on one run of dots, so a bad message cannot exhaust memory."""


class CodecError(ValueError):
    """
    A message is not a well-formed presence delta, state or clock.
    """


class _Replicas:
    """
    The table of replicas of one message being encoded.
    """

    def __init__(self) -> None:
        self.index: dict[Replica, int] = {}

    def __call__(self, replica: Replica) -> int:
        number = self.index.get(replica)
        if number is None:
            number = self.index[replica] = len(self.index)
        return number

    def to_json(self) -> list[list[str]]:
        return [list(replica) for replica in self.index]


def _cloud_to_json(
    cloud: Mapping[Replica, set[int]], index: _Replicas
) -> list[list[Any]]:
    return [[index(r), dots_to_runs(dots)] for r, dots in cloud.items() if dots]


def _values_to_json(values: Mapping[Tag, Entry], index: _Replicas) -> list[list[Any]]:
    return [
        [index(replica), clock, e.topic, e.key, e.owner, e.meta]
        for (replica, clock), e in values.items()
    ]


def remote_to_json(remote: Remote) -> dict[str, Any]:
    """
    The JSON-able form of a delta or a full state.
    """
    index = _Replicas()
    result: dict[str, Any]
    if isinstance(remote, Delta):
        result = {
            "kind": "delta",
            "range": [
                [index(r), remote.start[r], end] for r, end in remote.end.items()
            ],
        }
        cloud = remote.cloud
    else:
        result = {
            "kind": "state",
            "context": [[index(r), clock] for r, clock in remote.context.items()],
        }
        cloud = remote.clouds
    result["cloud"] = _cloud_to_json(cloud, index)
    result["values"] = _values_to_json(remote.values, index)
    result["replicas"] = index.to_json()
    return result


def _expect(condition: bool, what: str) -> None:
    if not condition:
        raise CodecError(what)


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def _list(value: Any, what: str) -> list[Any]:
    _expect(isinstance(value, list), f"{what} is not a list")
    result: list[Any] = value
    return result


def replica_from_json(value: Any) -> Replica:
    """
    Decode a replica, C{[node name, incarnation]}.
    """
    _expect(
        isinstance(value, list)
        and len(value) == 2
        and all(isinstance(part, str) for part in value),
        "replica is not [name, incarnation]",
    )
    name: str = value[0]
    incarnation: str = value[1]
    return (name, incarnation)


def replica_to_json(replica: Replica) -> list[str]:
    """
    Encode a replica as C{[node name, incarnation]}.
    """
    return [replica[0], replica[1]]


def clock_to_json(clock: Mapping[Replica, int]) -> list[list[Any]]:
    """
    Encode a vector clock as C{[[node name, incarnation, clock], ...]}.
    """
    return [[r[0], r[1], c] for r, c in clock.items()]


def clock_from_json(value: Any) -> dict[Replica, int]:
    """
    Decode a vector clock written by L{clock_to_json}.
    """
    clock: dict[Replica, int] = {}
    for item in _list(value, "clock"):
        _expect(
            isinstance(item, list)
            and len(item) == 3
            and isinstance(item[0], str)
            and isinstance(item[1], str)
            and _is_int(item[2]),
            "clock item is not [name, incarnation, clock]",
        )
        clock[(item[0], item[1])] = item[2]
    return clock


def _replica_at(replicas: list[Replica], number: Any) -> Replica:
    _expect(_is_int(number) and number < len(replicas), "bad replica index")
    replica: Replica = replicas[number]
    return replica


def _cloud_from_json(value: Any, replicas: list[Replica]) -> dict[Replica, set[int]]:
    cloud: dict[Replica, set[int]] = {}
    for item in _list(value, "cloud"):
        _expect(isinstance(item, list) and len(item) == 2, "bad cloud item")
        replica = _replica_at(replicas, item[0])
        dots = cloud.get(replica, set())
        for run in _list(item[1], "cloud runs"):
            _expect(
                isinstance(run, list)
                and len(run) == 2
                and _is_int(run[0])
                and _is_int(run[1])
                and 0 < run[0] <= run[1] < run[0] + MAX_DOTS_PER_RUN,
                "bad run of dots",
            )
            dots.update(range(run[0], run[1] + 1))
        if dots:
            cloud[replica] = dots
    return cloud


def _values_from_json(value: Any, replicas: list[Replica]) -> dict[Tag, Entry]:
    values: dict[Tag, Entry] = {}
    for item in _list(value, "values"):
        _expect(
            isinstance(item, list)
            and len(item) == 6
            and _is_int(item[1])
            and all(isinstance(part, str) for part in item[2:5])
            and isinstance(item[5], dict),
            "value is not [replica, clock, topic, key, owner, meta]",
        )
        tag = (_replica_at(replicas, item[0]), item[1])
        values[tag] = Entry(item[2], item[3], item[4], item[5])
    return values


def remote_from_json(value: Any) -> Remote:
    """
    Decode a delta or full state written by L{remote_to_json}.

    @raise CodecError: when it is malformed.
    """
    _expect(isinstance(value, dict), "not an object")
    replicas = [replica_from_json(r) for r in _list(value.get("replicas"), "replicas")]
    cloud = _cloud_from_json(value.get("cloud"), replicas)
    values = _values_from_json(value.get("values"), replicas)
    kind = value.get("kind")
    if kind == "delta":
        start: dict[Replica, int] = {}
        end: dict[Replica, int] = {}
        for item in _list(value.get("range"), "range"):
            _expect(
                isinstance(item, list)
                and len(item) == 3
                and _is_int(item[1])
                and _is_int(item[2]),
                "bad range item",
            )
            replica = _replica_at(replicas, item[0])
            start[replica] = item[1]
            end[replica] = item[2]
        return Delta(start, end, cloud, values)
    _expect(kind == "state", "unknown kind")
    context: dict[Replica, int] = {}
    for item in _list(value.get("context"), "context"):
        _expect(
            isinstance(item, list) and len(item) == 2 and _is_int(item[1]),
            "bad context item",
        )
        context[_replica_at(replicas, item[0])] = item[1]
    return FullState(context, cloud, values)
