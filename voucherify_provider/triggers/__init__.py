"""Triggers of the Voucherify provider."""

from voucherify_provider.triggers.export import VoucherifyExportTrigger

__all__ = ["VoucherifyExportTrigger"]
