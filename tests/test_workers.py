"""
Tests for L{beryl.workers}: C{--workers} options, a worker's place in the
cluster, and the supervising parent driven by a fake reactor.
"""

from __future__ import annotations

import os
import socket
from typing import Any, cast

from twisted.internet.error import ProcessDone, ProcessTerminated
from twisted.internet.task import Clock
from twisted.internet.testing import MemoryReactorClock
from twisted.logger import ILogObserver, LogLevel, eventAsJSON, globalLogPublisher
from twisted.python.failure import Failure
from twisted.python.usage import UsageError
from twisted.trial.unittest import SynchronousTestCase

from beryl.server import ClusterConfig
from beryl.tap import Options, make_beryl_service
from beryl.workers import (
    DIRECTORY_ENV,
    FD_ENV,
    PORT_ENV,
    ROLE_ENV,
    SECRET_ENV,
    ListenAddress,
    WorkerListener,
    WorkerRole,
    WorkerSupervisor,
    parse_workers,
)


def parse(*argv: str) -> Options:
    options = Options()
    options.parseOptions(list(argv))
    return options


class OptionTests(SynchronousTestCase):
    def test_default_is_one(self) -> None:
        """Without --workers there is one process, and the arguments are kept for workers."""
        options = parse("--port", "4100")
        self.assertEqual(options["workers"], 1)
        self.assertEqual(options["argv"], ["--port", "4100"])

    def test_number_and_auto(self) -> None:
        """--workers takes a positive integer, or auto for the usable cores."""
        self.assertEqual(parse("--workers", "3")["workers"], 3)
        self.assertEqual(parse("--workers", "auto")["workers"], parse_workers("auto"))
        self.assertGreaterEqual(parse_workers("auto"), 1)

    def test_bad_count(self) -> None:
        """Zero or a word is a one-line usage error naming --workers."""
        for value in ("0", "-2", "many"):
            error = self.assertRaises(UsageError, parse, "--workers", value)
            self.assertIn("--workers", str(error))

    def test_port_must_be_tcp(self) -> None:
        """With workers, --port must be a TCP port (each worker listens on it)."""
        error = self.assertRaises(
            UsageError, parse, "--workers", "2", "--port", "unix:/tmp/beryl.sock"
        )
        self.assertIn("--port", str(error))
        self.assertEqual(
            parse("--workers", "1", "--port", "unix:/tmp/beryl.sock")["workers"], 1
        )

    def test_levee_is_single_node(self) -> None:
        """--levee with more than one worker is refused."""
        error = self.assertRaises(UsageError, parse, "--workers", "2", "--levee")
        self.assertIn("--levee", str(error))


class ListenAddressTests(SynchronousTestCase):
    def test_tcp(self) -> None:
        """A tcp: description gives host, port and backlog."""
        self.assertEqual(
            ListenAddress.from_description(
                "port", "tcp:4000:interface=127.0.0.1:backlog=10"
            ),
            ListenAddress("127.0.0.1", 4000, 10, socket.AF_INET),
        )
        self.assertEqual(
            ListenAddress.from_description("port", "tcp:port=4000"),
            ListenAddress("", 4000),
        )

    def test_tcp6(self) -> None:
        """A tcp6: description with an escaped address is an IPv6 address."""
        self.assertEqual(
            ListenAddress.from_description("port", "tcp6:4000:interface=\\:\\:1"),
            ListenAddress("::1", 4000, 50, socket.AF_INET6),
        )

    def test_other_kinds_refused(self) -> None:
        """Other endpoint kinds are a usage error naming the option."""
        error = self.assertRaises(
            UsageError, ListenAddress.from_description, "port", "ssl:443"
        )
        self.assertIn("--port", str(error))


def role(directory: str, index: int = 1, count: int = 3) -> WorkerRole:
    return WorkerRole(index, count, directory, b"s3cret", None, None)


