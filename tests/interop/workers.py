"""
Which worker process of C{twistd beryl --workers N} serves which
connections, read from Linux's C{/proc}: for the interop tests and the
benchmarks.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Iterable

__all__ = ["connections_per_worker", "worker_pids"]

_STARTED = re.compile(r"Worker (\d+) started \(pid (\d+)\)")


def worker_pids(log: str) -> dict[int, int]:
    """
    The pid of every worker, by worker number, as the parent last logged
    it (a restarted worker has its new pid).
    """
    return {int(index): int(pid) for index, pid in _STARTED.findall(log)}


def _established_inodes(port: int) -> set[str]:
    inodes: set[str] = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            rows = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for row in rows:
            fields = row.split()
            local_port = int(fields[1].rsplit(":", 1)[1], 16)
            if local_port == port and fields[3] == "01":
                inodes.add(fields[9])
    return inodes


def connections_per_worker(port: int, pids: Iterable[int]) -> dict[int, int]:
    """
    For each process in C{pids}, how many established TCP connections to
    local C{port} it holds.
    """
    inodes = _established_inodes(port)
    counts: dict[int, int] = {}
    for pid in pids:
        count = 0
        try:
            fds = os.listdir(f"/proc/{pid}/fd")
        except OSError:
            fds = []
        for fd in fds:
            try:
                target = os.readlink(f"/proc/{pid}/fd/{fd}")
            except OSError:
                continue
            if target.startswith("socket:[") and target[8:-1] in inodes:
                count += 1
        counts[pid] = count
    return counts
