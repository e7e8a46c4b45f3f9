"""Streaming a Voucherify CSV into typed Arrow batches, and the one Parquet writer.

Everything here imports pyarrow: only import it inside ``execute`` (never at DAG-parse time).
"""
