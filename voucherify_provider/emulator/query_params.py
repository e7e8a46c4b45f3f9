"""Query parameters read as the API reads them: out of range or enum is a 400 ``invalid_query_params``."""

from __future__ import annotations

from collections.abc import Sequence

from fastapi import Request

from voucherify_provider.emulator.api_errors import invalid_query_params


def int_param(request: Request, name: str, default: int, low: int, high: int) -> int:
    """An integer in ``[low, high]``, ``default`` when absent."""
    raw = request.query_params.get(name)
    if raw is None:
        return default
    try:
        value = int(raw)
    except ValueError:
        value = low - 1
    if not low <= value <= high:
        raise invalid_query_params(f"Query parameter {name} should be an integer between {low} and {high}")
    return value


def choice_param(request: Request, name: str, allowed: Sequence[str]) -> str | None:
    """One of ``allowed``, None when absent."""
    value = request.query_params.get(name)
    if value is not None and value not in allowed:
        raise invalid_query_params(f"Query parameter {name} should be one of {', '.join(allowed)}")
    return value
