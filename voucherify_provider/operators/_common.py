"""Small pieces the operator, the sensor and the transfer share (kept import-light)."""

from __future__ import annotations

from typing import Any, NoReturn

from voucherify_provider.errors import VoucherifyExportFailedError

# airflow.sdk.exceptions costs ~0.25 s to import and DAG files import these modules: load it when raising.

ERROR_HINT = (
    "a separate sensor task cannot recover on its own (its retry sees the same ERROR export): create the "
    "export with VoucherifyCreateExportOperator(wait_for_completion=True), whose retries start a fresh export, "
    "or clear the create task together with this one."
)


def conf_default_deferrable() -> bool:
    """``[operators] default_deferrable`` (False when unset)."""
    try:
        from airflow.sdk.configuration import conf
    except ImportError:  # Airflow 3.1: the task SDK has no configuration module yet
        from airflow.configuration import conf

    return bool(conf.getboolean("operators", "default_deferrable", fallback=False))


def airflow_exception(name: str) -> type[Exception]:
    """An Airflow exception class by name, loaded when raising: from the task SDK (3.2+), else from core
    (Airflow 3.1's ``airflow.sdk.exceptions`` lacks AirflowFailException, AirflowSensorTimeout, ...)."""
    import importlib

    found = getattr(importlib.import_module("airflow.sdk.exceptions"), name, None)
    if found is None:
        found = getattr(importlib.import_module("airflow.exceptions"), name)
    return found


def is_templated(value: Any) -> bool:
    """Whether a value still holds Jinja (so it can only be checked after rendering)."""
    if isinstance(value, str):
        return "{{" in value or "{%" in value
    if isinstance(value, dict):
        return any(is_templated(k) or is_templated(v) for k, v in value.items())
    if isinstance(value, (list, tuple)):
        return any(is_templated(v) for v in value)
    return value is not None and not isinstance(value, (int, float, bool))


def fail_task(message: str) -> NoReturn:
    """Fail the task without retries (bad input, or an outcome a retry cannot change)."""
    raise airflow_exception("AirflowFailException")(message)


def raise_for_event(event: dict[str, Any], *, retryable_error: bool, sensor: bool = False) -> str:
    """Map a VoucherifyExportTrigger event to the export id or to the exception for its outcome."""
    status, export_id, message = event.get("status"), str(event.get("export_id")), str(event.get("message"))
    if status == "success":
        return export_id
    if status == "export_error":
        if retryable_error:
            raise VoucherifyExportFailedError(export_id, "this task's retry will create one.")
        fail_task(str(VoucherifyExportFailedError(export_id, ERROR_HINT)))
    if status == "not_found":
        fail_task(message)
    if status == "timeout":
        if sensor:
            raise airflow_exception("AirflowSensorTimeout")(message)
        raise airflow_exception("AirflowException")(message)
    raise airflow_exception("AirflowException")(message or f"Unexpected event {event!r}")
