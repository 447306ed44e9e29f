"""
C{twistd beryl --workers N}: one public port served by N worker processes,
each a full Beryl node (coordinator, pubsub, presence), clustered with each
other over UNIX sockets.

Each worker listens on the public port with a socket of its own and
C{SO_REUSEPORT}, so the kernel spreads new connections evenly over the
workers (by a hash of the client's address and port); the parent binds the
port too (without listening) so that it is known to be free and stays
reserved while workers restart.  (Sharing one listening socket instead,
inherited from the parent, spreads connections by which worker wakes first
and was measured as much less even: see C{bench/workers.py --spread}.)
The parent process (L{WorkerSupervisor}) spawns the workers as C{twistd beryl} processes with the same
options, relays their logs with C{worker N} as the log system, restarts a
worker that dies and, on SIGTERM, stops (drains) every worker before it
exits.  A worker knows its role from the environment the parent gives it
(L{WorkerRole.from_environment}).
"""

from __future__ import annotations

import os
import re
import secrets
import shutil
import signal
import socket
import sys
import tempfile
from typing import Any, Mapping, Sequence

import attrs
from twisted.application.service import MultiService, Service
from twisted.internet.defer import Deferred, DeferredList
from twisted.internet.error import ProcessDone, ProcessExitedAlready
from twisted.internet.interfaces import IDelayedCall, IListeningPort
from twisted.internet.protocol import ProcessProtocol
from twisted.internet.task import LoopingCall
from twisted.logger import (
    ILogObserver,
    Logger,
    eventAsJSON,
    eventFromJSON,
    globalLogPublisher,
)
from twisted.python import usage
from twisted.python.failure import Failure
from zope.interface import provider

from beryl.server import ClusterConfig

__all__ = [
    "ListenAddress",
    "WorkerRole",
    "WorkerSupervisor",
    "check_worker_options",
    "parse_workers",
    "worker_log_observer",
]

ROLE_ENV = "BERYL_WORKER"
"""C{index/count} of a worker process (1-based); absent in the parent."""
DIRECTORY_ENV = "BERYL_WORKER_DIR"
"""The private directory of the workers' cluster sockets."""
SECRET_ENV = "BERYL_WORKER_SECRET"
"""The generated secret of the workers' local cluster links."""
FD_ENV = "BERYL_WORKER_FD"
"""The inherited listening socket's descriptor, when the parent shares one."""
PORT_ENV = "BERYL_WORKER_PORT"
"""The public port number (the one bound, when C{--port} asked for 0)."""
SOCKETS_ENV = "BERYL_WORKER_SOCKETS"
"""C{reuseport} (default: one C{SO_REUSEPORT} socket per worker) or
C{inherit} (the parent's socket, shared); a knob for the benchmark that
compares the two, and a fallback where C{SO_REUSEPORT} is missing."""

_LISTEN_FD = 3

# Runs twistd with this very interpreter, wherever its console scripts are.
_TWISTD = (
    "import sys; from twisted.scripts.twistd import run; sys.argv[0] = 'twistd'; run()"
)


def parse_workers(value: str | int) -> int:
    """
    The number of workers C{--workers} asks for: a positive integer, or
    C{auto} for the number of cores this process may run on.

    @raise usage.UsageError: naming the option, for anything else.
    """
    text = str(value).strip().lower()
    if text == "auto":
        try:
            return max(1, len(os.sched_getaffinity(0)))
        except AttributeError:  # not Linux
            return max(1, os.cpu_count() or 1)
    if text.isdigit() and int(text) > 0:
        return int(text)
    raise usage.UsageError(
        f"--workers: expected a positive integer or 'auto', not {value!r}"
    )


def _split_description(description: str) -> tuple[str, list[str], dict[str, str]]:
    """
    An endpoint description's type, positional and keyword fields
    (C{"tcp:4000:interface=127.0.0.1"}), with C{\\:} unescaped.
    """
    fields = [field.replace("\\:", ":") for field in re.split(r"(?<!\\):", description)]
    args = [field for field in fields[1:] if "=" not in field]
    kwargs = dict(field.split("=", 1) for field in fields[1:] if "=" in field)
    return fields[0].lower(), args, kwargs


