"""Deprecated location of the current-state operators (they are not transfers): import them from
:mod:`voucherify_provider.operators.current_state`. Kept so DAGs written for 0.1 still parse."""

from voucherify_provider.operators.current_state import (
    VoucherifyMarkDeletedOperator,
    VoucherifyMergeCurrentStateOperator,
)

__all__ = ["VoucherifyMarkDeletedOperator", "VoucherifyMergeCurrentStateOperator"]
