"""VoucherifyCreateExportOperator: start an export for one object and window, optionally wait for it."""

from __future__ import annotations

import time
from collections.abc import Sequence
from datetime import datetime, timedelta, timezone
from functools import cached_property
from typing import TYPE_CHECKING, Any

from airflow.sdk import BaseOperator

from voucherify_provider import DEFAULT_CONN_ID, catalog
from voucherify_provider.arguments import conf_default_deferrable, is_templated, with_callback
from voucherify_provider.errors import VoucherifyConfigError, VoucherifyExportFailedError, VoucherifyNotFoundError
from voucherify_provider.exports import ExportStatus, export_parameters
from voucherify_provider.outcomes import TriggerOutcome, config_errors_fail_task, raise_for_event
from voucherify_provider.utc import as_utc, iso_utc
from voucherify_provider.window import Window, change_filters, merge_filters

try:  # Airflow 3.3+: a retry after a worker crash reconnects to the export it already created
    from airflow.sdk import ResumableJobMixin

    RECONNECTS = True
except ImportError:  # Airflow 3.1/3.2: common-compat's stand-in creates a new export on every try
    from airflow.providers.common.compat.sdk import ResumableJobMixin

    RECONNECTS = False

if TYPE_CHECKING:
    from airflow.sdk import Context

    from voucherify_provider.hooks.voucherify import VoucherifyHook

# How far a try's export's ``created_at`` may read from the request time it recorded: the API's clock
# against the worker's, and, after it, the create call's own time (its timeouts and rate-limit waits).
CLOCK_SKEW = timedelta(seconds=30)
CREATE_CALL_WINDOW = timedelta(minutes=3)


