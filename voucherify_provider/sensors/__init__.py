"""Sensors of the Voucherify provider."""
