"""
C{twistd beryl}: command-line options and the composition root.

L{makeService} is the one place that imports the global reactor; it hands
it to L{make_beryl_service}, which tests call with a fake reactor.
"""

from __future__ import annotations

import importlib
import math
import re
import socket
from typing import Any

from twisted.application import strports
from twisted.application.service import IService, MultiService
from twisted.internet.endpoints import serverFromString
from twisted.internet.testing import MemoryReactor
from twisted.python import usage
from twisted.web.server import Site

from beryl.app import App
from beryl.cluster import default_node_name, peer_endpoint_description
from beryl.server import ClusterConfig, PresenceTimings, make_server
from beryl.web import root_resource

__all__ = ["Options", "load_app", "make_beryl_service", "makeService"]


_NUMBERS: dict[str, type[int] | type[float]] = {
    "heartbeat-timeout": float,
    "max-frame-size": int,
    "max-channels": int,
    "broadcast-period": float,
    "max-silent-periods": int,
    "down-period": float,
    "permdown-period": float,
}
"""The numeric options, all positive and finite, checked in L{Options.postOptions}."""


def _limit(kind: type[int] | type[float], option: str, off: bool = False) -> Any:
    """
    A L{usage.Options} coerce function for a limit: a positive, finite
    number, or also C{0} (no limit) when C{off}.
    """
    what = ("integer" if kind is int else "number") + (" or 0" if off else "")

    def coerce(text: str) -> int | float:
        try:
            value = kind(text)
        except ValueError:
            value = -1
        if not (math.isfinite(value) and (value > 0 or (off and value == 0))):
            raise ValueError(f"--{option}: expected a positive {what}, not {text!r}")
        return value

    coerce.coerceDoc = f"A positive {what}."  # type: ignore[attr-defined]
    return coerce


def endpoint_description(value: str) -> str:
    """
    A bare port number means TCP on every interface; anything else is a
    Twisted server endpoint string.
    """
    value = value.strip()
    return f"tcp:{value}" if value.isdigit() else value


def _server_endpoint(option: str, value: str) -> str:
    """
    The server endpoint description an option names, checked for syntax.

    @raise usage.UsageError: naming the option, when it does not parse.
    """
    description = endpoint_description(value)
    try:
        serverFromString(MemoryReactor(), description)
    except (ValueError, TypeError, KeyError) as error:
        raise usage.UsageError(f"--{option}: {error}") from None
    return description


def _listen_address(description: str) -> tuple[str, int]:
    """
    The host and port a TCP server endpoint description listens on: its
    C{interface} when one is given (and not a wildcard), else this host's
    name.

    @raise usage.UsageError: when the description has no port.
    """
    fields = description.split(":")
    args = [f for f in fields[1:] if "=" not in f]
    kwargs = dict(f.split("=", 1) for f in fields[1:] if "=" in f)
    port = kwargs.get("port") or (args[0] if args else "")
    if not port.isdigit():
        raise usage.UsageError(
            f"--cluster-port: cannot find a port number in {description!r}"
        )
    interface = kwargs.get("interface", "")
    if interface in ("", "0.0.0.0", "::"):
        interface = socket.gethostname()
    return interface, int(port)


def load_app(spec: str) -> App:
    """
    Import C{package.module:attribute}: an L{App}, or a callable returning
    one.

    @raise ValueError: with a one-line reason when that fails.
    """
    module_name, colon, attribute = spec.partition(":")
    if not colon or not module_name or not attribute:
        raise ValueError(f"{spec!r} is not of the form package.module:attribute")
    try:
        module = importlib.import_module(module_name)
    except ImportError as error:
        raise ValueError(f"cannot import {module_name!r}: {error}") from None
    try:
        value: Any = module
        for name in attribute.split("."):
            value = getattr(value, name)
    except AttributeError:
        raise ValueError(f"{module_name!r} has no attribute {attribute!r}") from None
    if not isinstance(value, App) and callable(value):
        value = value()
    if not isinstance(value, App):
        raise ValueError(f"{spec} is {value!r}, not a beryl.App")
    return value


