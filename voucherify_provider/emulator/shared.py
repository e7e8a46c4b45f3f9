"""What every resource model reads or bumps: settings, the dataset, one lock, ids, the data revision."""

from __future__ import annotations

import itertools
import threading
import time

from voucherify_provider.emulator.config import EmulatorConfig
from voucherify_provider.emulator.dataset import Dataset, mix, tag, to_ms
from voucherify_provider.emulator.filters import parse_time


def now_ms() -> int:
    """Wall-clock milliseconds (``created_at`` of what the API makes)."""
    return int(time.time() * 1000)


class Shared:
    """State the resource models share. One re-entrant lock guards all of it and every model's own state,
    so an operation touching several models (a rollback bumping the revision) stays atomic."""

    def __init__(self, config: EmulatorConfig) -> None:
        self.config = config
        self.dataset = Dataset(config.seed, config.scale, to_ms(config.start), to_ms(config.end))
        self.lock = threading.RLock()
        self.reset()

    def reset(self) -> None:
        """Restart ids and the revision."""
        with self.lock:
            # One counter for every kind of id, so ids are the same for the same request sequence.
            self._counter = itertools.count(1)
            self.revision = 0

    def new_id(self, prefix: str) -> str:
        """A fresh id (``exp_``, ``ord_``, ``rr_``, ``aa_``...), reproducible after a reset."""
        n = next(self._counter)
        return f"{prefix}{tag(mix(self.config.seed, n, 7), 16)}{n:08x}"

    def data_changed(self) -> None:
        """Note a change to the data (an API-made order, a rollback): it keys the cached export files."""
        self.revision += 1

    def as_of(self) -> int | None:
        """The data clock (ms) when set: the data as it was then; None: all of the history."""
        return parse_time(self.config.data_clock) if self.config.data_clock else None
