"""
Packaging for Beryl.  C{twisted.plugins} is listed by hand: it has no
C{__init__.py} (twistd skips plugin directories that have one), so
C{find_packages} cannot see it.
"""

from setuptools import find_packages, setup

setup(
    name="beryl",
    version="0.1.0",
    description=(
        "Phoenix Channels compatible real-time server on Twisted: channels, "
        "presence, cluster pub/sub"
    ),
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
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
        "automat>=24.8",
    ],
    extras_require={
        "test": [
            "hypothesis>=6.80",
            "mypy>=1.8",
            "mypy-zope>=1.0",
            "ruff>=0.6",
            "twisted[tls]>=23.10",
        ],
        # TLS endpoints (ssl: / tls:) for the cluster port and its peers.
        "tls": ["twisted[tls]>=23.10"],
    },
    classifiers=[
        "Framework :: Twisted",
        "Programming Language :: Python :: 3",
        "Typing :: Typed",
    ],
)
