"""
Tests for L{beryl.tap} and the C{twistd beryl} plugin.
"""

from __future__ import annotations

import io
import os
import sys
from typing import Any, cast
from unittest import mock

from twisted.application.service import IServiceMaker
from twisted.internet.testing import MemoryReactorClock
from twisted.plugin import IPlugin, getPlugins
from twisted.python.usage import UsageError
from twisted.trial.unittest import SynchronousTestCase
from zope.interface.verify import verifyObject

from beryl.app import App
from beryl.tap import Options, load_app, make_beryl_service

example_app = App()


def make_example_app() -> App:
    return App()


not_an_app = 42


class PluginTests(SynchronousTestCase):
    def test_plugin_found(self) -> None:
        """twistd finds a 'beryl' service maker that provides IServiceMaker and IPlugin."""
        (plugin,) = [p for p in getPlugins(IServiceMaker) if p.tapname == "beryl"]
        verifyObject(IServiceMaker, plugin)
        verifyObject(IPlugin, plugin)
        self.assertIs(plugin.options, Options)


class OptionsTests(SynchronousTestCase):
    def parse(self, *argv: str) -> Options:
        options = Options()
        options.environ = {}
        options.parseOptions(list(argv))
        return options

    def test_defaults(self) -> None:
        """Defaults are Phoenix's: port 4000, 60 s idle timeout, 8 MiB frames, 100 channels."""
        options = self.parse()
        self.assertEqual(options["port"], "tcp:4000")
        self.assertEqual(options["heartbeat-timeout"], 60.0)
        self.assertEqual(options["max-frame-size"], 8 * 1024 * 1024)
        self.assertEqual(options["max-channels"], 100)
        self.assertEqual(options["origin_rule"], "host")
        self.assertIsNone(options["app"])

    def test_port_number_or_endpoint(self) -> None:
        """--port takes a bare number or an endpoint string."""
        self.assertEqual(self.parse("--port", "4100")["port"], "tcp:4100")
        self.assertEqual(
            self.parse("--port", "tcp:4100:interface=127.0.0.1")["port"],
            "tcp:4100:interface=127.0.0.1",
        )

    def test_bad_port(self) -> None:
        """An unknown endpoint type is a one-line usage error naming --port."""
        error = self.assertRaises(UsageError, self.parse, "--port", "bogus:1")
        self.assertIn("--port", str(error))

    def test_bad_numbers(self) -> None:
        """Non-positive or non-numeric timings and limits are usage errors naming the option."""
        for argv in (
            ["--heartbeat-timeout", "0"],
            ["--heartbeat-timeout", "soon"],
            ["--max-channels", "-1"],
            ["--max-channels", "1.5"],
            ["--max-frame-size", "big"],
        ):
            error = self.assertRaises(UsageError, self.parse, *argv)
            self.assertIn(argv[0], str(error))

    def test_nan_and_infinity_refused(self) -> None:
        """NaN and infinity are not positive numbers: usage errors naming the option."""
        for value in ("nan", "inf", "-inf", "NaN"):
            error = self.assertRaises(
                UsageError, self.parse, "--heartbeat-timeout", value
            )
            self.assertIn("--heartbeat-timeout: expected a positive number", str(error))

    def test_port_out_of_range(self) -> None:
        """--port 99999 names --port and the range of port numbers."""
        for value in ("99999", "tcp:70000:interface=127.0.0.1"):
            error = self.assertRaises(UsageError, self.parse, "--port", value)
            self.assertIn("--port", str(error))
            self.assertIn("1 to 65535", str(error))

    def test_ipv6_cluster_interface(self) -> None:
        """An escaped IPv6 interface in --cluster-port is parsed by Twisted and advertised in brackets' stead."""
        cluster = self.parse("--cluster-port", r"tcp:4601:interface=\:\:1")["cluster"]
        self.assertEqual(cluster.listen, r"tcp:4601:interface=\:\:1")
        self.assertEqual(cluster.advertise, r"tcp:host=\:\:1:port=4601")

    def test_tls_missing(self) -> None:
        """Without pyOpenSSL, TLS endpoints in --port, --cluster-port and --peers are usage errors naming beryl[tls]."""
        with mock.patch.dict(sys.modules, {"OpenSSL": None}):
            for argv, option in (
                (["--port", "ssl:4443:privateKey=k.pem"], "--port"),
                (["--cluster-port", "ssl:4601:privateKey=k.pem"], "--cluster-port"),
                (
                    ["--cluster-port", "4601", "--peers", "tls:127.0.0.1:4602"],
                    "--peers",
                ),
            ):
                error = str(self.assertRaises(UsageError, self.parse, *argv))
                self.assertIn(option, error)
                self.assertIn("pip install 'beryl[tls]'", error)

    def test_numbers_parsed(self) -> None:
        """Numeric options arrive as numbers."""
        options = self.parse("--heartbeat-timeout", "2.5", "--max-channels", "7")
        self.assertEqual(
            (options["heartbeat-timeout"], options["max-channels"]), (2.5, 7)
        )

    def test_check_origin(self) -> None:
        """--check-origin takes off, host, or a list of origins."""
        self.assertIsNone(self.parse("--check-origin", "off")["origin_rule"])
        self.assertEqual(
            self.parse("--check-origin", "https://a.com, //*.b.com")["origin_rule"],
            ["https://a.com", "//*.b.com"],
        )

    def test_app(self) -> None:
        """--app loads an App, or calls a function that returns one."""
        self.assertIs(
            self.parse("--app", f"{__name__}:example_app")["loaded_app"], example_app
        )
        self.assertIsInstance(
            self.parse("--app", f"{__name__}:make_example_app")["loaded_app"], App
        )

    def test_bad_app(self) -> None:
        """Unimportable modules, missing attributes and non-apps are usage errors."""
        for spec, words in (
            ("no_such_module_here:app", "cannot import"),
            (f"{__name__}:missing", "no attribute"),
            (f"{__name__}:not_an_app", "not a beryl.App"),
            ("nocolon", "package.module:attribute"),
        ):
            error = self.assertRaises(UsageError, self.parse, "--app", spec)
            self.assertIn(words, str(error))
            self.assertIn("--app", str(error))

    def test_cluster_options(self) -> None:
        """Cluster options become a ClusterConfig: peers as endpoints, default name and advertise."""
        options = self.parse(
            "--cluster-port",
            "tcp:5001:interface=127.0.0.1",
            "--peers",
            "127.0.0.1:5002, 127.0.0.1:5003",
            "--cluster-secret",
            "s3",
        )
        cluster = options["cluster"]
        self.assertEqual(
            cluster.peers,
            ("tcp:host=127.0.0.1:port=5002", "tcp:host=127.0.0.1:port=5003"),
        )
        self.assertEqual(cluster.advertise, "tcp:host=127.0.0.1:port=5001")
        self.assertTrue(cluster.node_name.endswith(":5001"))
        self.assertEqual(cluster.secret, b"s3")
        self.assertNotIn("s3", repr(cluster))
        endpoint = "tcp:host=10.0.0.9:port=5001:timeout=3"
        self.assertEqual(
            self.parse("--cluster-port", "5001", "--peers", endpoint)["cluster"].peers,
            (endpoint,),
        )
        named = self.parse("--cluster-port", "5001", "--node-name", "n1")["cluster"]
        self.assertEqual(named.node_name, "n1")
        self.assertEqual(named.listen, "tcp:5001")
        self.assertIsNone(self.parse()["cluster"])

    def test_cluster_secret_file(self) -> None:
        """--cluster-secret-file reads the secret; a missing file is a usage error."""
        path = self.mktemp()
        with open(path, "wb") as file:
            file.write(b"from-a-file\n")
        options = self.parse("--cluster-port", "5001", "--cluster-secret-file", path)
        self.assertEqual(options["cluster"].secret, b"from-a-file")
        error = self.assertRaises(
            UsageError,
            self.parse,
            "--cluster-port",
            "5001",
            "--cluster-secret-file",
            path + ".no",
        )
        self.assertIn("--cluster-secret-file", str(error))

    def test_bad_cluster_options(self) -> None:
        """Peers without a cluster port, bad peers and bad cluster ports are usage errors."""
        for argv, words in (
            (["--peers", "h:1"], "needs --cluster-port"),
            (["--cluster-port", "5001", "--peers", "nonsense"], "--peers"),
            (["--cluster-port", "bogus:1"], "--cluster-port"),
            (
                [
                    "--cluster-port",
                    "5001",
                    "--cluster-secret",
                    "a",
                    "--cluster-secret-file",
                    "f",
                ],
                "not both",
            ),
            (["--broadcast-period", "2", "--down-period", "3"], "--down-period"),
            (["--down-period", "30", "--permdown-period", "30"], "--permdown-period"),
            (["--levee", "--cluster-port", "5001"], "single-node"),
            (["--levee-insecure-dev-tokens"], "needs --levee"),
        ):
            error = self.assertRaises(UsageError, self.parse, *argv)
            self.assertIn(words, str(error))

    def test_app_from_current_directory(self) -> None:
        """--app imports a module from the current directory without PYTHONPATH."""
        directory = os.path.abspath(self.mktemp())
        os.makedirs(directory)
        with open(os.path.join(directory, "cwd_app_module.py"), "w") as file:
            file.write("from beryl import App\napp = App()\n")
        self.addCleanup(os.chdir, os.getcwd())
        self.addCleanup(sys.modules.pop, "cwd_app_module", None)
        self.patch(sys, "path", [p for p in sys.path if p not in ("", ".")])
        os.chdir(directory)
        options = self.parse("--app", "cwd_app_module:app")
        self.assertIsInstance(options["loaded_app"], App)
        self.assertIn(
            "the current directory is on the import path",
            " ".join(str(Options()).split()),
        )

    def test_load_app_error(self) -> None:
        """load_app raises ValueError with a reason."""
        self.assertRaises(ValueError, load_app, "beryl:nothing")


