"""VoucherifyExportDoneSensor: wait until an export is DONE (poke, reschedule or deferrable)."""

from __future__ import annotations

import time
from collections.abc import Sequence
from datetime import timedelta
from functools import cached_property
from typing import TYPE_CHECKING, Any

from airflow.sdk import BaseSensorOperator

from voucherify_provider import DEFAULT_CONN_ID
from voucherify_provider.arguments import conf_default_deferrable
from voucherify_provider.errors import VoucherifyExportFailedError, VoucherifyNotFoundError
from voucherify_provider.exports import ExportStatus
from voucherify_provider.outcomes import (
    ERROR_HINT,
    airflow_exception,
    config_errors_fail_task,
    fail_task,
    raise_for_event,
)

if TYPE_CHECKING:
    from airflow.sdk import Context

    from voucherify_provider.hooks.voucherify import VoucherifyHook


class VoucherifyExportDoneSensor(BaseSensorOperator):
    """Succeed when the export is DONE; fail at once on ERROR or an unknown export id.

    The wait between pokes grows from ``poke_interval`` towards ``max_wait`` (exponential backoff), so a
    long export costs few API calls. With ``deferrable=True`` (default: ``[operators] default_deferrable``)
    the wait happens in the triggerer through :class:`VoucherifyExportTrigger`, whose first check comes
    ``poke_interval`` after the task starts.

    :param export_id: the export to wait for (templated; usually the create task's XCom).
    :param voucherify_conn_id: the ``voucherify`` connection.
    :param deferrable: wait in the triggerer instead of a worker slot (default: ``[operators]
        default_deferrable``); the first check then comes ``poke_interval`` after the task starts.
    :param poke_interval: seconds between checks at first; with ``exponential_backoff`` the wait grows towards
        ``max_wait``.
    :param max_wait: the longest wait between two checks (a timedelta or seconds; default 2 minutes).
    :param exponential_backoff: grow the wait between pokes from ``poke_interval`` towards ``max_wait``
        (default True); deferred, the trigger always doubles its wait.
    :param timeout: give up after this many seconds (BaseSensorOperator's ``timeout``; AirflowSensorTimeout
        names the export's last status).
    """

    template_fields: Sequence[str] = ("export_id", "voucherify_conn_id")
    ui_color = "#ffd8b0"

    def __init__(
        self,
        *,
        export_id: str,
        voucherify_conn_id: str = DEFAULT_CONN_ID,
        deferrable: bool = conf_default_deferrable(),
        poke_interval: float = 5.0,
        max_wait: timedelta | float = timedelta(minutes=2),
        exponential_backoff: bool = True,
        **kwargs: Any,
    ) -> None:
        super().__init__(poke_interval=poke_interval, max_wait=max_wait, exponential_backoff=exponential_backoff,
                         **kwargs)
        self.export_id = export_id
        self.voucherify_conn_id = voucherify_conn_id
        self.deferrable = deferrable

    @cached_property
    def hook(self) -> VoucherifyHook:
        """The sync hook for this task's connection."""
        from voucherify_provider.hooks.voucherify import VoucherifyHook

        return VoucherifyHook(self.voucherify_conn_id)

    def execute(self, context: Context) -> Any:
        """Defer to the trigger, or poke; a timeout says how long it waited and the last status."""
        if self.deferrable:
            # No check before deferring: the export was usually created seconds ago, and every call counts
            # against the rate limit; the trigger's first poll comes after ``poke_interval``.
            from voucherify_provider.triggers.export import VoucherifyExportTrigger

            max_wait = self.max_wait.total_seconds() if self.max_wait else 120.0
            self.defer(
                trigger=VoucherifyExportTrigger(self.export_id, self.voucherify_conn_id,
                                                time.time() + float(self.timeout), float(self.poke_interval),
                                                max_wait),
                method_name="execute_complete",
            )
        sensor_timeout = airflow_exception("AirflowSensorTimeout")
        try:
            super().execute(context)
        except sensor_timeout as err:
            status = self._status_or_unknown()
            raise sensor_timeout(
                f"Export {self.export_id} was still {status} when the sensor timed out ({err}). Raise "
                "`timeout` if exports of this size take longer."
            ) from None
        return self.export_id

    def poke(self, context: Context) -> bool:
        """True once DONE; ERROR and unknown ids fail the task at once (no waiting for the timeout)."""
        try:
            with config_errors_fail_task():
                status = str(self.hook.get_export(self.export_id)["status"])
        except VoucherifyNotFoundError as err:
            fail_task(f"Export {self.export_id} does not exist: {err}")
        self.log.info("Export %s is %s", self.export_id, status)
        if status == ExportStatus.ERROR:
            fail_task(str(VoucherifyExportFailedError(self.export_id, ERROR_HINT)))
        return status == ExportStatus.DONE

    def execute_complete(self, context: Context, event: dict[str, Any]) -> str:
        """Turn the trigger's event into success or the exception for its outcome."""
        return raise_for_event(event, retryable_error=False, sensor=True)

    def _status_or_unknown(self) -> str:
        try:
            return str(self.hook.get_export(self.export_id)["status"])
        except Exception:
            return "in an unknown state"
