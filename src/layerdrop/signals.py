"""Turn the first SIGTERM / Ctrl-C into a request to save and stop; a second Ctrl-C aborts at once."""

from __future__ import annotations

import signal
from typing import Any


class StopSignal:
    def __init__(self):
        self.received: int | None = None
        self._previous: dict[int, Any] = {}

    @property
    def name(self) -> str | None:
        return None if self.received is None else signal.Signals(self.received).name

    def __enter__(self) -> StopSignal:
        for sig in (signal.SIGTERM, signal.SIGINT):
            try:
                self._previous[sig] = signal.signal(sig, self._handle)
            except ValueError:  # not the main thread: leave signals alone
                pass
        return self

    def _handle(self, signum, frame) -> None:
        if self.received is not None and signum == signal.SIGINT:
            raise KeyboardInterrupt
        self.received = signum

    def __exit__(self, *exc) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