@attrs.frozen
class ListenAddress:
    """
    The TCP address the workers share.

    @ivar family: C{socket.AF_INET} or C{socket.AF_INET6}.
    """

    host: str
    port: int
    backlog: int = 50
    family: int = socket.AF_INET

    @classmethod
    def from_description(cls, option: str, description: str) -> ListenAddress:
        """
        Read a C{tcp:} or C{tcp6:} server endpoint description.

        @raise usage.UsageError: for another kind of endpoint.
        """
        kind, args, kwargs = _split_description(description)
        if kind not in ("tcp", "tcp6"):
            raise usage.UsageError(
                f"--{option}: with --workers it must be a port number or a tcp: "
                f"endpoint, not {description!r}"
            )
        port = kwargs.get("port") or (args[0] if args else "")
        backlog = kwargs.get("backlog", "50")
        if not port.isdigit() or not backlog.isdigit():
            raise usage.UsageError(
                f"--{option}: bad port or backlog in {description!r}"
            )
        family = socket.AF_INET6 if kind == "tcp6" else socket.AF_INET
        default_host = "::" if kind == "tcp6" else ""
        return cls(
            kwargs.get("interface", default_host), int(port), int(backlog), family
        )

    def bind(self, reuse_port: bool = False, listen: bool = True) -> socket.socket:
        """
        A non-blocking socket bound to this address, listening unless told
        otherwise.
        """
        listener = socket.socket(self.family, socket.SOCK_STREAM)
        try:
            listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if reuse_port:
                listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
            listener.bind((self.host, self.port))
            if listen:
                listener.listen(self.backlog)
            listener.setblocking(False)
        except BaseException:
            listener.close()
            raise
        return listener


def check_worker_options(options: Mapping[str, Any]) -> int:
    """
    Check the options that C{--workers} depends on, once the others are
    checked; return the number of workers.

    @raise usage.UsageError: with a one-line reason.
    """
    count = parse_workers(options["workers"])
    if count == 1:
        return count
    ListenAddress.from_description("port", options["port"])
    if options.get("levee"):
        raise usage.UsageError(
            "--levee is single-node: it cannot run with more than one worker"
        )
    cluster: ClusterConfig | None = options.get("cluster")
    if cluster is not None:
        ListenAddress.from_description("cluster-port", cluster.listen)
    return count


def _offset_port(description: str, offset: int) -> str:
    """
    A client endpoint description (C{tcp:host=h:port=p}) with its port
    moved up by C{offset}.
    """
    return re.sub(
        r"(?<=port=)(\d+)", lambda match: str(int(match.group(1)) + offset), description
    )


def _escape(host: str) -> str:
    return host.replace(":", "\\:")


