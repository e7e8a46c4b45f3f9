"""Transfers of the Voucherify provider."""
