"""
Summarising warnings that a peer can make this node repeat: one line per
kind and address per interval, and a count of those held back.
"""

from __future__ import annotations

from twisted.internet.interfaces import IReactorTime

__all__ = ["LogLimiter"]


class LogLimiter:
    """
    Decides which of many similar warnings to log.

    A warning is keyed by what it is about and who caused it (a peer's
    address).  The first of a key is logged; the rest within C{interval}
    seconds are counted, and the next one logged after that says how many
    were held back.  Memory is bounded: at most C{max_keys} keys are kept.
    """

    def __init__(
        self, clock: IReactorTime, interval: float = 60.0, max_keys: int = 1024
    ) -> None:
        self._clock = clock
        self.interval = interval
        self.max_keys = max_keys
        self._keys: dict[tuple[str, str], tuple[float, int]] = {}

    def allow(self, kind: str, address: str) -> int | None:
        """
        Whether to log a warning of C{kind} caused by C{address} now.

        @return: C{None} to hold it back, or the number of warnings of this
            key held back since the last one logged.
        """
        now = self._clock.seconds()
        key = (kind, address)
        previous = self._keys.get(key)
        if previous is not None and now - previous[0] < self.interval:
            self._keys[key] = (previous[0], previous[1] + 1)
            return None
        if previous is None and len(self._keys) >= self.max_keys:
            self._forget_old(now)
        self._keys[key] = (now, 0)
        return 0 if previous is None else previous[1]

    def _forget_old(self, now: float) -> None:
        for key, (logged, _) in list(self._keys.items()):
            if now - logged >= self.interval:
                del self._keys[key]
        if len(self._keys) >= self.max_keys:
            # Everything is recent: a flood from many addresses.  Start over
            # rather than grow.
            self._keys.clear()