@attrs.frozen
class WorkerRole:
    """
    What a worker process was told by its parent.

    @ivar index: this worker's number, from 1.
    @ivar count: how many workers there are.
    @ivar directory: where the workers' cluster sockets are.
    @ivar secret: the secret of the workers' local links.
    @ivar listen_fd: the inherited listening socket, or C{None} to open
        an C{SO_REUSEPORT} socket of this worker's own.
    @ivar port: the public port the parent bound, or C{None} for the one
        C{--port} names.
    """

    index: int
    count: int
    directory: str
    secret: bytes = attrs.field(repr=False)
    listen_fd: int | None = None
    port: int | None = None

    @classmethod
    def from_environment(
        cls, environ: Mapping[str, str] | None = None
    ) -> WorkerRole | None:
        """
        The role the parent gave this process (in C{environ}, by default
        C{os.environ}), or C{None} when this process is not a worker.
        """
        if environ is None:
            environ = os.environ
        role = environ.get(ROLE_ENV)
        if not role:
            return None
        index, _, count = role.partition("/")
        fd = environ.get(FD_ENV)
        return cls(
            int(index),
            int(count),
            environ[DIRECTORY_ENV],
            environ[SECRET_ENV].encode("ascii"),
            int(fd) if fd else None,
            int(environ[PORT_ENV]) if environ.get(PORT_ENV) else None,
        )

    def _socket_path(self, index: int) -> str:
        return os.path.join(self.directory, f"w{index}.sock")

    def cluster_config(
        self, node_name: str | None, wider: ClusterConfig | None
    ) -> ClusterConfig:
        """
        This worker's place in the cluster: linked to every other worker of
        the machine over a UNIX socket; with a wider cluster
        (C{--cluster-port P}), over TCP on port C{P + index - 1} instead,
        linked to the other workers and to the configured peers.

        @param node_name: C{--node-name}, which becomes C{NAME-wINDEX}.
        """
        others = [i for i in range(1, self.count + 1) if i != self.index]
        if wider is None:
            # Each pair of workers has one link, dialled by the lower
            # number: no duplicate links to resolve.
            higher = [i for i in others if i > self.index]
            path = self._socket_path(self.index)
            if os.path.exists(path):
                # Left behind by this worker's predecessor (killed).
                os.unlink(path)
            return ClusterConfig(
                node_name=f"{node_name or 'beryl'}-w{self.index}",
                listen=f"unix:{_escape(path)}",
                peers=tuple(f"unix:{_escape(self._socket_path(i))}" for i in higher),
                secret=self.secret,
            )
        listen = ListenAddress.from_description("cluster-port", wider.listen)
        offset = self.index - 1
        host = listen.host if listen.host not in ("", "0.0.0.0", "::") else "127.0.0.1"
        siblings = tuple(
            f"tcp:host={_escape(host)}:port={listen.port + i - 1}" for i in others
        )
        interface = f":interface={_escape(listen.host)}" if listen.host else ""
        kind = "tcp6" if listen.family == socket.AF_INET6 else "tcp"
        if node_name:
            name = f"{node_name}-w{self.index}"
        else:
            host_part, _, port_part = wider.node_name.rpartition(":")
            name = (
                f"{host_part}:{int(port_part) + offset}"
                if port_part.isdigit()
                else f"{wider.node_name}-w{self.index}"
            )
        return attrs.evolve(
            wider,
            node_name=name,
            listen=f"{kind}:{listen.port + offset}{interface}",
            peers=siblings + wider.peers,
            advertise=_offset_port(wider.advertise, offset)
            if wider.advertise
            else None,
        )

    def web_service(
        self, factory: Any, description: str, reactor: Any
    ) -> WorkerListener:
        """
        The service that accepts this worker's share of the connections to
        the public port C{description} (C{--port}).
        """
        address = ListenAddress.from_description("port", description)
        if self.port is not None:
            address = attrs.evolve(address, port=self.port)
        return WorkerListener(self, factory, address, reactor)


class WorkerListener(Service):
    """
    A worker's listener on the shared public port (the inherited socket or
    its own C{SO_REUSEPORT} one), and its watch on the parent: a worker
    whose parent is gone stops.
    """

    log = Logger()

    def __init__(
        self, role: WorkerRole, factory: Any, address: ListenAddress, reactor: Any
    ) -> None:
        self.role = role
        self.factory = factory
        self.address = address
        self.reactor = reactor
        self.port: IListeningPort | None = None
        self._parent = os.getppid()
        self._watch = LoopingCall(self._check_parent)
        self._watch.clock = reactor

    def startService(self) -> None:
        """
        Accept connections, and watch the parent.
        """
        super().startService()  # type: ignore[no-untyped-call]
        if self.role.listen_fd is not None:
            fd = self.role.listen_fd
            self.port = self.reactor.adoptStreamPort(
                fd, self.address.family, self.factory
            )
            os.close(fd)  # the port has its own copy
            self.role = attrs.evolve(self.role, listen_fd=None)
        else:
            listener = self.address.bind(reuse_port=True)
            self.port = self.reactor.adoptStreamPort(
                listener.fileno(), self.address.family, self.factory
            )
            listener.close()
        assert self.port is not None
        self.log.info(
            "Worker {index} of {count} serving on {address}",
            index=self.role.index,
            count=self.role.count,
            address=self.port.getHost(),
        )
        # Ctrl-C reaches the whole process group; the parent stops us.
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        self._watch.start(1.0, now=False).addErrback(
            lambda failure: self.log.failure("Watching the parent failed", failure)
        )

    def stopService(self) -> Deferred[None] | None:
        """
        Stop accepting (the other workers accept what is still queued).
        """
        super().stopService()  # type: ignore[no-untyped-call]
        if self._watch.running:
            self._watch.stop()
        if self.port is None:
            return None
        port, self.port = self.port, None
        return port.stopListening()

    def _check_parent(self) -> None:
        if os.getppid() != self._parent:
            self.log.error(
                "Worker {index}: the parent process is gone; stopping",
                index=self.role.index,
            )
            self.reactor.stop()


def worker_log_observer() -> ILogObserver:
    """
    The log observer of a worker process (C{twistd --logger}): one JSON
    event per line on standard output, which the parent relays.
    """
    # Taken now: once logging begins, sys.stdout is redirected into the log.
    out = sys.stdout

    @provider(ILogObserver)
    def write(event: Any) -> None:
        try:
            out.write(eventAsJSON(event) + "\n")
            out.flush()
        except (OSError, ValueError):
            pass

    observer: ILogObserver = write
    return observer


