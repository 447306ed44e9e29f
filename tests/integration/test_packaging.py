"""
The wheel ships what C{twistd beryl} needs: the plugin module without any
C{__init__.py} above it, the typing marker and the demo page, and no
plugin cache.
"""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

from twisted.trial.unittest import SynchronousTestCase

ROOT = Path(__file__).resolve().parents[2]


class WheelTests(SynchronousTestCase):
    def test_wheel_contents(self) -> None:
        """The built wheel holds the twistd plugin, py.typed and the demo page, but no twisted/__init__.py or dropin.cache."""
        out = Path(self.mktemp())
        out.mkdir(parents=True)
        subprocess.run(
            [
                sys.executable,
                "-m",
                "pip",
                "wheel",
                "--quiet",
                "--no-deps",
                "-w",
                str(out),
                str(ROOT),
            ],
            check=True,
            capture_output=True,
        )
        (wheel,) = out.glob("beryl-*.whl")
        names = set(zipfile.ZipFile(wheel).namelist())
        self.assertIn("twisted/plugins/beryl_plugin.py", names)
        self.assertIn("beryl/py.typed", names)
        self.assertIn("beryl/demo/static/index.html", names)
        self.assertIn("beryl/tap.py", names)
        self.assertNotIn("twisted/__init__.py", names)
        self.assertNotIn("twisted/plugins/__init__.py", names)
        self.assertEqual([n for n in names if n.endswith("dropin.cache")], [])
        self.assertEqual([n for n in names if n.startswith("tests/")], [])
