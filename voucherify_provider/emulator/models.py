"""The emulator's state, independent of HTTP: the per-resource models, composed into one :class:`Backend`."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

from voucherify_provider.emulator.config import EmulatorConfig
from voucherify_provider.emulator.dataset import Dataset
from voucherify_provider.emulator.exports.models import ExportsModel
from voucherify_provider.emulator.ground_truth import GroundTruth
from voucherify_provider.emulator.orders.models import OrdersModel
from voucherify_provider.emulator.redemptions.models import RedemptionsModel
from voucherify_provider.emulator.request_log import RequestLog
from voucherify_provider.emulator.shared import Shared


class Backend:
    """One emulator's state: exports, orders, redemptions, the request log and the ground truth.

    ``clock`` drives export latency and download-token lifetime (see :class:`ExportsModel`).
    """

    def __init__(self, config: EmulatorConfig, clock: Callable[[], float] = time.monotonic) -> None:
        self.shared = Shared(config)
        self.exports = ExportsModel(self.shared, clock)
        self.orders = OrdersModel(self.shared)
        self.redemptions = RedemptionsModel(self.shared)
        self.truth = GroundTruth(self.shared)
        self.requests = RequestLog()

    @property
    def config(self) -> EmulatorConfig:
        """The settings, shared with every model (``PATCH /_emulator/config`` changes them in place)."""
        return self.shared.config

    @property
    def dataset(self) -> Dataset:
        """The generated data."""
        return self.shared.dataset

    @property
    def lock(self) -> threading.RLock:
        """The one lock every model's state is guarded by."""
        return self.shared.lock

    def reset(self) -> None:
        """Forget exports, API-made orders and rollbacks, and the request log; keep the dataset."""
        with self.shared.lock:
            self.shared.reset()
            self.exports.reset()
            self.orders.reset()
            self.redemptions.reset()
            self.requests.reset()
