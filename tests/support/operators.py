"""The three operators called directly (no scheduler): a task context and operators with the tests' defaults."""

from __future__ import annotations

from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from tests.support.exports import wait_done
from voucherify_provider.operators.export import VoucherifyCreateExportOperator
from voucherify_provider.transfers.export_to_warehouse import VoucherifyDownloadToWarehouseOperator

UTC = timezone.utc
JAN2, JAN3 = datetime(2024, 1, 2, tzinfo=UTC), datetime(2024, 1, 3, tzinfo=UTC)
CONN_ID = "voucherify_test"  # the connection the ``emu`` fixture points at the emulator


class FakeStateStore(dict):
    """Stands in for Airflow 3.3's task_state_store."""

    def set(self, key: str, value: Any) -> None:
        """Store a value, as the task state store does."""
        self[key] = value


def context(**extra: Any) -> dict[str, Any]:
    """A task context for the window 2024-01-02..03 with an empty state store, plus ``extra``."""
    return {"data_interval_start": JAN2, "data_interval_end": JAN3, "task_state_store": FakeStateStore(), **extra}


def create(**kwargs: Any) -> VoucherifyCreateExportOperator:
    """A create-export task on the test connection (redemptions unless ``exported_object`` says otherwise)."""
    kwargs.setdefault("exported_object", "redemption")
    return VoucherifyCreateExportOperator(task_id="create", voucherify_conn_id=CONN_ID, **kwargs)


def land(dest: Path | str, export_id: str, **kwargs: Any) -> VoucherifyDownloadToWarehouseOperator:
    """A landing task of ``export_id`` into ``dest`` on the test connection."""
    return VoucherifyDownloadToWarehouseOperator(task_id="land", export_id=export_id, destination=str(dest),
                                                 voucherify_conn_id=CONN_ID, **kwargs)


def done_export(emu: Any, hook: Any, name: str = "redemption", **kwargs: Any) -> str:
    """Create an export with :func:`create` in the :func:`context` window and wait until it is done; its id."""
    export_id = create(exported_object=name, **kwargs).execute(context())
    wait_done(hook, export_id)
    return export_id
