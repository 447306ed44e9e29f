"""
C{twistd beryl}: command-line options and the composition root.

L{makeService} is the one place that imports the global reactor; it hands
it to L{make_beryl_service}, which tests call with a fake reactor.
"""

from __future__ import annotations

import importlib
import math
import os
import re
import socket
import sys
from collections.abc import Callable, Mapping, Sequence
from typing import Any, NoReturn

from twisted.application.internet import StreamServerEndpointService
from twisted.application.service import IService, MultiService
from twisted.internet.endpoints import serverFromString
from twisted.internet.error import CannotListenError
from twisted.internet.protocol import Factory
from twisted.internet.testing import MemoryReactor
from twisted.python import usage
from twisted.web.server import Site

from beryl.app import App
from beryl.backplane import default_backplane_node_name, parse_backplane_url
from beryl.cluster import default_node_name, peer_endpoint_description
from beryl.health import Readiness
from beryl.presence.tracker import PARAMETER_NAMES, timings_problem
from beryl.server import ClusterConfig, PresenceTimings, make_server
from beryl.transport.edge import GuardedSite
from beryl.web import access_log_formatter, metrics_root, root_resource
from beryl.workers import WorkerRole, check_worker_options, make_supervisor

__all__ = [
    "ENVIRONMENT_PREFIX",
    "Options",
    "load_app",
    "make_beryl_service",
    "makeService",
    "tls_available",
]

ENVIRONMENT_PREFIX = "BERYL_"
"""
Every option can also be set as C{BERYL_<OPTION>}: C{--cluster-secret} is
C{BERYL_CLUSTER_SECRET}.  The command line wins.
"""

_TLS_TYPES = frozenset({"ssl", "tls"})
_TLS_HINT = "TLS needs pyOpenSSL and service_identity: pip install 'beryl[tls]'"
_ENDPOINT_HINT = (
    "give a port number or a Twisted endpoint string such as "
    "tcp:4000:interface=127.0.0.1"
)


def _positive(kind: type[int] | type[float], option: str) -> Callable[[str], Any]:
    """
    A C{usage.Options} coerce function for a positive, finite number.
    """
    what = "integer" if kind is int else "number"

    def coerce(text: str) -> int | float:
        try:
            value = kind(text)
        except ValueError:
            value = 0
        if not (math.isfinite(value) and value > 0):
            raise ValueError(f"--{option}: expected a positive {what}, not {text!r}")
        return value

    coerce.coerceDoc = f"A positive {what}."  # type: ignore[attr-defined]
    return coerce


