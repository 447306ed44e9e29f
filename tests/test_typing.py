"""
The channel API's types catch handlers written for the wrong assigns.
"""

from __future__ import annotations

from pathlib import Path

from mypy import api
from twisted.trial.unittest import SynchronousTestCase

HERE = Path(__file__).parent / "typing"
CONFIG = Path(__file__).parent.parent / "pyproject.toml"


def _mypy(path: Path) -> tuple[str, int]:
    """
    Run mypy on one file with the project's own configuration (the zope
    plugin, the overrides), whatever the working directory.
    """
    stdout, stderr, status = api.run(
        [
            f"--config-file={CONFIG}",
            "--strict",
            "--no-incremental",
            "--cache-dir=/dev/null",
            str(path),
        ]
    )
    return stdout + stderr, status


class ChannelTypingTests(SynchronousTestCase):
    def test_mismatched_handler_rejected(self) -> None:
        """mypy reports a handle_in whose assigns type differs from the join's."""
        output, status = _mypy(HERE / "mismatched_handler.py")
        self.assertEqual(status, 1, output)
        self.assertIn("mismatched_handler.py:39: error", output)
        self.assertIn('"with_handle_in" of "Channel"', output)
        self.assertIn("Game", output)

    def test_matched_handler_accepted(self) -> None:
        """mypy accepts the same channel when the handler's assigns match."""
        output, status = _mypy(HERE / "matched_handler.py")
        self.assertEqual(status, 0, output)
