"""pytest fixtures shipped with the provider, so users' own DAG tests can run against the emulator."""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from voucherify_provider.emulator.server import RunningEmulator


@pytest.fixture
def voucherify_emulator(request: pytest.FixtureRequest) -> Iterator[RunningEmulator]:
    """A running emulator on a free loopback port (settings via ``@pytest.mark.voucherify_emulator(...)``)."""
    from voucherify_provider.emulator import EmulatorConfig, run_emulator

    marker = request.node.get_closest_marker("voucherify_emulator")
    config = EmulatorConfig(**(marker.kwargs if marker else {}))
    with run_emulator(config) as emulator:
        yield emulator


def pytest_configure(config: pytest.Config) -> None:
    """Register the marker that passes settings to the fixture."""
    config.addinivalue_line("markers", "voucherify_emulator(**settings): EmulatorConfig for the fixture")