def _seconds(option: str) -> Callable[[str], float]:
    """
    A C{usage.Options} coerce function for a finite number of seconds,
    zero or more.
    """

    def coerce(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            value = -1.0
        if not (math.isfinite(value) and value >= 0):
            raise ValueError(f"--{option}: expected 0 or more seconds, not {text!r}")
        return value

    coerce.coerceDoc = "0 or more seconds."  # type: ignore[attr-defined]
    return coerce


def _not_negative(option: str) -> Callable[[str], int]:
    """
    A C{usage.Options} coerce function for an integer limit where C{0}
    turns the limit off.
    """

    def coerce(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            value = -1
        if value < 0:
            raise ValueError(f"--{option}: expected 0 (off) or more, not {text!r}")
        return value

    coerce.coerceDoc = "0 (off) or a positive integer."  # type: ignore[attr-defined]
    return coerce


def tls_available() -> bool:
    """
    Whether Twisted's TLS support (pyOpenSSL and service_identity, the
    C{beryl[tls]} extra) can be imported.
    """
    try:
        importlib.import_module("OpenSSL")
        importlib.import_module("service_identity")
    except ImportError:
        return False
    return True


def _endpoint_type(description: str) -> str:
    """
    The endpoint type of a description: C{tcp}, C{ssl}, C{unix}...
    """
    return description.partition(":")[0].strip().lower()


def _rate(option: str) -> Callable[[str], Any]:
    """
    A C{usage.Options} coerce function for a rate limit: a positive, finite
    number, or C{0} for no limit.
    """

    def coerce(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            value = -1.0
        if not (math.isfinite(value) and value >= 0):
            raise ValueError(
                f"--{option}: expected a positive number or 0 (no limit), not {text!r}"
            )
        return value

    coerce.coerceDoc = "A positive number, or 0 for no limit."  # type: ignore[attr-defined]
    return coerce


def endpoint_description(value: str) -> str:
    """
    A bare port number means TCP on every interface; anything else is a
    Twisted server endpoint string.
    """
    value = value.strip()
    return f"tcp:{value}" if value.isdigit() else value


def _listening(option: str, description: str) -> MemoryReactor:
    """
    Parse a server endpoint description with Twisted's parser and listen on
    a C{MemoryReactor}, which records what a real listen would do.

    @raise usage.UsageError: naming the option, when the description does
        not parse, needs TLS support that is not installed, or names a
        port out of range.
    """
    if _endpoint_type(description) in _TLS_TYPES and not tls_available():
        raise usage.UsageError(f"--{option}: {description!r}: {_TLS_HINT}")
    reactor = MemoryReactor()
    try:
        endpoint = serverFromString(reactor, description)
    except ImportError:
        raise usage.UsageError(f"--{option}: {description!r}: {_TLS_HINT}") from None
    except OSError as error:
        raise usage.UsageError(
            f"--{option}: {description!r}: cannot read {error.filename or 'a file'}: "
            f"{error.strerror}; check the certificate and key paths"
        ) from None
    except Exception as error:
        raise usage.UsageError(
            f"--{option}: {description!r} is not an endpoint ({error}); "
            + _ENDPOINT_HINT
        ) from None
    endpoint.listen(Factory())
    for port in [row[0] for row in reactor.tcpServers + reactor.sslServers]:
        if not 0 <= port <= 65535:
            raise usage.UsageError(
                f"--{option}: {port} is not a port number; give one from 1 to 65535"
            )
    return reactor


def _server_endpoint(option: str, value: str) -> str:
    """
    The server endpoint description an option names, checked with
    Twisted's endpoint parser.

    @raise usage.UsageError: naming the option, when it cannot be used.
    """
    description = endpoint_description(value)
    _listening(option, description)
    return description


def _host_port(host: str, port: int) -> str:
    """
    C{host:port}, with brackets around an IPv6 address.
    """
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def _listen_address(description: str) -> tuple[str, int]:
    """
    The host and port a TCP or TLS server endpoint description listens on:
    its interface when one is given (and not a wildcard), else this host's
    name.

    @raise usage.UsageError: when the description has no port.
    """
    reactor = _listening("cluster-port", description)
    rows = [(row[0], row[-1]) for row in reactor.tcpServers + reactor.sslServers]
    if not rows:
        raise usage.UsageError(
            f"--cluster-port: {description!r} has no port number; use a TCP or "
            "TLS endpoint such as tcp:4001"
        )
    port, interface = rows[0]
    if interface in ("", "0.0.0.0", "::"):
        interface = socket.gethostname()
    return interface, port


def load_app(spec: str) -> App:
    """
    Import C{package.module:attribute}: an L{App}, or a callable returning
    one.

    @raise ValueError: with a one-line reason when that fails.
    """
    module_name, colon, attribute = spec.partition(":")
    if not colon or not module_name or not attribute:
        raise ValueError(f"{spec!r} is not of the form package.module:attribute")
    cwd = os.getcwd()
    if cwd not in sys.path and "" not in sys.path:
        # As for twistd -y and python -m: the user's own directory first.
        sys.path.insert(0, cwd)
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


def _variable(option: str) -> str:
    """
    The environment variable for an option: C{--cluster-secret} is
    C{BERYL_CLUSTER_SECRET}.
    """
    return ENVIRONMENT_PREFIX + option.upper().replace("-", "_")


def _one_line(message: str) -> str:
    """
    A usage error's text without Twisted's prefixes, on one line.
    """
    message = message.removeprefix("Parameter type enforcement failed: ")
    if message.startswith("option --") and message.endswith(" not recognized"):
        message += "; check its spelling"
    return " ".join(message.split())


def _command() -> str:
    """
    How the user ran us: C{twistd beryl} or C{twist beryl}.
    """
    program = os.path.basename(sys.argv[0]) if sys.argv and sys.argv[0] else ""
    return f"{program or 'twistd'} beryl"


def _exit_with_usage_error(message: str) -> NoReturn:
    """
    Print a usage error in one line, then a hint to run C{--help}, and exit
    with status 2.
    """
    command = _command()
    sys.stderr.write(
        f"{command}: {message}\nRun '{command} --help' for every option.\n"
    )
    sys.stderr.flush()
    raise SystemExit(2)


class Options(usage.Options):
    """
    Options of C{twistd beryl}.
    """

    synopsis = "[options]"
    longdesc = (
        "Serve Phoenix Channels over WebSocket at /socket/websocket and long-poll "
        "at /socket/longpoll. Without "
        "--app, the built-in demo (a chat page at / with room:* and feed:* "
        "channels) is served. Every option can also be set in the environment "
        "as BERYL_<OPTION> (BERYL_PORT=4100, BERYL_CLUSTER_SECRET=..., "
        "BERYL_LEVEE=1); the command line wins."
    )

    environ: Mapping[str, str] = os.environ
    """Where C{BERYL_<OPTION>} variables are read; tests replace it."""

    optFlags: list[list[Any]] = [
        [
            "no-longpoll",
            None,
            "Do not serve the long-poll transport at /socket/longpoll.",
        ],
        ["no-metrics", None, "Keep no Prometheus metrics and serve no /metrics."],
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
        [
            "levee-dev-token-mint",
            None,
            "With --levee: POST /api/tenants/{t}/token-mint signs tokens for the configured tenants, for anyone (development only).",
        ],
    ]

    optParameters: list[list[Any]] = [
        [
            "levee-data",
            None,
            "./levee-data",
            "With --levee: keep documents, summaries and ops in this directory (SQLite); ':memory:' keeps nothing.",
        ],
        [
            "levee-tenants-file",
            None,
            None,
            "With --levee: read TENANT:SECRET lines (HS256 token secrets) from this file.",
        ],
        [
            "port",
            "p",
            "4000",
            "Listen here: a port number or a Twisted server endpoint string (tcp:4000:interface=127.0.0.1; ssl:443:privateKey=key.pem:certKey=cert.pem needs beryl[tls]).",
        ],
        [
            "app",
            "a",
            None,
            "The application to serve, as package.module:attribute (a beryl.App or a function returning one); the current directory is on the import path.",
        ],
        [
            "workers",
            None,
            "1",
            "Worker processes sharing the port, each a full node clustered with the others; 'auto' is one per core.",
        ],
        [
            "backplane",
            None,
            None,
            "Link the nodes through Redis instead of the AMP mesh: redis://[:password@]host:port/db or rediss://...",
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
            _positive(float, "heartbeat-timeout"),
        ],
        [
            "max-frame-size",
            None,
            8 * 1024 * 1024,
            "Largest inbound WebSocket message in bytes; larger closes with 1009.",
            _positive(int, "max-frame-size"),
        ],
        [
            "max-channels",
            None,
            100,
            "Most channels one socket may join.",
            _positive(int, "max-channels"),
        ],
        [
            "handshake-timeout",
            None,
            10.0,
            "Seconds a client may take for its whole HTTP request or WebSocket upgrade.",
            _positive(float, "handshake-timeout"),
        ],
        [
            "max-connections-per-ip",
            None,
            0,
            "Most open connections from one IP address, per process (0: no limit).",
            _not_negative("max-connections-per-ip"),
        ],
        [
            "metrics-port",
            None,
            None,
            "Serve /metrics here instead of on --port: a port number or a server endpoint string (tcp:9100:interface=127.0.0.1).",
        ],
        [
            "drain-seconds",
            None,
            0.0,
            "On SIGTERM: answer /ready with 503 and refuse new sockets at once, wait this many seconds, then close the remaining sockets with 1001.",
            _seconds("drain-seconds"),
        ],
        [
            "ready-grace",
            None,
            30.0,
            "/ready waits for the --peers to be up, but at most this many seconds after start.",
            _positive(float, "ready-grace"),
        ],
        [
            "longpoll-timeout",
            None,
            10.0,
            "Long-poll: seconds a poll is held when nothing is waiting.",
            _positive(float, "longpoll-timeout"),
        ],
        [
            "longpoll-idle-timeout",
            None,
            15.0,
            "Long-poll: end a session not polled for this many seconds.",
            _positive(float, "longpoll-idle-timeout"),
        ],
        [
            "max-message-rate",
            None,
            100.0,
            "Inbound events (messages, heartbeats, WebSocket pings) per second per socket; past it a push gets the error reply 'rate limited', and far past it (10x) the socket is closed with 1008. 0: no limit.",
            _rate("max-message-rate"),
        ],
        [
            "message-burst",
            None,
            200.0,
            "Events a socket may send at once beyond --max-message-rate.",
            _positive(float, "message-burst"),
        ],
        [
            "max-join-rate",
            None,
            10.0,
            "Joins per second per socket; past it a join gets the error reply 'join rate limited'. 0: no limit.",
            _rate("max-join-rate"),
        ],
        [
            "join-burst",
            None,
            100.0,
            "Joins a socket may send at once beyond --max-join-rate.",
            _positive(float, "join-burst"),
        ],
        [
            "max-topic-bytes",
            None,
            1024,
            "Longest topic in UTF-8 bytes; a message naming a longer one gets an error reply.",
            _positive(int, "max-topic-bytes"),
        ],
        [
            "check-origin",
            None,
            "host",
            "Origin check: 'host' (origin host equals Host header), 'off', or comma-separated allowed origins (https://example.com,//*.example.com).",
        ],
        [
            "broadcast-period",
            None,
            1.5,
            "Presence: seconds between replication ticks.",
            _positive(float, "broadcast-period"),
        ],
        [
            "max-silent-periods",
            None,
            10,
            "Presence: ticks without changes before an empty heartbeat.",
            _positive(int, "max-silent-periods"),
        ],
        [
            "down-period",
            None,
            30.0,
            "Presence: seconds of silence before a peer is down.",
            _positive(float, "down-period"),
        ],
        [
            "permdown-period",
            None,
            1200.0,
            "Presence: seconds before a down peer's presences are deleted.",
            _positive(float, "permdown-period"),
        ],
    ]

    def parseOptions(self, options: Sequence[str] | None = None) -> None:
        """
        Parse C{BERYL_<OPTION>} variables, then the command line (which
        wins, coming later).

        Under C{twistd} or C{twist} (when this is a subcommand), a usage
        error is reported in one line naming the option and the fix, and a
        hint to run C{--help}, instead of the whole usage text.
        """
        argv = list(sys.argv[1:] if options is None else options)
        # Kept as given, for the worker processes of --workers.
        self["argv"] = argv
        from_environment = self._environment_arguments()
        try:
            super().parseOptions(from_environment + argv)  # type: ignore[no-untyped-call]
        except usage.UsageError as error:
            message = _one_line(str(error))
            for name in self._environment_names:
                given = any(
                    a == f"--{name}" or a.startswith(f"--{name}=") for a in argv
                )
                if not given and f"--{name}" in message:
                    message += f" (set by {_variable(name)})"
                    break
            if getattr(self, "parent", None) is None:
                raise usage.UsageError(message) from None
            _exit_with_usage_error(message)

    def _environment_arguments(self) -> list[str]:
        """
        The options set in the environment, as command-line arguments.
        """
        self._environment_names: list[str] = []
        arguments: list[str] = []
        for flag in self.optFlags:
            name = str(flag[0])
            value = self.environ.get(_variable(name))
            if value is None:
                continue
            switch = value.strip().lower()
            if switch in ("1", "true", "yes", "on"):
                arguments.append(f"--{name}")
                self._environment_names.append(name)
            elif switch not in ("", "0", "false", "no", "off"):
                raise usage.UsageError(
                    f"{_variable(name)}: expected 1/true/yes/on or 0/false/no/off, "
                    f"not {value!r}"
                )
        for parameter in self.optParameters:
            name = str(parameter[0])
            value = self.environ.get(_variable(name))
            if value is not None:
                arguments.append(f"--{name}={value}")
                self._environment_names.append(name)
        return arguments

    def opt_levee_tenant(self, value: str) -> None:
        """
        With --levee: accept HS256 tokens of tenant ID signed with SECRET
        (ID:SECRET; repeatable).
        """
        from beryl.levee.auth import parse_tenants

        try:
            self.setdefault("levee-tenants", {}).update(parse_tenants([value]))
        except ValueError:
            raise usage.UsageError("--levee-tenant: expected ID:SECRET") from None

    def _levee_options(self) -> None:
        from beryl.levee.auth import parse_tenants

        tenants = self.setdefault("levee-tenants", {})
        path = self["levee-tenants-file"]
        if path is not None:
            try:
                with open(path, encoding="utf-8") as file:
                    tenants.update(parse_tenants(file.read().splitlines()))
            except OSError as error:
                raise usage.UsageError(
                    f"--levee-tenants-file: {error.strerror}"
                ) from None
            except ValueError as error:
                raise usage.UsageError(f"--levee-tenants-file: {error}") from None
        if not self["levee"]:
            for name in ("levee-insecure-dev-tokens", "levee-dev-token-mint"):
                if self[name]:
                    raise usage.UsageError(f"--{name} needs --levee")
            if tenants:
                raise usage.UsageError(
                    "--levee-tenant and --levee-tenants-file need --levee"
                )
            if self["levee-data"] != "./levee-data":
                raise usage.UsageError("--levee-data needs --levee")
        if self["levee-dev-token-mint"] and not tenants:
            raise usage.UsageError(
                "--levee-dev-token-mint needs --levee-tenant or --levee-tenants-file"
            )

    def postOptions(self) -> None:
        """
        Check everything here, so that bad input is a one-line usage error
        rather than a traceback later.
        """
        self["port"] = _server_endpoint("port", self["port"])
        if self["metrics-port"] is not None:
            if self["no-metrics"]:
                raise usage.UsageError("give --metrics-port or --no-metrics, not both")
            self["metrics-port"] = _server_endpoint(
                "metrics-port", self["metrics-port"]
            )
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
        problem = timings_problem(
            self["broadcast-period"],
            self["max-silent-periods"],
            self["down-period"],
            self["permdown-period"],
            names={name: "--" + name.replace("_", "-") for name in PARAMETER_NAMES},
        )
        if problem is not None:
            raise usage.UsageError(problem)
        if self["levee"] and self["cluster"] is not None:
            raise usage.UsageError(
                "--levee is single-node for now (each node would sequence the same "
                "documents on its own): run Levee on a node without --cluster-port"
            )
        self._levee_options()
        self["backplane_config"] = None
        if self["backplane"] is not None:
            if self["cluster"] is not None:
                raise usage.UsageError("give --backplane or --cluster-port, not both")
            if self["levee"]:
                raise usage.UsageError(
                    "--levee is single-node: run it on a node without --backplane"
                )
            try:
                self["backplane_config"] = parse_backplane_url(self["backplane"])
            except ValueError as error:
                raise usage.UsageError(f"--backplane: {error}") from None
        self["workers"] = check_worker_options(self)

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
        names = [peer for peer in re.split(r"[,\s]+", self["peers"] or "") if peer]
        for peer in names:
            if _endpoint_type(peer) in _TLS_TYPES and not tls_available():
                raise usage.UsageError(f"--peers: {peer!r}: {_TLS_HINT}")
        try:
            peers = tuple(peer_endpoint_description(peer) for peer in names)
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
        advertise_text = self["cluster-advertise"] or _host_port(host, number)
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


class _ReadySite(GuardedSite):
    """
    The client-facing site: the node counts as listening (for C{/ready})
    once its port has started.
    """

    def __init__(
        self, resource: Any, guard: Any, readiness: Readiness | None, **kwargs: Any
    ) -> None:
        super().__init__(resource, guard, **kwargs)
        self._readiness = readiness

    def startFactory(self) -> None:
        super().startFactory()
        if self._readiness is not None:
            self._readiness.mark_listening()


class _ListenService(StreamServerEndpointService):
    """
    A listener whose failure to listen (the port is in use, or needs
    privileges) stops C{twistd} with one line naming the option, not a
    traceback.
    """

    def __init__(
        self, option: str, description: str, endpoint: Any, factory: Any
    ) -> None:
        super().__init__(endpoint, factory)  # type: ignore[no-untyped-call]
        self._raiseSynchronously = True
        self._option = option
        self._description = description

    def privilegedStartService(self) -> None:
        try:
            super().privilegedStartService()  # type: ignore[no-untyped-call]
        except CannotListenError as error:
            reason = getattr(error.socketError, "strerror", None) or str(
                error.socketError
            )
            command = _command()
            raise SystemExit(
                f"{command}: --{self._option}: cannot listen on "
                f"{self._description!r}: {reason}; stop what uses it or choose "
                f"another --{self._option}\nRun '{command} --help' for every option."
            ) from None


def make_beryl_service(options: Options, reactor: Any) -> MultiService:
    """
    Build the service tree: Beryl's services, then the web listener last.
    With C{--workers} above one this process is the workers' parent, or
    (told so by its parent) one of the workers.
    """
    worker = WorkerRole.from_environment() if options.get("workers", 1) > 1 else None
    if options.get("workers", 1) > 1 and worker is None:
        return make_supervisor(options, reactor)
    backplane = options.get("backplane_config")
    node_name = options["node-name"] or (
        default_backplane_node_name() if backplane is not None else "beryl"
    )
    if worker is not None:
        if backplane is None:
            options["cluster"] = worker.cluster_config(
                options["node-name"], options["cluster"]
            )
        else:
            # Over a backplane the workers need no links of their own.
            node_name = (
                f"{options['node-name'] or socket.gethostname()}-w{worker.index}"
            )
    app = options.get("loaded_app") or _demo()
    children = {}
    if options["levee"]:
        from beryl.levee.auth import token_validator
        from beryl.levee.service import serve_levee

        tenants = options.get("levee-tenants", {})
        levee = serve_levee(
            app,
            reactor,
            validate=token_validator(
                insecure_dev_tokens=options["levee-insecure-dev-tokens"],
                clock=reactor,
                tenants=tenants,
            ),
            data=options["levee-data"],
            mint_secrets=tenants if options["levee-dev-token-mint"] else None,
        )
        children = levee.resources()
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
        handshake_timeout=options["handshake-timeout"],
        max_connections_per_address=options["max-connections-per-ip"],
        cluster=options["cluster"],
        longpoll=not options["no-longpoll"],
        longpoll_timeout=options["longpoll-timeout"],
        longpoll_idle_timeout=options["longpoll-idle-timeout"],
        metrics=not options["no-metrics"],
        ready_grace=options["ready-grace"],
        drain_seconds=options["drain-seconds"],
        backplane=backplane,
        node_name=node_name,
        presence=PresenceTimings(
            broadcast_period=options["broadcast-period"],
            max_silent_periods=options["max-silent-periods"],
            down_period=options["down-period"],
            permdown_period=options["permdown-period"],
        ),
    )
    top = server.service
    separate_metrics = options["metrics-port"] is not None
    site = _ReadySite(
        root_resource(
            server.websocket_factory,
            demo=options["app"] is None,
            children=children,
            longpoll=server.longpoll,
            readiness=server.readiness,
            metrics=None if separate_metrics else server.metrics,
        ),
        server.websocket_factory.guard,
        server.readiness,
        logFormatter=access_log_formatter,
    )
    if separate_metrics and server.metrics is not None:
        metrics = _ListenService(
            "metrics-port",
            options["metrics-port"],
            serverFromString(reactor, options["metrics-port"]),
            Site(metrics_root(server.metrics)),
        )
        metrics.name = "metrics"
        top.addService(metrics)
    web = (
        _ListenService(
            "port", options["port"], serverFromString(reactor, options["port"]), site
        )
        if worker is None
        else worker.web_service(site, options["port"], reactor)
    )
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

    from beryl.logs import LogBurstLimitService

    service = make_beryl_service(options, reactor)
    LogBurstLimitService(reactor).setServiceParent(service)  # type: ignore[no-untyped-call]
    if options["cluster"] is not None and options["workers"] == 1:
        # (The parent of --workers listens on no cluster port: its workers do.)
        _exit_if_cannot_listen(service.getServiceNamed("cluster"), reactor)
    return service


def _exit_if_cannot_listen(cluster: Any, reactor: Any) -> None:
    """
    A node that cannot listen on its cluster port (in use, or needing
    privileges) would run without its cluster: say so in one line naming
    --cluster-port, and exit with status 1.
    """

    def failed(failure: Any) -> None:
        if not failure.check(CannotListenError):
            return
        error = failure.value
        reason = getattr(error.socketError, "strerror", None) or str(error.socketError)
        command = _command()
        sys.stderr.write(
            f"{command}: --cluster-port: cannot listen on port {error.port}: "
            f"{reason}; stop what uses it or choose another --cluster-port\n"
            f"Run '{command} --help' for every option.\n"
        )
        sys.stderr.flush()
        reactor.addSystemEventTrigger("after", "shutdown", os._exit, 1)
        reactor.callWhenRunning(reactor.stop)

    cluster.when_listening().addErrback(failed)
