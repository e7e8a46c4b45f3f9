"""Small pieces the operator, the sensor and the transfer share (kept import-light)."""

from __future__ import annotations

from typing import Any

from airflow.sdk.exceptions import AirflowException, AirflowFailException, AirflowSensorTimeout

from voucherify_provider.errors import VoucherifyExportFailedError

ERROR_HINT = (
    "a separate sensor task cannot recover on its own (its retry sees the same ERROR export): create the "
    "export with VoucherifyCreateExportOperator(wait_for_completion=True), whose retries start a fresh export, "
    "or clear the create task together with this one."
)


def conf_default_deferrable() -> bool:
    """``[operators] default_deferrable`` (False when unset)."""
    from airflow.sdk.configuration import conf

    return bool(conf.getboolean("operators", "default_deferrable", fallback=False))


def is_templated(value: Any) -> bool:
    """Whether a value still holds Jinja (so it can only be checked after rendering)."""
    if isinstance(value, str):
        return "{{" in value or "{%" in value
    if isinstance(value, dict):
        return any(is_templated(k) or is_templated(v) for k, v in value.items())
    if isinstance(value, (list, tuple)):
        return any(is_templated(v) for v in value)
    return value is not None and not isinstance(value, (int, float, bool))


def raise_for_event(event: dict[str, Any], *, retryable_error: bool, sensor: bool = False) -> str:
    """Map a VoucherifyExportTrigger event to the export id or to the exception for its outcome."""
    status, export_id, message = event.get("status"), str(event.get("export_id")), str(event.get("message"))
    if status == "success":
        return export_id
    if status == "export_error":
        if retryable_error:
            raise VoucherifyExportFailedError(export_id, "this task's retry will create one.")
        raise AirflowFailException(str(VoucherifyExportFailedError(export_id, ERROR_HINT)))
    if status == "not_found":
        raise AirflowFailException(message)
    if status == "timeout":
        if sensor:
            raise AirflowSensorTimeout(message)
        raise AirflowException(message)
    raise AirflowException(message or f"Unexpected event {event!r}")
