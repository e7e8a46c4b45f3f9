"""How the provider's tasks end: fail at once, retry, time out; the trigger's events and what each means.

Import-light: ``airflow.sdk.exceptions`` costs ~0.25 s to import and DAG files import the operators, so
exception classes are loaded when raising.
"""

from __future__ import annotations

import importlib
from collections.abc import Iterator
from contextlib import contextmanager
from enum import Enum
from typing import Any, NoReturn

from voucherify_provider.errors import VoucherifyExportFailedError

ERROR_HINT = (
    "a separate sensor task cannot recover on its own (its retry sees the same ERROR export): create the "
    "export with VoucherifyCreateExportOperator(wait_for_completion=True), whose retries start a fresh export, "
    "or clear the create task together with this one."
)


class TriggerOutcome(str, Enum):
    """The ``status`` of a :class:`~voucherify_provider.triggers.export.VoucherifyExportTrigger` event: every
    outcome the waiting task must tell apart."""

    SUCCESS = "success"
    EXPORT_ERROR = "export_error"
    NOT_FOUND = "not_found"
    TIMEOUT = "timeout"
    FAILED = "failed"


def airflow_exception(name: str) -> type[Exception]:
    """An Airflow exception class by name, loaded when raising: from the task SDK (3.2+), else from core
    (Airflow 3.1's ``airflow.sdk.exceptions`` lacks AirflowFailException, AirflowSensorTimeout, ...)."""
    found = getattr(importlib.import_module("airflow.sdk.exceptions"), name, None)
    if found is None:
        found = getattr(importlib.import_module("airflow.exceptions"), name)
    return found


def fail_task(message: str) -> NoReturn:
    """Fail the task without retries (bad input, or an outcome a retry cannot change).

    Usable in your own ``@task`` functions, e.g. around :meth:`Window.for_run
    <voucherify_provider.window.Window.for_run>` when a run has no data interval.
    """
    raise airflow_exception("AirflowFailException")(message)


def raise_for_event(event: dict[str, Any], *, retryable_error: bool, sensor: bool = False) -> str:
    """Map a trigger event to the export id or to the exception for its outcome."""
    export_id, message = str(event.get("export_id")), str(event.get("message"))
    try:
        outcome = TriggerOutcome(event.get("status"))
    except ValueError:
        raise airflow_exception("AirflowException")(event.get("message") or f"Unexpected event {event!r}") from None
    if outcome is TriggerOutcome.SUCCESS:
        return export_id
    if outcome is TriggerOutcome.EXPORT_ERROR:
        if retryable_error:
            raise VoucherifyExportFailedError(export_id, "this task's retry will create one.")
        fail_task(str(VoucherifyExportFailedError(export_id, ERROR_HINT)))
    if outcome is TriggerOutcome.NOT_FOUND:
        fail_task(message)
    if outcome is TriggerOutcome.TIMEOUT and sensor:
        raise airflow_exception("AirflowSensorTimeout")(message)
    raise airflow_exception("AirflowException")(message)


@contextmanager
def config_errors_fail_task() -> Iterator[None]:
    """Turn a configuration mistake raised inside (bad bound, unknown field, bad destination, a connection
    that is missing or points credentials at an unsafe host) into a task failure without retries: a retry
    would meet the same mistake, so the message with its fix is shown at once."""
    from voucherify_provider.catalog import CatalogError
    from voucherify_provider.errors import VoucherifyConfigError, VoucherifySecurityError

    try:
        yield
    except (VoucherifyConfigError, CatalogError, VoucherifySecurityError) as err:
        fail_task(str(err))