class _WorkerProcess(ProcessProtocol):
    """
    The parent's end of one worker process: relays its log lines.
    """

    def __init__(self, supervisor: WorkerSupervisor, index: int) -> None:
        self.supervisor = supervisor
        self.index = index
        self.system = f"worker {index}"
        self.pid: int | None = None
        self.ended: Deferred[None] = Deferred()
        self._buffers = {1: b"", 2: b""}

    def connectionMade(self) -> None:
        assert self.transport is not None
        self.pid = self.transport.pid

    def childDataReceived(self, childFD: int, data: bytes) -> None:
        buffered = self._buffers.get(childFD, b"") + data
        *lines, rest = buffered.split(b"\n")
        self._buffers[childFD] = rest
        for line in lines:
            self._relay(childFD, line)

    def _relay(self, childFD: int, line: bytes) -> None:
        text = line.decode("utf-8", "replace").strip("\x1e\r")
        if not text:
            return
        if childFD == 1 and text.startswith("{"):
            try:
                event = eventFromJSON(text)
            except ValueError:
                pass
            else:
                event["log_system"] = self.system
                globalLogPublisher(event)
                return
        self.supervisor.log.warn("{line}", line=text, log_system=self.system)

    def processEnded(self, reason: Failure) -> None:
        for fd, rest in self._buffers.items():
            if rest:
                self._relay(fd, rest)
        self._buffers = {1: b"", 2: b""}
        self.supervisor.worker_ended(self, reason)
        self.ended.callback(None)