class EnvironmentTests(SynchronousTestCase):
    def parse(self, environ: dict[str, str], *argv: str) -> Options:
        options = Options()
        options.environ = environ
        options.parseOptions(list(argv))
        return options

    def test_every_option_from_environment(self) -> None:
        """BERYL_<OPTION> sets options, flags and secrets, coerced like the command line."""
        options = self.parse(
            {
                "BERYL_PORT": "4100",
                "BERYL_MAX_CHANNELS": "7",
                "BERYL_HEARTBEAT_TIMEOUT": "2.5",
                "BERYL_CLUSTER_PORT": "tcp:4601:interface=127.0.0.1",
                "BERYL_CLUSTER_SECRET": "s3",
                "BERYL_CHECK_ORIGIN": "off",
                "OTHER_PORT": "1",
            }
        )
        self.assertEqual(options["port"], "tcp:4100")
        self.assertEqual(options["max-channels"], 7)
        self.assertEqual(options["heartbeat-timeout"], 2.5)
        self.assertEqual(options["cluster"].secret, b"s3")
        self.assertIsNone(options["origin_rule"])
        self.assertTrue(self.parse({"BERYL_LEVEE": "1"})["levee"])
        self.assertFalse(self.parse({"BERYL_LEVEE": "0"})["levee"])

    def test_command_line_wins(self) -> None:
        """An option on the command line overrides its BERYL_ variable."""
        options = self.parse(
            {"BERYL_PORT": "4100", "BERYL_MAX_CHANNELS": "7"}, "--port", "4200"
        )
        self.assertEqual(options["port"], "tcp:4200")
        self.assertEqual(options["max-channels"], 7)

    def test_bad_environment_value(self) -> None:
        """A bad value from the environment is a usage error naming the option and the variable."""
        error = str(self.assertRaises(UsageError, self.parse, {"BERYL_PORT": "99999"}))
        self.assertIn("--port", error)
        self.assertIn("BERYL_PORT", error)
        error = str(self.assertRaises(UsageError, self.parse, {"BERYL_LEVEE": "maybe"}))
        self.assertIn("BERYL_LEVEE", error)

    def test_help_mentions_environment(self) -> None:
        """--help tells that options can come from BERYL_ variables."""
        self.assertIn("BERYL_<OPTION>", str(Options()))


