"""Operators of the Voucherify provider."""
