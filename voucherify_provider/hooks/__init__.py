"""Hooks of the Voucherify provider."""
