"""A stand-in for ``time.sleep`` that records what a retrying hook asked for."""

from __future__ import annotations


class Sleeps(list):
    """Records requested sleeps instead of sleeping (retry tests stay fast)."""

    def __call__(self, seconds: float) -> None:
        self.append(seconds)