class OneLineErrorTests(SynchronousTestCase):
    def fail_under_twistd(self, *argv: str) -> list[str]:
        options = Options()
        options.environ = {}
        options.parent = cast(Any, object())
        stderr = io.StringIO()
        self.patch(sys, "stderr", stderr)
        self.patch(sys, "argv", ["/usr/bin/twistd", "beryl", *argv])
        error = self.assertRaises(SystemExit, options.parseOptions, list(argv))
        self.assertEqual(error.code, 2)
        return stderr.getvalue().splitlines()

    def test_bad_option_one_line(self) -> None:
        """Under twistd, an unknown option is one line and a --help hint, not the usage text."""
        first, hint = self.fail_under_twistd("--prot", "4000")
        self.assertEqual(
            first, "twistd beryl: option --prot not recognized; check its spelling"
        )
        self.assertEqual(hint, "Run 'twistd beryl --help' for every option.")

    def test_bad_value_one_line(self) -> None:
        """Under twistd, a bad value is one line naming the option, then the hint."""
        first, hint = self.fail_under_twistd("--max-channels", "lots")
        self.assertEqual(
            first,
            "twistd beryl: --max-channels: expected a positive integer, not 'lots'",
        )
        self.assertIn("--help", hint)


class ServiceTests(SynchronousTestCase):
    def test_service_tree(self) -> None:
        """A single node has pubsub, presence-using coordinator and, last, the web listener."""
        options = Options()
        options.parseOptions(["--port", "tcp:4321:interface=127.0.0.1"])
        reactor = MemoryReactorClock()
        service = make_beryl_service(options, reactor)
        self.assertEqual(
            [child.name for child in service],
            ["pubsub", "presence", "coordinator", "web"],
        )
        service.startService()
        self.addCleanup(service.stopService)
        ((port, factory, backlog, interface),) = reactor.tcpServers
        self.assertEqual((port, interface), (4321, "127.0.0.1"))

    def test_cluster_service_tree(self) -> None:
        """With --cluster-port the cluster links come first and listen on that port."""
        options = Options()
        options.parseOptions(
            [
                "--port",
                "tcp:4321:interface=127.0.0.1",
                "--cluster-port",
                "tcp:4322:interface=127.0.0.1",
                "--peers",
                "127.0.0.1:4400",
            ]
        )
        reactor = MemoryReactorClock()
        service = make_beryl_service(options, reactor)
        self.assertEqual(
            [child.name for child in service],
            ["cluster", "pubsub", "presence", "coordinator", "web"],
        )
        service.startService()
        self.addCleanup(service.stopService)
        ports = sorted(
            (port, interface) for port, _, _, interface in reactor.tcpServers
        )
        self.assertEqual(ports, [(4321, "127.0.0.1"), (4322, "127.0.0.1")])
        self.assertIn(("127.0.0.1", 4400), [(h, p) for h, p, *_ in reactor.tcpClients])


