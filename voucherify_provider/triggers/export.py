"""VoucherifyExportTrigger: waits in the triggerer until an export is DONE, one event per outcome."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any

from airflow.triggers.base import BaseTrigger, TriggerEvent

from voucherify_provider.errors import VoucherifyApiError, VoucherifyAuthError, VoucherifyNotFoundError
from voucherify_provider.exports import ExportStatus, next_interval
from voucherify_provider.outcomes import TriggerOutcome


class VoucherifyExportTrigger(BaseTrigger):
    """Poll an export with the async hook until it leaves SCHEDULED/IN_PROGRESS or time runs out.

    The first poll comes ``poll_interval`` after the trigger starts, the waits then double (up to
    ``max_poll_interval``), and the last poll falls on ``end_time``.

    :param export_id: the export to wait for.
    :param voucherify_conn_id: connection to use.
    :param end_time: ``time.time()`` after which to give up (event ``timeout``).
    :param poll_interval: first wait between polls; grows towards ``max_poll_interval``.
    :param max_poll_interval: the longest wait between two polls.
    :param delete_on_kill: delete the export when the deferred task is killed (marked failed or success
        while waiting): the task that created it will not land it. Sensors waiting on another task's export
        leave it alone.
    """

    def __init__(self, export_id: str, voucherify_conn_id: str, end_time: float, poll_interval: float = 5.0,
                 max_poll_interval: float = 120.0, delete_on_kill: bool = False) -> None:
        super().__init__()
        self.export_id = export_id
        self.voucherify_conn_id = voucherify_conn_id
        self.end_time = end_time
        self.poll_interval = poll_interval
        self.max_poll_interval = max_poll_interval
        self.delete_on_kill = delete_on_kill

    def serialize(self) -> tuple[str, dict[str, Any]]:
        """Classpath and arguments (no secrets: the triggerer reads the connection itself)."""
        return (
            "voucherify_provider.triggers.export.VoucherifyExportTrigger",
            {"export_id": self.export_id, "voucherify_conn_id": self.voucherify_conn_id,
             "end_time": self.end_time, "poll_interval": self.poll_interval,
             "max_poll_interval": self.max_poll_interval, "delete_on_kill": self.delete_on_kill},
        )

    async def on_kill(self) -> None:
        """The deferred task was killed by a user: delete its export, unless it was not this task's to delete.

        Only user kills call this (Airflow 3.3+), never a triggerer restart, so the export is not needed again.
        """
        if not self.delete_on_kill:
            return
        from voucherify_provider.hooks.voucherify_async import VoucherifyAsyncHook

        try:
            await asyncio.wait_for(VoucherifyAsyncHook(self.voucherify_conn_id).delete_export(self.export_id), 20)
        except VoucherifyNotFoundError:
            return
        except Exception as err:  # the kill goes on; say what is left behind
            self.log.warning("Killed while waiting; export %s could not be deleted (%s): delete it in Voucherify.",
                             self.export_id, type(err).__name__)
            return
        self.log.info("Killed while waiting: deleted export %s in Voucherify", self.export_id)

    async def run(self) -> AsyncIterator[TriggerEvent]:
        """Poll until an outcome, then emit exactly one event."""
        from voucherify_provider.hooks.voucherify_async import VoucherifyAsyncHook

        hook = VoucherifyAsyncHook(self.voucherify_conn_id)
        interval, status, polls = self.poll_interval, "UNKNOWN", 0
        while True:
            # Wait first: the export was just created or just checked, so an immediate poll is a wasted call.
            await asyncio.sleep(max(0.0, min(interval, self.end_time - time.time())))
            try:
                polls += 1
                current = await hook.get_export_status(self.export_id)
                status = current.value
            except VoucherifyNotFoundError:
                yield self._event(TriggerOutcome.NOT_FOUND, status, polls,
                                  f"Export {self.export_id} does not exist (deleted, or created with another "
                                  "connection).")
                return
            except VoucherifyAuthError as err:
                yield self._event(TriggerOutcome.FAILED, status, polls, str(err))
                return
            except VoucherifyApiError as err:
                if err.status is not None and err.status < 500 and err.status != 429:
                    yield self._event(TriggerOutcome.FAILED, status, polls, str(err))
                    return
                # Transient after the hook's own retries (5xx, 429, network): keep waiting, back off.
                self.log.warning("Export %s: transient error while polling (%s); still waiting", self.export_id, err)
            else:
                if current is ExportStatus.DONE:
                    yield self._event(TriggerOutcome.SUCCESS, status, polls,
                                      f"Export {self.export_id} is DONE.")
                    return
                if current is ExportStatus.ERROR:
                    yield self._event(TriggerOutcome.EXPORT_ERROR, status, polls,
                                      f"Export {self.export_id} ended in ERROR.")
                    return
            if time.time() >= self.end_time:
                yield self._event(TriggerOutcome.TIMEOUT, status, polls,
                                  f"Export {self.export_id} still {status} when the wait ran out.")
                return
            interval = next_interval(interval, self.max_poll_interval)

    def _event(self, outcome: TriggerOutcome, status: str, polls: int, message: str) -> TriggerEvent:
        return TriggerEvent({"status": outcome.value, "export_id": self.export_id, "export_status": status,
                             "polls": polls, "message": message})
