"""
The interop harness itself: how it reacts to a missing node toolchain.
"""

from __future__ import annotations

import os
import shutil
import unittest

from twisted.trial.unittest import SynchronousTestCase

from tests.interop import harness


class NodeDiscoveryTests(SynchronousTestCase):
    """
    L{harness.node_executable}.
    """

    def setUp(self) -> None:
        saved = os.environ.get("CI")
        self.addCleanup(
            lambda: (
                os.environ.__setitem__("CI", saved)
                if saved is not None
                else os.environ.pop("CI", None)
            )
        )

    def test_missing_node_skips(self) -> None:
        """
        Without node, and without C{CI=true}, node-driven tests are skipped.
        """
        os.environ.pop("CI", None)
        self.patch(shutil, "which", lambda name: None)
        with self.assertRaises(unittest.SkipTest) as caught:
            harness.node_executable(self)
        self.assertIn("node is not installed", str(caught.exception))

    def test_missing_node_fails_in_ci(self) -> None:
        """
        Under C{CI=true} a missing node fails the test instead of skipping.
        """
        os.environ["CI"] = "true"
        self.patch(shutil, "which", lambda name: None)
        with self.assertRaises(self.failureException) as caught:
            harness.node_executable(self)
        self.assertIn("CI=true", str(caught.exception))

    def test_missing_packages_fail_in_ci(self) -> None:
        """
        Under C{CI=true} missing node_modules fail too, naming the fix.
        """
        os.environ["CI"] = "true"
        self.patch(shutil, "which", lambda name: "/usr/bin/node")
        self.patch(harness, "INTEROP_DIR", harness.INTEROP_DIR / "does-not-exist")
        with self.assertRaises(self.failureException) as caught:
            harness.node_executable(self)
        self.assertIn("npm ci", str(caught.exception))
