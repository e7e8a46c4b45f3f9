"""Streaming a Voucherify CSV into typed Arrow batches, and the one Parquet writer.

Everything here but ``paths`` imports pyarrow: only import it inside ``execute`` (never at DAG-parse time).
"""
