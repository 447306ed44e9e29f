"""
C{twistd beryl}: command-line options and the composition root.

L{makeService} is the one place that imports the global reactor; it hands
it to L{make_beryl_service}, which tests call with a fake reactor.
"""

from __future__ import annotations

import importlib
from typing import Any

from twisted.application import strports
from twisted.application.service import IService, MultiService
from twisted.internet.endpoints import serverFromString
from twisted.internet.testing import MemoryReactor
from twisted.python import usage
from twisted.web.server import Site

from beryl.app import App
from beryl.server import make_server
from beryl.web import root_resource

__all__ = ["Options", "load_app", "make_beryl_service", "makeService"]


def _positive_float(value: str) -> float:
    number = float(value)
    if number <= 0:
        raise ValueError("must be a positive number")
    return number


_positive_float.coerceDoc = "A positive number of seconds."  # type: ignore[attr-defined]


def _positive_int(value: str) -> int:
    number = int(value)
    if number <= 0:
        raise ValueError("must be a positive integer")
    return number


_positive_int.coerceDoc = "A positive integer."  # type: ignore[attr-defined]


def endpoint_description(value: str) -> str:
    """
    A bare port number means TCP on every interface; anything else is a
    Twisted server endpoint string.
    """
    value = value.strip()
    return f"tcp:{value}" if value.isdigit() else value


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

    optParameters = [
        ["port", "p", "4000", "Listen here: a port number or a Twisted server endpoint string (tcp:4000:interface=127.0.0.1, ssl:...)."],
        ["app", "a", None, "The application to serve, as package.module:attribute (a beryl.App or a function returning one)."],
        ["cluster-port", None, None, "Listen for cluster peers here: a port number or a server endpoint string."],
        ["peers", None, None, "Comma-separated cluster ports of other nodes: host:port or client endpoint strings."],
        ["node-name", None, None, "This node's name in the cluster (default: host:cluster-port)."],
        ["cluster-secret", None, None, "Shared secret that cluster peers must know."],
        ["cluster-secret-file", None, None, "Read the cluster secret from this file."],
        ["heartbeat-timeout", None, 60.0, "Close sockets that send nothing for this many seconds.", _positive_float],
        ["max-frame-size", None, 8 * 1024 * 1024, "Largest inbound WebSocket message in bytes; larger closes with 1009.", _positive_int],
        ["max-channels", None, 100, "Most channels one socket may join.", _positive_int],
        ["check-origin", None, "host", "Origin check: 'host' (origin host equals Host header), 'off', or comma-separated allowed origins (https://example.com,//*.example.com)."],
        ["broadcast-period", None, 1.5, "Presence: seconds between replication ticks.", _positive_float],
        ["max-silent-periods", None, 10, "Presence: ticks without changes before an empty heartbeat.", _positive_int],
        ["down-period", None, 30.0, "Presence: seconds of silence before a peer is down.", _positive_float],
        ["permdown-period", None, 1200.0, "Presence: seconds before a down peer's presences are deleted.", _positive_float],
    ]

    def postOptions(self) -> None:
        """
        Check everything here, so that bad input is a one-line usage error
        rather than a traceback later.
        """
        self["port"] = endpoint_description(self["port"])
        try:
            serverFromString(MemoryReactor(), self["port"])
        except (ValueError, TypeError, KeyError) as error:
            raise usage.UsageError(f"--port: {error}") from None
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
        for name in ("cluster-port", "peers", "node-name", "cluster-secret", "cluster-secret-file"):
            if self[name] is not None:
                raise usage.UsageError(f"--{name}: clustering is not available yet")


def make_beryl_service(options: Options, reactor: Any) -> MultiService:
    """
    Build the service tree: Beryl's services, then the web listener last.
    """
    app = options.get("loaded_app") or _demo()
    server = make_server(
        app,
        reactor,
        max_channels=options["max-channels"],
        idle_timeout=options["heartbeat-timeout"],
        check_origin=options["origin_rule"],
        max_frame_size=options["max-frame-size"],
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