class VoucherifyCreateExportOperator(ResumableJobMixin, BaseOperator):
    """Create a Voucherify export and return its id (XCom).

    Windowed objects export the records created in ``[window_start, window_end)``, by default the run's
    data interval; every record lands in exactly one of consecutive windows whatever the API's bound
    rules (see ``voucherify_provider.window``), and the creation column is always exported so the
    landing step can place each row. Everything is validated before any API call.

    :param exported_object: one of voucher, redemption, publication, customer, order, points_expiration,
        voucher_transactions.
    :param fields: field keys to export (default: the object's documented defaults).
    :param order: sort order, e.g. ``-created_at``.
    :param filters: Voucherify filters, merged with the window (``and``).
    :param window_start: window start (aware datetime or ISO string); default ``data_interval_start``.
    :param window_end: window end; default ``data_interval_end``.
    :param windowed: export a created_at window (default: when the object supports it) or a full snapshot.
    :param incremental: export the records created **or updated** in the window (order, customer, voucher),
        with their id, created_at and updated_at; the landing step places each by its last change.
    :param wait_for_completion: wait until the export is DONE; an ERROR export fails the task so that a
        retry starts a fresh export.
    :param deferrable: wait in the triggerer instead of a worker slot (default: ``[operators]
        default_deferrable``).
    :param poll_interval: seconds between status checks at first (``wait_for_completion``); the waits then
        double up to ``max_poll_interval``. Deferred, the first check comes ``poll_interval`` after the export
        is created; polling in the worker, it checks at once.
    :param max_poll_interval: the longest wait between two status checks, in seconds (default 120).
    :param wait_timeout: seconds to wait for the export to be DONE before the task fails (default 6 hours).
    :param voucherify_conn_id: the ``voucherify`` connection.

    Exports this task gives up on are deleted in Voucherify, not left with their data downloadable: an
    ERROR export, the export of a task killed while it waits (in the worker, or deferred), of a task that
    fails for good, and, when a cleared run exports again, the previous run's. An export a retry can still
    reconnect to is kept for it, and so is one a try created but died before recording: its retry finds
    it by its request. The landing deletes the exports it lands (``delete_export``).
    """

    template_fields: Sequence[str] = (
        "exported_object", "fields", "order", "filters", "window_start", "window_end", "voucherify_conn_id",
    )
    template_fields_renderers = {"filters": "json", "fields": "json"}
    ui_color = "#ffe5cc"
    external_id_key = "voucherify_export_id"

    def __init__(
        self,
        *,
        exported_object: str,
        fields: Sequence[str] | None = None,
        order: str | None = None,
        filters: dict[str, Any] | None = None,
        window_start: datetime | str | None = None,
        window_end: datetime | str | None = None,
        windowed: bool | None = None,
        incremental: bool = False,
        wait_for_completion: bool = False,
        deferrable: bool = conf_default_deferrable(),
        poll_interval: float = 5.0,
        max_poll_interval: float = 120.0,
        wait_timeout: float = 6 * 3600,
        voucherify_conn_id: str = DEFAULT_CONN_ID,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.exported_object = exported_object
        self.fields = list(fields) if isinstance(fields, (list, tuple)) else fields
        self.order = order
        self.filters = filters
        self.window_start = window_start
        self.window_end = window_end
        self.windowed = windowed
        self.incremental = incremental
        self.wait_for_completion = wait_for_completion
        self.deferrable = deferrable
        self.poll_interval = poll_interval
        self.max_poll_interval = max_poll_interval
        self.wait_timeout = wait_timeout
        self.voucherify_conn_id = voucherify_conn_id
        self._export_id: str | None = None  # the export this try created or reconnected to
        self._found_id: str | None = None  # an export an earlier try made without recording its id
        self._ti: Any = None
        # Final failures (after any retry policy) delete the export; on Airflow < 3.3 a retry never reconnects,
        # so the export of a failed try is deleted before the next one too.
        self.on_failure_callback = with_callback(self.on_failure_callback, self._delete_abandoned_export)
        if not RECONNECTS:
            self.on_retry_callback = with_callback(self.on_retry_callback, self._delete_abandoned_export)
        if not any(is_templated(v) for v in (exported_object, fields, order, filters)):
            # Fail at DAG-parse time when nothing is left to template.
            self._plan(window=None, check_only=True)

    @cached_property
    def hook(self) -> VoucherifyHook:
        """The sync hook for this task's connection."""
        from voucherify_provider.hooks.voucherify import VoucherifyHook

        return VoucherifyHook(self.voucherify_conn_id)

    # -- validation -----------------------------------------------------------------------------------

    def _plan(self, window: Window | None, check_only: bool = False) -> dict[str, Any]:
        """Validated request arguments; raises VoucherifyConfigError / CatalogError naming the problem."""
        obj = catalog.get_object(self.exported_object)
        windowed = obj.windowable if self.windowed is None else self.windowed
        if self.incremental and not obj.incremental:
            able = [o.name for o in catalog.OBJECTS.values() if o.incremental]
            raise VoucherifyConfigError(
                f"{obj.name} cannot be exported incrementally (the API has no updated_at filter for it); "
                f"incremental exports exist for {', '.join(able)}. Drop incremental=True."
            )
        if self.incremental and self.windowed is False:
            raise VoucherifyConfigError("incremental=True exports a change window; it cannot be windowed=False.")
        if windowed and not obj.windowable:
            raise VoucherifyConfigError(
                f"{obj.name} cannot be exported in created_at windows (the API offers no such filter); "
                "set windowed=False to export a full snapshot."
            )
        if not windowed and (self.window_start is not None or self.window_end is not None) and not check_only:
            raise VoucherifyConfigError(
                f"window_start/window_end were given but this {obj.name} export is a snapshot "
                f"({'the object cannot be windowed' if not obj.windowable else 'windowed=False'})."
            )
        fields = list(obj.validate_fields(self.fields)) if self.fields is not None else list(obj.default_fields)
        # The landing step places every row by its creation (and, for changes, last-change) time.
        placing = [obj.created_field] if windowed else []
        if self.incremental:
            placing += [obj.updated_field, obj.key_field]
        fields += [f for f in placing if f and f not in fields]
        user_filters = obj.validate_filters(self.filters) if self.filters is not None else None
        if self.incremental:
            filters = change_filters(user_filters, window, obj.updated_field or "")
        else:
            filters = merge_filters(user_filters, window if windowed else None)
        parameters = export_parameters(obj, fields, self.order, filters)  # same checks as the hook, before any call
        return {"exported_object": obj.name, "fields": fields, "order": self.order, "filters": filters,
                "windowed": windowed, "incremental": self.incremental, "parameters": parameters}

    def plan(self, context: Context) -> dict[str, Any]:
        """The export request this run makes (validated), failing the task without retries if invalid."""
        with config_errors_fail_task():
            obj = catalog.get_object(self.exported_object)
            windowed = obj.windowable if self.windowed is None else self.windowed
            window = None
            if windowed and obj.windowable:
                window = Window.for_run(self.window_start, self.window_end, context)
            plan = self._plan(window)
        return plan

    # -- ResumableJobMixin ----------------------------------------------------------------------------

    def execute(self, context: Context) -> str:
        """Create (or, after a crash, reconnect to) the export; return its id."""
        self._ti = context.get("ti")
        self.plan(context)  # validate before anything else, retries or not
        if not RECONNECTS:
            self.log.info("Airflow < 3.3 has no task state store: if this task's worker dies, its retry creates a "
                          "new export instead of reconnecting to this one (upgrade to 3.3 to reconnect).")
        with config_errors_fail_task():  # e.g. a missing connection: its retries would all fail alike
            return str(self.execute_resumable(context))

    def submit_job(self, context: Context) -> dict[str, Any]:
        """Create the export; the stored id carries the run's clear number (see :meth:`get_job_status`).

        The request is recorded first: a try that dies between the POST and Airflow storing the id, or whose
        answer is lost, leaves its retry enough to find that export (:meth:`_find_unrecorded_export`)."""
        request = self.plan(context)
        store = context.get("task_state_store")
        if store is not None:
            store.set(self.external_id_key, {"requested_at": iso_utc(datetime.now(timezone.utc)),
                                             "clear_number": _clear_number(context)})
        export = self.hook.create_export(request["exported_object"], request["fields"], request["order"],
                                         request["filters"])
        self.log.info("Created export %s of %s (fields: %s)", export["id"], request["exported_object"],
                      ", ".join(request["fields"]))
        return {"export_id": str(export["id"]), "clear_number": _clear_number(context)}

    def get_job_status(self, external_id: Any, context: Context) -> str:
        """Status of the export an earlier try of this run created.

        Retries of the same run reconnect to it; a cleared or reprocessed run (new clear number) is a
        request for fresh data, so its old export counts as stale and a new one is made.
        """
        if _is_unrecorded(external_id):
            return self._find_unrecorded_export(external_id, context)
        if isinstance(external_id, dict) and external_id.get("clear_number") != _clear_number(context):
            self._delete(_export_id(external_id), "the run was cleared: it exports again")
            return "STALE"
        try:
            status = str(self.hook.get_export(_export_id(external_id))["status"])
        except VoucherifyNotFoundError:
            return "MISSING"
        if status == ExportStatus.ERROR:
            self._delete(_export_id(external_id), "it ended in ERROR")
        return status

    def _find_unrecorded_export(self, requested: dict[str, Any], context: Context) -> str:
        """An earlier try asked for an export and died (or lost the answer) before its id was stored: find it
        by its request among the exports made about then. One match is that try's: this try reconnects to it
        (a cleared run exports afresh and names it). None: the request never took effect. Several (another
        run asked the same at the same time) cannot be told apart: none is touched, and the log names them."""
        request = self.plan(context)
        at = as_utc(str(requested.get("requested_at")), "requested_at")
        found = self.hook.find_exports(request["exported_object"], request["parameters"], at - CLOCK_SKEW,
                                       at + CLOCK_SKEW + CREATE_CALL_WINDOW)
        if len(found) != 1:
            if found:
                self.log.warning(
                    "An earlier try asked for an export without recording its id, and %d exports match its "
                    "request (%s): another run asked the same meanwhile, so none is taken or deleted; delete "
                    "the one no run landed.", len(found), ", ".join(str(e["id"]) for e in found))
            return "MISSING"
        export_id, status = str(found[0]["id"]), str(found[0].get("status"))
        if requested.get("clear_number") != _clear_number(context):
            # Not deleted: if that request never took effect, this is another run's export, and it needs it.
            self.log.warning("The run was cleared after a try asked for an export without recording its id; "
                             "export %s matches that request: delete it if no run landed it.", export_id)
            return "STALE"
        self.log.info("Export %s was created by an earlier try that did not record its id: %s", export_id,
                      "exporting again, as it ended in ERROR" if status == ExportStatus.ERROR else "reconnecting")
        if status == ExportStatus.ERROR:
            self._delete(export_id, "it ended in ERROR")
            return status
        context["task_state_store"].set(self.external_id_key, {"export_id": export_id,
                                                              "clear_number": _clear_number(context)})
        self._found_id = export_id
        return status

    def is_job_active(self, status: str) -> bool:
        """SCHEDULED and IN_PROGRESS exports can be reconnected to."""
        return status in ExportStatus.active()

    def is_job_succeeded(self, status: str) -> bool:
        """A DONE export needs no new one."""
        return status == ExportStatus.DONE

    def poll_until_complete(self, external_id: Any, context: Context) -> str:  # type: ignore[override]
        """Wait for the export when asked to (sync or deferred); return its id.

        Returning the id matters: on a reconnect after a crash the mixin returns this method's result.
        """
        export_id = self._export_id = self._id_of(external_id)
        if not self.wait_for_completion:
            return export_id
        if self.deferrable:
            from voucherify_provider.triggers.export import VoucherifyExportTrigger

            self.defer(
                trigger=VoucherifyExportTrigger(export_id, self.voucherify_conn_id, time.time() + self.wait_timeout,
                                                self.poll_interval, self.max_poll_interval, delete_on_kill=True),
                method_name="execute_complete",
            )
        try:
            self.hook.wait_for_export(export_id, timeout=self.wait_timeout, poll_interval=self.poll_interval,
                                      max_poll_interval=self.max_poll_interval)
        except VoucherifyExportFailedError:
            self._delete(export_id, "it ended in ERROR")  # a retry exports afresh whatever happens
            raise
        return export_id

    def get_job_result(self, external_id: Any, context: Context) -> str:
        """The export id is the result."""
        return self._id_of(external_id)

    def execute_complete(self, context: Context, event: dict[str, Any]) -> str:
        """Turn the trigger's event into the export id or an exception (retries create a fresh export)."""
        self._export_id = str(event.get("export_id") or "") or None
        if event.get("status") == TriggerOutcome.EXPORT_ERROR.value and self._export_id:
            self._delete(self._export_id, "it ended in ERROR")
        return raise_for_event(event, retryable_error=True)

    # -- clean-up: exports this task gives up on leave Voucherify --------------------------------------

    def on_kill(self) -> None:
        """Killed while waiting in the worker (marked failed, execution_timeout, SIGTERM): delete the export,
        unless a retry will reconnect to it (Airflow 3.3 with retries left: a SIGTERM is as often a worker
        shutting down or a pod evicted as a user's kill). Quick on purpose: the kill follows within seconds."""
        if not self._export_id:
            return
        if RECONNECTS and _will_retry(self._ti):
            self.log.info("Killed: export %s is kept for the retry to reconnect to (a cleared run or a final "
                          "failure deletes it)", self._export_id)
            return
        self._delete(self._export_id, "the task was killed")

    def _delete_abandoned_export(self, context: Context) -> None:
        """Failure callback: the export of a task failing for good (or, before Airflow 3.3, retrying) is
        not landed by anyone."""
        export_id = self._export_id or _stored_export_id(context, self.external_id_key)
        if export_id:
            self._delete(export_id, "the retry creates a new one" if _will_retry(context.get("ti"))
                         else "the task failed")

    def _delete(self, export_id: str, why: str) -> None:
        self.hook.discard_export(export_id, why)

    def _id_of(self, external_id: Any) -> str:
        """The export id a stored value names (a recorded request: the export found for it)."""
        return self._found_id if _is_unrecorded(external_id) and self._found_id else _export_id(external_id)


def _stored_export_id(context: Context, key: str) -> str | None:
    """The export id the task state store holds for this task (a deferred task resumed in a new process)."""
    store = context.get("task_state_store")
    try:
        stored = store.get(key) if store is not None else None
    except Exception:
        return None
    return _export_id(stored) if stored and not _is_unrecorded(stored) else None


def _is_unrecorded(external_id: Any) -> bool:
    """A stored request whose export's id was never stored (see ``submit_job``)."""
    return isinstance(external_id, dict) and "export_id" not in external_id


def _will_retry(ti: Any) -> bool:
    """Whether a failure of this try is retried (Airflow's rule: tries left)."""
    return bool(ti is not None and getattr(ti, "try_number", 0) <= getattr(ti, "max_tries", 0))


def _export_id(external_id: Any) -> str:
    return str(external_id["export_id"] if isinstance(external_id, dict) else external_id)


def _clear_number(context: Context) -> int:
    dag_run = context.get("dag_run")
    return int(getattr(dag_run, "clear_number", 0) or 0)
