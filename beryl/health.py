"""
Health and readiness, for load balancers and Kubernetes probes.

C{/health} answers 200 while the process serves HTTP at all (a liveness
probe).  C{/ready} answers 200 once the node is listening and its cluster
has met the configured peers (or a grace period has passed), and 503 from
the moment a drain begins, so a load balancer stops sending new clients
before the node closes the ones it has.  Both answer JSON.
"""

from __future__ import annotations

from typing import Callable

import orjson
from twisted.internet.interfaces import IReactorTime
from twisted.web.resource import Resource
from twisted.web.server import Request

__all__ = ["Readiness", "health_resource", "ready_resource"]


class Readiness:
    """
    Whether this node should be sent new clients.

    @ivar draining: set when the node starts to stop.
    """

    def __init__(
        self,
        clock: IReactorTime,
        *,
        expected_peers: int = 0,
        peers_up: Callable[[], int] = lambda: 0,
        grace_period: float = 30.0,
    ) -> None:
        """
        @param expected_peers: how many cluster peers the node was told of
            (C{--peers}); ready once that many are up.
        @param peers_up: how many peers are up now.
        @param grace_period: seconds after the node starts listening after
            which it is ready even if its peers are not all up (a lone
            survivor must still serve).
        """
        self._clock = clock
        self._listening_since: float | None = None
        self._expected_peers = expected_peers
        self._peers_up = peers_up
        self._grace_period = grace_period
        self.draining = False

    @property
    def listening(self) -> bool:
        """
        Whether the client port listens (see L{mark_listening}).
        """
        return self._listening_since is not None

    def mark_listening(self) -> None:
        """
        The client port listens now; the grace period starts.
        """
        if self._listening_since is None:
            self._listening_since = self._clock.seconds()

    def status(self) -> tuple[bool, dict[str, object]]:
        """
        Whether the node is ready, and the details a probe shows.
        """
        peers = self._peers_up()
        since = self._listening_since
        cluster_ok = peers >= self._expected_peers or (
            since is not None and self._clock.seconds() - since >= self._grace_period
        )
        if self.draining:
            state = "draining"
        elif not self.listening:
            state = "starting"
        elif not cluster_ok:
            state = "waiting for peers"
        else:
            state = "ready"
        return state == "ready", {
            "status": state,
            "listening": self.listening,
            "draining": self.draining,
            "peers_up": peers,
            "peers_expected": self._expected_peers,
        }


def _json(request: Request, code: int, body: dict[str, object]) -> bytes:
    request.setResponseCode(code)
    request.setHeader(b"Content-Type", b"application/json")
    request.setHeader(b"Cache-Control", b"no-store")
    return orjson.dumps(body)


class _Health(Resource):
    isLeaf = True

    def __init__(self) -> None:
        Resource.__init__(self)

    def render_GET(self, request: Request) -> bytes:
        return _json(request, 200, {"status": "ok"})


class _Ready(Resource):
    isLeaf = True

    def __init__(self, readiness: Readiness) -> None:
        Resource.__init__(self)
        self._readiness = readiness

    def render_GET(self, request: Request) -> bytes:
        ready, details = self._readiness.status()
        return _json(request, 200 if ready else 503, details)


def health_resource() -> Resource:
    """
    C{/health}: 200 C{{"status": "ok"}} while the process is up.
    """
    return _Health()


def ready_resource(readiness: Readiness) -> Resource:
    """
    C{/ready}: 200 when L{Readiness.status} says ready, else 503, with the
    details as JSON.
    """
    return _Ready(readiness)
