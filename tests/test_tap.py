"""
Tests for L{beryl.tap} and the C{twistd beryl} plugin.
"""

from __future__ import annotations

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
        """Non-positive or non-numeric timings and limits are usage errors."""
        for argv in (
            ["--heartbeat-timeout", "0"],
            ["--heartbeat-timeout", "soon"],
            ["--max-channels", "-1"],
            ["--max-frame-size", "big"],
        ):
            self.assertRaises(UsageError, self.parse, *argv)

    def test_check_origin(self) -> None:
        """--check-origin takes off, host, or a list of origins."""
        self.assertIsNone(self.parse("--check-origin", "off")["origin_rule"])
        self.assertEqual(
            self.parse("--check-origin", "https://a.com, //*.b.com")["origin_rule"],
            ["https://a.com", "//*.b.com"],
        )

    def test_app(self) -> None:
        """--app loads an App, or calls a function that returns one."""
        self.assertIs(self.parse("--app", f"{__name__}:example_app")["loaded_app"], example_app)
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

    def test_load_app_error(self) -> None:
        """load_app raises ValueError with a reason."""
        self.assertRaises(ValueError, load_app, "beryl:nothing")


class ServiceTests(SynchronousTestCase):
    def test_service_tree(self) -> None:
        """The service has a coordinator and a web listener that binds the port."""
        options = Options()
        options.parseOptions(["--port", "tcp:4321:interface=127.0.0.1"])
        reactor = MemoryReactorClock()
        service = make_beryl_service(options, reactor)
        names = [child.name for child in service]
        self.assertEqual(names[0], "coordinator")
        self.assertEqual(names[-1], "web")
        service.startService()
        self.addCleanup(service.stopService)
        ((port, factory, backlog, interface),) = reactor.tcpServers
        self.assertEqual((port, interface), (4321, "127.0.0.1"))