class Options(usage.Options):
    """
    Options of C{twistd beryl}.
    """

    synopsis = "[options]"
    longdesc = (
        "Serve Phoenix Channels over WebSocket at /socket/websocket. Without "
        "--app, the built-in demo (a chat page at / with room:* and feed:* "
        "channels) is served."
    )

    optFlags = [
        [
            "levee",
            None,
            "Serve Levee (Fluid relay) documents on document:<tenantId>:<documentId>.",
        ],
        [
            "levee-insecure-dev-tokens",
            None,
            "With --levee: accept any token with full scopes (development only; logged as a warning).",
        ],
    ]

    optParameters = [
        [
            "port",
            "p",
            "4000",
            "Listen here: a port number or a Twisted server endpoint string (tcp:4000:interface=127.0.0.1, ssl:...).",
        ],
        [
            "app",
            "a",
            None,
            "The application to serve, as package.module:attribute (a beryl.App or a function returning one).",
        ],
        [
            "cluster-port",
            None,
            None,
            "Listen for cluster peers here: a port number or a server endpoint string.",
        ],
        [
            "peers",
            None,
            None,
            "Comma-separated cluster ports of other nodes: host:port or client endpoint strings.",
        ],
        [
            "node-name",
            None,
            None,
            "This node's name in the cluster (default: host:cluster-port).",
        ],
        ["cluster-secret", None, None, "Shared secret that cluster peers must know."],
        ["cluster-secret-file", None, None, "Read the cluster secret from this file."],
        [
            "cluster-advertise",
            None,
            None,
            "host:port at which other nodes reach this node's cluster port (default: the cluster port's interface, or this host's name).",
        ],
        [
            "heartbeat-timeout",
            None,
            60.0,
            "Close sockets that send nothing for this many seconds.",
        ],
        [
            "max-frame-size",
            None,
            8 * 1024 * 1024,
            "Largest inbound WebSocket message in bytes; larger closes with 1009.",
        ],
        ["max-channels", None, 100, "Most channels one socket may join."],
        [
            "max-message-rate",
            None,
            100.0,
            "Inbound events (messages, heartbeats, WebSocket pings) per second per socket; past it a push gets the error reply 'rate limited', and far past it (10x) the socket is closed with 1008. 0: no limit.",
            _limit(float, "max-message-rate", off=True),
        ],
        [
            "message-burst",
            None,
            200.0,
            "Events a socket may send at once beyond --max-message-rate.",
            _limit(float, "message-burst"),
        ],
        [
            "max-join-rate",
            None,
            10.0,
            "Joins per second per socket; past it a join gets the error reply 'join rate limited'. 0: no limit.",
            _limit(float, "max-join-rate", off=True),
        ],
        [
            "join-burst",
            None,
            100.0,
            "Joins a socket may send at once beyond --max-join-rate.",
            _limit(float, "join-burst"),
        ],
        [
            "max-topic-bytes",
            None,
            1024,
            "Longest topic in UTF-8 bytes; a message naming a longer one gets an error reply.",
            _limit(int, "max-topic-bytes"),
        ],
        [
            "check-origin",
            None,
            "host",
            "Origin check: 'host' (origin host equals Host header), 'off', or comma-separated allowed origins (https://example.com,//*.example.com).",
        ],
        ["broadcast-period", None, 1.5, "Presence: seconds between replication ticks."],
        [
            "max-silent-periods",
            None,
            10,
            "Presence: ticks without changes before an empty heartbeat.",
        ],
        [
            "down-period",
            None,
            30.0,
            "Presence: seconds of silence before a peer is down.",
        ],
        [
            "permdown-period",
            None,
            1200.0,
            "Presence: seconds before a down peer's presences are deleted.",
        ],
    ]

    def postOptions(self) -> None:
        """
        Check everything here, so that bad input is a one-line usage error
        rather than a traceback later.
        """
        for name, kind in _NUMBERS.items():
            value = self[name]
            if isinstance(value, str):
                try:
                    value = kind(value)
                except ValueError:
                    value = 0
                # NaN compares false with everything; inf is no limit
                if not math.isfinite(value) or value <= 0:
                    what = "integer" if kind is int else "number"
                    raise usage.UsageError(
                        f"--{name}: expected a positive {what}, not {self[name]!r}"
                    )
                self[name] = value
        self["port"] = _server_endpoint("port", self["port"])
        if self["app"] is not None:
            try:
                self["loaded_app"] = load_app(self["app"])
            except ValueError as error:
                raise usage.UsageError(f"--app: {error}") from None
        origin = self["check-origin"].strip()
        if origin in ("off", "false", "none"):
            self["origin_rule"] = None
        elif origin in ("host", "true"):
            self["origin_rule"] = "host"
        else:
            self["origin_rule"] = [o.strip() for o in origin.split(",") if o.strip()]
        self["cluster"] = self._cluster_config()
        if self["down-period"] < 2 * self["broadcast-period"]:
            raise usage.UsageError(
                "--down-period must be at least twice --broadcast-period"
            )
        if self["permdown-period"] <= self["down-period"]:
            raise usage.UsageError(
                "--permdown-period must be longer than --down-period"
            )
        if self["levee"] and self["cluster"] is not None:
            raise usage.UsageError(
                "--levee is single-node for now (each node would sequence the same "
                "documents on its own): run Levee on a node without --cluster-port"
            )
        if self["levee-insecure-dev-tokens"] and not self["levee"]:
            raise usage.UsageError("--levee-insecure-dev-tokens needs --levee")

    def _cluster_config(self) -> ClusterConfig | None:
        port = self["cluster-port"]
        if port is None:
            for name in (
                "peers",
                "cluster-secret",
                "cluster-secret-file",
                "cluster-advertise",
            ):
                if self[name] is not None:
                    raise usage.UsageError(f"--{name} needs --cluster-port")
            return None
        listen = _server_endpoint("cluster-port", port)
        try:
            peers = tuple(
                peer_endpoint_description(peer)
                for peer in re.split(r"[,\s]+", self["peers"] or "")
                if peer
            )
        except ValueError as error:
            raise usage.UsageError(f"--peers: {error}") from None
        if (
            self["cluster-secret"] is not None
            and self["cluster-secret-file"] is not None
        ):
            raise usage.UsageError(
                "give --cluster-secret or --cluster-secret-file, not both"
            )
        secret: bytes | None = None
        if self["cluster-secret"] is not None:
            secret = self["cluster-secret"].encode("utf-8")
        elif self["cluster-secret-file"] is not None:
            try:
                with open(self["cluster-secret-file"], "rb") as file:
                    secret = file.read().strip()
            except OSError as error:
                raise usage.UsageError(
                    f"--cluster-secret-file: {error.strerror}"
                ) from None
            if not secret:
                raise usage.UsageError("--cluster-secret-file: the file is empty")
        host, number = _listen_address(listen)
        advertise_text = self["cluster-advertise"] or f"{host}:{number}"
        try:
            advertise = peer_endpoint_description(advertise_text)
        except ValueError as error:
            raise usage.UsageError(f"--cluster-advertise: {error}") from None
        return ClusterConfig(
            node_name=self["node-name"] or default_node_name(number),
            listen=listen,
            peers=peers,
            advertise=advertise,
            secret=secret,
        )


