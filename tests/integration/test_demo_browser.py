"""
The demo page in a real browser: Debian's headless Chromium, driven by
Selenium through Debian's chromedriver, against a real C{twistd beryl}.

Outside CI the test skips when chromium or chromedriver is missing
(C{scripts/test.sh} installs them when C{CI=true} and root); under
C{CI=true} a missing browser fails.  On failure each browser's screenshot
is written beside the server log and named in the failure message.
"""

from __future__ import annotations

import shutil
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from functools import partial
from pathlib import Path
from typing import Any

from twisted.trial.unittest import SynchronousTestCase

from tests.interop.harness import _unavailable, start_server, unique_topic

WAIT = 30.0
"""Seconds to wait for the page to show something; generous under load."""

CHROMIUM_FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-dev-shm-usage",
)


def _browser_paths(testcase: SynchronousTestCase) -> tuple[str, str]:
    """
    Debian's chromium and chromedriver, or skip (fail under CI=true).
    """
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    driver = shutil.which("chromedriver")
    if chromium is None or driver is None:
        _unavailable(
            testcase,
            "the browser test needs Debian's chromium and chromium-driver "
            "(apt-get install chromium chromium-driver; scripts/test.sh does it "
            "under CI=true as root)",
        )
    try:
        import selenium  # noqa: F401
    except ImportError:
        _unavailable(testcase, "selenium is missing: pip install -e '.[test]'")
    assert chromium is not None and driver is not None
    return chromium, driver


def open_chromium(
    testcase: SynchronousTestCase, chromium: str, chromedriver: str
) -> Any:
    """
    A Selenium driver for a fresh headless Chromium (its own profile
    directory), quit in the test's cleanup.
    """
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for flag in CHROMIUM_FLAGS:
        options.add_argument(flag)
    profile = Path(testcase.mktemp()).resolve()
    profile.mkdir(parents=True)
    options.add_argument(f"--user-data-dir={profile}")
    driver = webdriver.Chrome(
        options=options, service=Service(executable_path=chromedriver)
    )
    testcase.addCleanup(driver.quit)
    return driver


def _logged(page: Any, line: str) -> bool:
    """
    Whether C{page}'s log has the line C{line}.
    """
    return line in page.text("log").splitlines()


def _shows(page: Any, element: str, text: str) -> bool:
    """
    Whether C{page}'s C{element} reads C{text}.
    """
    return bool(page.text(element) == text)


class Page:
    """
    One user's browser on the demo page.
    """

    def __init__(self, driver: Any, name: str) -> None:
        self.driver = driver
        self.name = name

    def text(self, element_id: str) -> str:
        from selenium.webdriver.common.by import By

        value: str = self.driver.find_element(By.ID, element_id).text
        return value

    def type(self, element_id: str, text: str) -> None:
        from selenium.webdriver.common.by import By

        element = self.driver.find_element(By.ID, element_id)
        element.clear()
        if text:
            element.send_keys(text)

    def click(self, element_id: str) -> None:
        from selenium.webdriver.common.by import By

        self.driver.find_element(By.ID, element_id).click()

    def wait(self, what: str, condition: Callable[[], bool]) -> None:
        from selenium.common.exceptions import TimeoutException
        from selenium.webdriver.support.ui import WebDriverWait

        try:
            WebDriverWait(self.driver, WAIT, poll_frequency=0.1).until(
                lambda _: condition()
            )
        except TimeoutException:
            raise AssertionError(
                f"{self.name}'s page never showed {what}; it shows "
                f"who={self.text('who')!r}, log={self.text('log')!r}"
            ) from None

    def join(self, user: str, room: str) -> None:
        self.type("user", user)
        self.type("room", room)
        self.click("join")


class DemoPageTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.chromium, self.chromedriver = _browser_paths(self)
        self.server = start_server(self)
        self.pages: list[Page] = []

    def open_page(self, name: str) -> Page:
        driver = open_chromium(self, self.chromium, self.chromedriver)
        driver.get(f"http://127.0.0.1:{self.server.port}/")
        page = Page(driver, name)
        self.pages.append(page)
        return page

    @contextmanager
    def screenshots_on_failure(self) -> Iterator[None]:
        try:
            yield
        except BaseException as failure:
            directory = self.server.log_path.parent
            shots = []
            for page in self.pages:
                path = directory / f"screenshot-{page.name}.png"
                try:
                    page.driver.save_screenshot(str(path))
                    shots.append(str(path.resolve()))
                except Exception as error:
                    shots.append(f"(no screenshot of {page.name}: {error})")
            raise AssertionError(
                f"{failure}\nscreenshots: {', '.join(shots)}\n"
                f"server log: {self.server.log_path.resolve()}"
            ) from failure

    def test_two_users_chat(self) -> None:
        """Two users join, each sees both, a message crosses, and the one who leaves is seen leaving."""
        room = unique_topic("room").split(":", 1)[1]
        with self.screenshots_on_failure():
            alice = self.open_page("alice")
            bob = self.open_page("bob")
            alice.join("alice", room)
            alice.wait("alice online", lambda: alice.text("who") == "Online: alice")
            bob.join("bob", room)
            for page in (alice, bob):
                page.wait(
                    "both online", partial(_shows, page, "who", "Online: alice, bob")
                )
            alice.wait(
                "the live panel counting both sockets",
                lambda: alice.text("stats").startswith("Server: 2 sockets, "),
            )
            self.assertTrue(alice.text("stats").endswith(" 1 cluster node"))
            alice.type("body", "hello bob")
            alice.driver.find_element("css selector", "#send button").click()
            for page in (alice, bob):
                page.wait("alice's message", partial(_logged, page, "alice: hello bob"))
            bob.click("leave")
            bob.wait("bob not joined", lambda: bob.text("who") == "Not joined.")
            alice.wait("bob's departure", lambda: alice.text("who") == "Online: alice")
            self.assertIn("bob left", alice.text("log").splitlines())

    def test_failed_join_shown(self) -> None:
        """A refused join shows as failed with the server's reason, without a stale list or raw JSON."""
        room = unique_topic("room").split(":", 1)[1]
        with self.screenshots_on_failure():
            page = self.open_page("nameless")
            page.join("carol", room)
            page.wait("carol online", lambda: page.text("who") == "Online: carol")
            page.join("", room)
            page.wait(
                "the failed join",
                lambda: page.text("who") == "Join failed: user required",
            )
            self.assertEqual(
                page.driver.find_element("id", "who").get_attribute("class"), "failed"
            )
            self.assertNotIn("{", page.text("log"))


class FaviconTests(SynchronousTestCase):
    def test_favicon(self) -> None:
        """The demo serves an SVG favicon at /favicon.ico, and the page links it."""
        server = start_server(self)
        base = f"http://127.0.0.1:{server.port}"
        with urllib.request.urlopen(base + "/favicon.ico", timeout=WAIT) as response:
            self.assertEqual(response.headers["Content-Type"], "image/svg+xml")
            self.assertTrue(response.read().startswith(b"<svg"))
        with urllib.request.urlopen(base + "/", timeout=WAIT) as response:
            self.assertIn(b'<link rel="icon" href="/favicon.ico"', response.read())
