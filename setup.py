"""
Packaging for Beryl.  C{twisted.plugins} is listed by hand: it has no
C{__init__.py} (twistd skips plugin directories that have one), so
C{find_packages} cannot see it.
"""

import re

from setuptools import find_packages, setup

with open("beryl/__init__.py", encoding="utf-8") as init:
    version = re.search(r'^__version__ = "([^"]+)"', init.read(), re.M).group(1)

setup(
    name="beryl",
    version=version,
    description=(
        "Phoenix Channels compatible real-time server on Twisted: channels, "
        "presence, cluster pub/sub"
    ),
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    license="MIT",
    license_files=["LICENSE"],
    url="https://github.com/beryl-project/beryl",
    project_urls={
        "Documentation": "https://github.com/beryl-project/beryl/blob/main/docs/guide.md",
        "Source": "https://github.com/beryl-project/beryl",
        "Issues": "https://github.com/beryl-project/beryl/issues",
        "Changelog": "https://github.com/beryl-project/beryl/commits/main",
    },
    python_requires=">=3.11",
    packages=find_packages(include=["beryl", "beryl.*"]) + ["twisted.plugins"],
    package_data={"beryl": ["py.typed", "demo/static/*"]},
    exclude_package_data={"twisted.plugins": ["dropin.cache"]},
    install_requires=[
        "twisted>=23.10",
        "autobahn>=23.1",
        "attrs>=23.1",
        "zope.interface>=6.0",
        "orjson>=3.9",
        "prometheus-client>=0.17",
        "PyJWT>=2.8",
        "itsdangerous>=2.1",
        "automat>=24.8",
    ],
    extras_require={
        # ssl: server endpoints and tls: cluster peers.
        "tls": ["twisted[tls]>=23.10"],
        "redis": ["txredisapi>=1.4.10", "twisted[tls]>=23.10"],
        "test": [
            "hypothesis>=6.80",
            "mypy>=1.8",
            "mypy-zope>=1.0",
            "ruff>=0.6",
            # the API reference and the changelog, built by scripts/test.sh
            "pydoctor>=24.3",
            "towncrier>=23.6",
            # the wss:// test and TLS cluster links
            "twisted[tls]>=23.10",
            # python -m build and twine check run in scripts/test.sh
            "build>=1.0",
            "twine>=5.0",
            # the demo page in headless Chromium
            "selenium>=4.15",
            # third-party Python clients (docs/clients.md)
            "phxsocket>=0.1.5",
            "phoenix-channels-python-client>=0.4",
            # HTTP tests (Levee storage routes)
            "treq>=23.11",
            # the Redis backplane tests
            "txredisapi>=1.4.10",
        ],
    },
    classifiers=[
        "Development Status :: 4 - Beta",
        "Framework :: Twisted",
        "Intended Audience :: Developers",
        "Operating System :: POSIX",
        "Programming Language :: Python :: 3",
        "Programming Language :: Python :: 3 :: Only",
        "Programming Language :: Python :: 3.11",
        "Programming Language :: Python :: 3.12",
        "Programming Language :: Python :: 3.13",
        "Topic :: Internet :: WWW/HTTP",
        "Topic :: Software Development :: Libraries",
        "Typing :: Typed",
    ],
)
