"""Deprecated home of helpers the example DAG of 0.1 imported (``fail_task``): they live in
:mod:`voucherify_provider.outcomes` and :mod:`voucherify_provider.arguments` now. Kept so a copied DAG file
of the earlier release still runs."""

from voucherify_provider.arguments import conf_default_deferrable, is_templated
from voucherify_provider.outcomes import ERROR_HINT, airflow_exception, fail_task, raise_for_event

__all__ = ["ERROR_HINT", "airflow_exception", "conf_default_deferrable", "fail_task", "is_templated",
           "raise_for_event"]
