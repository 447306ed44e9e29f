"""
The wheel ships what C{twistd beryl} needs: the plugin module without any
C{__init__.py} above it, the typing marker and the demo page, and no
plugin cache; the sdist carries what it takes to test Beryl, with its
license and metadata.
"""

from __future__ import annotations

import email
import os
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

from twisted.trial.unittest import SynchronousTestCase

import beryl

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


def _sdist(testcase: SynchronousTestCase) -> Path:
    """
    The sdist that scripts/test.sh built (C{BERYL_DIST_DIR}), or one built
    now with C{python -m build --sdist}.
    """
    built = os.environ.get("BERYL_DIST_DIR")
    if built and list(Path(built).glob("beryl-*.tar.gz")):
        (sdist,) = Path(built).glob("beryl-*.tar.gz")
        return sdist
    out = Path(testcase.mktemp())
    out.mkdir(parents=True)
    subprocess.run(
        [sys.executable, "-m", "build", "--sdist", "--outdir", str(out), str(ROOT)],
        check=True,
        capture_output=True,
    )
    (sdist,) = out.glob("beryl-*.tar.gz")
    return sdist


class SdistTests(SynchronousTestCase):
    def test_sdist_contents(self) -> None:
        """The sdist carries the license, docs, tests and scripts, but no node_modules."""
        with tarfile.open(_sdist(self)) as archive:
            names = {
                name.split("/", 1)[1] for name in archive.getnames() if "/" in name
            }
        for name in (
            "LICENSE",
            "docs/guide.md",
            "scripts/test.sh",
            "tests/test_tap.py",
            "tests/interop/package.json",
            "beryl/demo/static/index.html",
        ):
            self.assertIn(name, names)
        self.assertEqual([n for n in names if "node_modules" in n], [])

    def test_metadata(self) -> None:
        """The sdist's metadata has the MIT license, project URLs, Python classifiers and beryl.__version__."""
        with tarfile.open(_sdist(self)) as archive:
            (member,) = [
                m
                for m in archive.getmembers()
                if m.name.count("/") == 1 and m.name.endswith("/PKG-INFO")
            ]
            extracted = archive.extractfile(member)
            assert extracted is not None
            metadata = email.message_from_bytes(extracted.read())
        self.assertEqual(metadata["Version"], beryl.__version__)
        self.assertEqual(metadata["License-Expression"] or metadata["License"], "MIT")
        self.assertIn("LICENSE", metadata.get_all("License-File"))
        self.assertIn(
            "Programming Language :: Python :: 3.11", metadata.get_all("Classifier")
        )
        urls = [url.split(",")[0] for url in metadata.get_all("Project-URL") or []]
        self.assertEqual(
            sorted(urls), ["Changelog", "Documentation", "Issues", "Source"]
        )
        self.assertIn("MIT License", (ROOT / "LICENSE").read_text())


class TestScriptTests(SynchronousTestCase):
    def test_old_python_refused(self) -> None:
        """scripts/test.sh on Python 3.10 stops at once with one line naming the version needed."""
        fake = Path(self.mktemp()).resolve()
        fake.write_text(
            "#!/bin/sh\n"
            'if [ "$1" = -V ]; then echo "Python 3.10.12"; exit 0; fi\n'
            # the version check: sys.exit(sys.version_info < (3, 11)) is exit 1
            "exit 1\n"
        )
        fake.chmod(0o755)
        done = subprocess.run(
            ["bash", str(ROOT / "scripts" / "test.sh")],
            env={**os.environ, "PYTHON": str(fake)},
            capture_output=True,
            text=True,
            timeout=60,
        )
        self.assertEqual(done.returncode, 1)
        self.assertEqual(done.stdout, "")
        (line,) = done.stderr.splitlines()
        self.assertIn("needs Python 3.11 or newer", line)
        self.assertIn("Python 3.10.12", line)