def make_beryl_service(options: Options, reactor: Any) -> MultiService:
    """
    Build the service tree: Beryl's services, then the web listener last.
    """
    app = options.get("loaded_app") or _demo()
    if options["levee"]:
        from beryl.levee.auth import token_validator
        from beryl.levee.channel import mount_levee

        mount_levee(
            app,
            clock=reactor,
            validate=token_validator(
                insecure_dev_tokens=options["levee-insecure-dev-tokens"], clock=reactor
            ),
        )
    server = make_server(
        app,
        reactor,
        max_channels=options["max-channels"],
        max_message_rate=options["max-message-rate"],
        message_burst=options["message-burst"],
        max_join_rate=options["max-join-rate"],
        join_burst=options["join-burst"],
        max_topic_bytes=options["max-topic-bytes"],
        idle_timeout=options["heartbeat-timeout"],
        check_origin=options["origin_rule"],
        max_frame_size=options["max-frame-size"],
        cluster=options["cluster"],
        presence=PresenceTimings(
            broadcast_period=options["broadcast-period"],
            max_silent_periods=options["max-silent-periods"],
            down_period=options["down-period"],
            permdown_period=options["permdown-period"],
        ),
    )
    top = server.service
    site = Site(root_resource(server.websocket_factory, demo=options["app"] is None))
    web = strports.service(options["port"], site, reactor=reactor)
    web.name = "web"
    top.addService(web)
    return top


def _demo() -> App:
    from beryl.demo import demo_app

    return demo_app()


def makeService(options: Options) -> IService:
    """
    The twistd entry point.
    """
    from twisted.internet import reactor

    return make_beryl_service(options, reactor)
