"""Checks on task arguments shared by the operators, the sensor and the landing (import-light)."""

from __future__ import annotations

from typing import Any


def conf_default_deferrable() -> bool:
    """``[operators] default_deferrable`` (False when unset)."""
    try:
        from airflow.sdk.configuration import conf
    except ImportError:  # Airflow 3.1: the task SDK has no configuration module yet
        from airflow.configuration import conf

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


def with_callback(existing: Any, callback: Any) -> list[Any]:
    """A task's callbacks (one callable, a list, or None) with ``callback`` after the user's own."""
    if existing is None:
        return [callback]
    return [*(existing if isinstance(existing, (list, tuple)) else [existing]), callback]