class WorkerRoleTests(SynchronousTestCase):
    def test_not_a_worker(self) -> None:
        """Without the parent's variables the process is not a worker."""
        self.assertIsNone(WorkerRole.from_environment({}))

    def test_from_environment(self) -> None:
        """A worker reads its number, the socket directory, the secret, the fd and the port."""
        found = WorkerRole.from_environment(
            {
                ROLE_ENV: "2/4",
                DIRECTORY_ENV: "/run/x",
                SECRET_ENV: "abc",
                FD_ENV: "3",
                PORT_ENV: "4000",
            }
        )
        self.assertEqual(found, WorkerRole(2, 4, "/run/x", b"abc", 3, 4000))

    def test_local_cluster(self) -> None:
        """Alone, worker 2 of 3 listens on its UNIX socket and dials only worker 3, with the secret."""
        directory = self.mktemp()
        os.makedirs(directory)
        stale = os.path.join(directory, "w2.sock")
        open(stale, "w").close()
        config = role(directory, 2).cluster_config(None, None)
        self.assertEqual(config.node_name, "beryl-w2")
        self.assertEqual(config.listen, f"unix:{directory}/w2.sock")
        self.assertEqual(config.peers, (f"unix:{directory}/w3.sock",))
        self.assertEqual(config.secret, b"s3cret")
        self.assertFalse(os.path.exists(stale), "the predecessor's socket is removed")
        self.assertEqual(
            role(directory, 1).cluster_config("chat", None).node_name, "chat-w1"
        )

    def test_wider_cluster(self) -> None:
        """With --cluster-port P, worker k listens on P+k-1, advertises it and dials its siblings and the peers."""
        wider = ClusterConfig(
            node_name="host1:4001",
            listen="tcp:4001:interface=10.0.0.1",
            peers=("tcp:host=10.0.0.2:port=4001",),
            advertise="tcp:host=host1:port=4001",
            secret=b"cluster",
        )
        config = role("/unused", 2).cluster_config(None, wider)
        self.assertEqual(config.node_name, "host1:4002")
        self.assertEqual(config.listen, "tcp:4002:interface=10.0.0.1")
        self.assertEqual(config.advertise, "tcp:host=host1:port=4002")
        self.assertEqual(
            config.peers,
            (
                "tcp:host=10.0.0.1:port=4001",
                "tcp:host=10.0.0.1:port=4003",
                "tcp:host=10.0.0.2:port=4001",
            ),
        )
        self.assertEqual(config.secret, b"cluster")
        self.assertEqual(
            role("/unused", 3).cluster_config("edge", wider).node_name, "edge-w3"
        )


class ServiceTreeTests(SynchronousTestCase):
    def test_parent(self) -> None:
        """With --workers 2 and no role, twistd beryl builds the supervisor."""
        service = make_beryl_service(
            parse("--workers", "2", "--port", "tcp:0"), MemoryReactorClock()
        )
        self.assertIsInstance(service, WorkerSupervisor)
        assert isinstance(service, WorkerSupervisor)
        self.assertEqual(service.count, 2)
        self.assertEqual(service.argv, ["--workers", "2", "--port", "tcp:0"])

    def test_worker(self) -> None:
        """With a role, the node is named after its worker and listens through a WorkerListener."""
        directory = self.mktemp()
        os.makedirs(directory)
        self.patch(
            os,
            "environ",
            {
                **os.environ,
                ROLE_ENV: "1/2",
                DIRECTORY_ENV: directory,
                SECRET_ENV: "abc",
                PORT_ENV: "4321",
            },
        )
        top = make_beryl_service(
            parse("--workers", "2", "--port", "tcp:0"), MemoryReactorClock()
        )
        web = top.getServiceNamed("web")
        self.assertIsInstance(web, WorkerListener)
        assert isinstance(web, WorkerListener)
        self.assertEqual(web.address.port, 4321)
        cluster: Any = top.getServiceNamed("cluster")
        self.assertEqual(cluster.node_name, "beryl-w1")
        self.assertEqual(cluster.secret, b"abc")


class _Transport:
    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.signals: list[str] = []

    def signalProcess(self, name: str) -> None:
        self.signals.append(name)


class _ProcessReactor(Clock):
    """
    A clock that records spawned processes.
    """

    def __init__(self) -> None:
        super().__init__()
        self.spawned: list[dict[str, Any]] = []

    def spawnProcess(
        self, protocol: Any, executable: str, args: Any, env: Any, childFDs: Any
    ) -> Any:
        transport = _Transport(1000 + len(self.spawned))
        protocol.makeConnection(transport)
        self.spawned.append(
            {"protocol": protocol, "args": args, "env": env, "fds": childFDs}
        )
        return transport


class SupervisorTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.reactor = _ProcessReactor()
        self.supervisor = WorkerSupervisor(
            self.reactor,
            2,
            ["--port", "tcp:0:interface=127.0.0.1"],
            ListenAddress("127.0.0.1", 0),
            restart_delay=0.5,
            stable_after=10.0,
            stop_timeout=5.0,
        )
        self.events: list[dict[str, Any]] = []
        observer = cast(ILogObserver, self.events.append)
        globalLogPublisher.addObserver(observer)
        self.addCleanup(globalLogPublisher.removeObserver, observer)
        self.supervisor.startService()
        self.addCleanup(self._stop)

    def _stop(self) -> None:
        if self.supervisor.running:
            stopping = self.supervisor.stopService()
            for process in list(self.supervisor.workers.values()):
                process.processEnded(Failure(ProcessDone(0)))
            self.successResultOf(stopping)

    def die(self, index: int) -> None:
        process = self.supervisor.workers[index]
        process.processEnded(Failure(ProcessTerminated(signal=9)))

    def test_spawns_every_worker(self) -> None:
        """Each worker is twistd beryl with the parent's options and its number, port and secret."""
        self.assertEqual(len(self.reactor.spawned), 2)
        for index, spawned in enumerate(self.reactor.spawned, start=1):
            self.assertEqual(
                spawned["args"][-3:], ["beryl", "--port", "tcp:0:interface=127.0.0.1"]
            )
            self.assertEqual(spawned["env"][ROLE_ENV], f"{index}/2")
            self.assertNotEqual(spawned["env"][PORT_ENV], "0")
            self.assertEqual(len(spawned["env"][SECRET_ENV]), 64)
            # With SO_REUSEPORT each worker opens its own socket.
            self.assertNotIn(FD_ENV, spawned["env"])

    def test_dead_worker_restarts(self) -> None:
        """A worker that dies is started again after the restart delay, as the same number."""
        self.reactor.advance(20)
        self.die(2)
        self.assertNotIn(2, self.supervisor.workers)
        self.reactor.advance(0.5)
        self.assertIn(2, self.supervisor.workers)
        self.assertEqual(self.reactor.spawned[-1]["env"][ROLE_ENV], "2/2")
        texts = [e.get("log_format", "") for e in self.events]
        self.assertIn(
            "Worker {index} (pid {pid}) {status}; restarting it in {delay:.1f} s", texts
        )

    def test_crash_loop_backs_off(self) -> None:
        """A worker that keeps dying at once waits twice as long each time."""
        delays = []
        for _ in range(3):
            self.die(1)
            call = self.reactor.getDelayedCalls()[-1]
            delays.append(call.getTime() - self.reactor.seconds())
            self.reactor.advance(delays[-1])
        self.assertEqual(delays, [0.5, 1.0, 2.0])

    def test_stop_drains_then_kills(self) -> None:
        """Stopping sends SIGTERM to every worker, SIGKILL to those still running after the timeout, and fires when all ended."""
        workers = dict(self.supervisor.workers)
        stopping = self.supervisor.stopService()
        for process in workers.values():
            self.assertEqual(process.transport.signals, ["TERM"])  # type: ignore[union-attr]
        workers[1].processEnded(Failure(ProcessDone(0)))
        self.assertNoResult(stopping)
        self.reactor.advance(5.0)
        self.assertEqual(workers[2].transport.signals, ["TERM", "KILL"])  # type: ignore[union-attr]
        self.assertEqual(workers[1].transport.signals, ["TERM"])  # type: ignore[union-attr]
        workers[2].processEnded(Failure(ProcessTerminated(signal=9)))
        self.successResultOf(stopping)
        self.assertEqual(self.reactor.getDelayedCalls(), [])
        self.assertEqual(len(self.reactor.spawned), 2, "nothing restarted")

    def test_port_in_use(self) -> None:
        """A port that is taken is logged in one line, no worker starts and the reactor stops."""
        taken = socket.socket()
        self.addCleanup(taken.close)
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        reactor = _ProcessReactor()
        stopped: list[bool] = []
        reactor.stop = lambda: stopped.append(True)  # type: ignore[attr-defined]
        second = WorkerSupervisor(
            reactor,
            2,
            [],
            ListenAddress("127.0.0.1", taken.getsockname()[1]),
            reuse_port=False,
        )
        second.startService()
        reactor.advance(0)
        self.assertEqual(reactor.spawned, [])
        self.assertEqual(stopped, [True])
        errors = [e for e in self.events if e.get("log_level") == LogLevel.error]
        self.assertIn("Cannot listen on", errors[-1]["log_format"])
        self.successResultOf(second.stopService())

    def test_relays_worker_logs(self) -> None:
        """A worker's JSON log events are re-published with the worker as their system; other output is logged as warnings."""
        process = self.supervisor.workers[2]
        event = {
            "log_format": "Cluster node {node} is up",
            "node": "beryl-w1",
            "log_level": LogLevel.info,
            "log_namespace": "beryl.cluster",
            "log_time": 1.0,
        }
        line = eventAsJSON(event).encode()
        process.childDataReceived(1, line[:10])
        process.childDataReceived(1, line[10:] + b"\n")
        process.childDataReceived(2, b"Traceback: boom\n")
        relayed = [e for e in self.events if e.get("log_system") == "worker 2"]
        self.assertEqual(len(relayed), 2)
        self.assertEqual(relayed[0]["log_level"], LogLevel.info)
        self.assertEqual(relayed[0]["log_namespace"], "beryl.cluster")
        from twisted.logger import formatEvent

        self.assertEqual(formatEvent(relayed[0]), "Cluster node beryl-w1 is up")
        self.assertEqual(relayed[1]["log_level"], LogLevel.warn)
        self.assertEqual(formatEvent(relayed[1]), "Traceback: boom")