class WorkerSupervisor(MultiService):
    """
    The parent of C{--workers N}: opens the public port, runs the workers,
    restarts those that die, and stops them all when it stops.

    @ivar restart_delay: seconds before restarting a worker that died
        after running for C{stable_after} seconds; a worker that dies
        sooner waits twice as long as the last time, up to
        C{max_restart_delay}.
    """

    log = Logger()

    def __init__(
        self,
        reactor: Any,
        count: int,
        argv: Sequence[str],
        address: ListenAddress,
        reuse_port: bool = True,
        stop_timeout: float = 30.0,
        restart_delay: float = 0.2,
        max_restart_delay: float = 30.0,
        stable_after: float = 10.0,
        python: str = sys.executable,
    ) -> None:
        """
        @param argv: the C{twistd beryl} options every worker is started
            with (those of the parent).
        @param reuse_port: give each worker an C{SO_REUSEPORT} socket of its
            own; otherwise they share the parent's listening socket.
        @param stop_timeout: seconds a stopping worker may drain before it
            is killed.
        """
        super().__init__()  # type: ignore[no-untyped-call]
        self.reactor = reactor
        self.count = count
        self.argv = list(argv)
        self.address = address
        self.reuse_port = reuse_port
        self.stop_timeout = stop_timeout
        self.restart_delay = restart_delay
        self.max_restart_delay = max_restart_delay
        self.stable_after = stable_after
        self.python = python
        self.workers: dict[int, _WorkerProcess] = {}
        self._started_at: dict[int, float] = {}
        self._delays: dict[int, float] = {}
        self._restarts: dict[int, IDelayedCall] = {}
        self._socket: socket.socket | None = None
        self._port = 0
        self._directory: str | None = None
        self._secret = ""

    def startService(self) -> None:
        """
        Open the public port (unless each worker opens its own) and start
        every worker.
        """
        super().startService()  # type: ignore[no-untyped-call]
        self._directory = tempfile.mkdtemp(prefix="beryl-workers-")
        self._secret = secrets.token_hex(32)
        try:
            self._socket = self.address.bind(
                reuse_port=self.reuse_port, listen=not self.reuse_port
            )
        except OSError as error:
            self.log.error(
                "Cannot listen on {host}:{port}: {error}; stopping",
                host=self.address.host or "*",
                port=self.address.port,
                error=error.strerror or str(error),
            )
            self.reactor.callLater(0, self.reactor.stop)
            return
        host, self._port = self._socket.getsockname()[:2]
        self.log.info(
            "Serving port {host}:{port} with {count} workers ({how})",
            host=host or "*",
            port=self._port,
            count=self.count,
            how="SO_REUSEPORT" if self.reuse_port else "one shared socket",
        )
        for index in range(1, self.count + 1):
            self._spawn(index)

    def _spawn(self, index: int) -> None:
        self._restarts.pop(index, None)
        assert self._directory is not None
        env = dict(os.environ)
        env.update(
            {
                ROLE_ENV: f"{index}/{self.count}",
                DIRECTORY_ENV: self._directory,
                SECRET_ENV: self._secret,
                PORT_ENV: str(self._port),
                "PYTHONUNBUFFERED": "1",
            }
        )
        child_fds: dict[int, int | str] = {0: "w", 1: "r", 2: "r"}
        env.pop(FD_ENV, None)
        if self._socket is not None and not self.reuse_port:
            child_fds[_LISTEN_FD] = self._socket.fileno()
            env[FD_ENV] = str(_LISTEN_FD)
        args = [
            self.python,
            "-c",
            _TWISTD,
            "--nodaemon",
            "--pidfile=",
            "--logger=beryl.workers.worker_log_observer",
            "beryl",
            *self.argv,
        ]
        process = _WorkerProcess(self, index)
        self.workers[index] = process
        self._started_at[index] = self.reactor.seconds()
        self.reactor.spawnProcess(process, self.python, args, env, childFDs=child_fds)
        self.log.info(
            "Worker {index} started (pid {pid})", index=index, pid=process.pid
        )

    def worker_ended(self, process: _WorkerProcess, reason: Failure) -> None:
        """
        A worker process exited: restart it unless this service is
        stopping.
        """
        index = process.index
        if self.workers.get(index) is process:
            del self.workers[index]
        status = (
            "exited normally"
            if reason.check(ProcessDone)
            else f"died ({reason.getErrorMessage()})"
        )
        if not self.running:
            self.log.info(
                "Worker {index} (pid {pid}) stopped", index=index, pid=process.pid
            )
            return
        lived = self.reactor.seconds() - self._started_at.get(index, 0.0)
        delay = self._delays.get(index, 0.0)
        delay = (
            self.restart_delay
            if lived >= self.stable_after
            else min(self.max_restart_delay, max(self.restart_delay, 2 * delay))
        )
        self._delays[index] = delay
        self.log.warn(
            "Worker {index} (pid {pid}) {status}; restarting it in {delay:.1f} s",
            index=index,
            pid=process.pid,
            status=status,
            delay=delay,
        )
        self._restarts[index] = self.reactor.callLater(delay, self._spawn, index)

    def stopService(self) -> Deferred[None]:
        """
        Stop every worker (SIGTERM: each drains its sockets), killing those
        still running after C{stop_timeout}, then close the public port.
        """
        super().stopService()  # type: ignore[no-untyped-call]
        for call in self._restarts.values():
            if call.active():
                call.cancel()
        self._restarts.clear()
        processes = list(self.workers.values())
        self.log.info("Stopping {count} workers", count=len(processes))
        for process in processes:
            self._signal(process, "TERM")
        kill = self.reactor.callLater(self.stop_timeout, self._kill, processes)
        ended = DeferredList([process.ended for process in processes])

        def cleanup(_: object) -> None:
            if kill.active():
                kill.cancel()
            if self._socket is not None:
                self._socket.close()
                self._socket = None
            if self._directory is not None:
                shutil.rmtree(self._directory, ignore_errors=True)
                self._directory = None

        return ended.addCallback(cleanup)

    def _kill(self, processes: list[_WorkerProcess]) -> None:
        for process in processes:
            if not process.ended.called:
                self.log.warn(
                    "Worker {index} did not stop within {timeout} s; killing it",
                    index=process.index,
                    timeout=self.stop_timeout,
                )
                self._signal(process, "KILL")

    def _signal(self, process: _WorkerProcess, name: str) -> None:
        if process.transport is None:
            return
        try:
            process.transport.signalProcess(name)
        except (OSError, ProcessExitedAlready):
            pass


def make_supervisor(options: Mapping[str, Any], reactor: Any) -> WorkerSupervisor:
    """
    The parent service of C{twistd beryl --workers N} with N above one.
    """
    address = ListenAddress.from_description("port", options["port"])
    supervisor = WorkerSupervisor(
        reactor,
        options["workers"],
        options["argv"],
        address,
        reuse_port=os.environ.get(SOCKETS_ENV, "reuseport") != "inherit",
    )
    supervisor.setName("workers")  # type: ignore[no-untyped-call]
    return supervisor