class LongPollOptionTests(SynchronousTestCase):
    def site_children(self, *argv: str) -> list[bytes]:
        """
        The children of C{/socket} in the site built from C{argv}.
        """
        options = Options()
        options.parseOptions(["--port", "tcp:4321:interface=127.0.0.1", *argv])
        reactor = MemoryReactorClock()
        service = make_beryl_service(options, reactor)
        service.startService()
        self.addCleanup(service.stopService)
        ((_, site, _, _),) = reactor.tcpServers
        return sorted(cast(Any, site).resource.children[b"socket"].children)

    def test_longpoll_on_by_default(self) -> None:
        """/socket/longpoll is served by default and --no-longpoll removes it."""
        self.assertEqual(self.site_children(), [b"longpoll", b"websocket"])
        self.assertEqual(self.site_children("--no-longpoll"), [b"websocket"])

    def test_longpoll_timeouts(self) -> None:
        """--longpoll-timeout and --longpoll-idle-timeout are positive numbers."""
        options = Options()
        options.parseOptions(
            ["--longpoll-timeout", "2.5", "--longpoll-idle-timeout", "4"]
        )
        self.assertEqual(
            (options["longpoll-timeout"], options["longpoll-idle-timeout"]), (2.5, 4.0)
        )
        for name in ("--longpoll-timeout", "--longpoll-idle-timeout"):
            options = Options()
            error = self.assertRaises(UsageError, options.parseOptions, [name, "0"])
            self.assertIn(name, str(error))
