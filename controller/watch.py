"""Notice changes made by another process (the CLI) to the same database, within a poll.

Registrations and campaigns bump a revision counter in the same transaction; this
thread reads the two counters every `interval_s` (two one-row queries) and calls
`on_change` when either moved.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

from controller.store.base import Stores

log = logging.getLogger(__name__)

INTERVAL_S = 0.5


class RevisionWatch:
    def __init__(
        self, stores: Stores, on_change: Callable[[], None], interval_s: float = INTERVAL_S
    ) -> None:
        self.stores = stores
        self.on_change = on_change
        self.interval_s = interval_s
        self._seen: tuple[int, int] | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="revision-watch", daemon=True)

    def check(self) -> bool:
        """Read the revisions once; True (after calling on_change) when they moved."""
        now = (self.stores.registry.revision(), self.stores.campaigns.revision())
        moved = self._seen is not None and now != self._seen
        self._seen = now
        if moved:
            self.on_change()
        return moved

    def start(self) -> None:
        self.check()
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=5)

    def _loop(self) -> None:
        while not self._stop.wait(self.interval_s):
            try:
                self.check()
            except Exception:
                log.exception("could not read the revisions; trying again")
