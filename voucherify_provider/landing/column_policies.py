"""Column policies applied by the CSV reader while it streams, before anything is written.

``drop``ped columns are never read (the parser skips them); ``hash``ed ones are read as text and land as
strings holding the hex HMAC-SHA256 of the exported text (``privacy.py``). Each distinct value of a batch is
hashed once (a customer's name repeats across their redemptions). Imports pyarrow: the landing imports this
inside ``execute``.
"""

from __future__ import annotations

import hmac
import json
from collections.abc import Sequence
from dataclasses import dataclass

import pyarrow as pa
import pyarrow.compute as pc

from voucherify_provider.landing.typed_csv import string_array
from voucherify_provider.privacy import HASH_ALGORITHM, ColumnPolicies, key_id


@dataclass(frozen=True)
class AppliedPolicies:
    """Policies with their key, ready to transform a landing's batches and schema."""

    policies: ColumnPolicies
    key: bytes | None

    def schema(self, schema: pa.Schema) -> pa.Schema:
        """The landed schema: dropped fields gone, hashed ones strings, each marked in its field metadata; the
        file metadata lists every policy (dropped columns included)."""
        if not self.policies.columns:
            return schema
        fields = []
        for f in schema:
            policy = self.policies.columns.get(f.name)
            if policy == "drop":
                continue
            if policy == "hash":
                metadata = {**(f.metadata or {}), b"voucherify_policy": b"hash",
                            b"voucherify_hash": HASH_ALGORITHM.encode(),
                            b"voucherify_hash_key_id": self.key_id.encode()}
                metadata.pop(b"voucherify_unit", None)
                f = pa.field(f.name, pa.string(), nullable=True, metadata=metadata)
            fields.append(f)
        listed = json.dumps(dict(self.policies.columns), sort_keys=True).encode()
        return pa.schema(fields, metadata={**(schema.metadata or {}), b"voucherify.column_policies": listed})

    @property
    def key_id(self) -> str:
        """The key's fingerprint (empty without a key)."""
        return key_id(self.key) if self.key else ""

    def apply(self, batch: pa.RecordBatch) -> pa.RecordBatch:
        """One batch of the landed schema (hashed columns read as text) with its hashed columns hashed."""
        if not self.policies.hashed:
            return batch
        assert self.key is not None
        columns = [hash_array(column, self.key) if self.policies.columns.get(name) == "hash" else column
                   for name, column in zip(batch.schema.names, batch.columns, strict=True)]
        return pa.RecordBatch.from_arrays(columns, schema=batch.schema)

    def raw_row(self, fields: Sequence[str], row: Sequence[str | None]) -> list[str | None]:
        """A row of the landed columns' raw text (the rejected-rows file), hashed columns hashed."""
        return [hmac_hex(self.key, value) if value is not None and self.key is not None
                and self.policies.columns.get(name) == "hash" else value
                for name, value in zip(fields, row, strict=True)]

    def manifest(self) -> dict[str, object]:
        """What the manifest records: the policy per field and, when hashing, the algorithm and key id (never
        the key)."""
        if not self.policies.columns:
            return {}
        record: dict[str, object] = {"column_policies": dict(self.policies.columns)}
        if self.policies.hashed:
            record["hash"] = {"algorithm": HASH_ALGORITHM, "key_id": self.key_id, "of": "the value's exported text"}
        return record


def landed_under(manifest: dict[str, object]) -> dict[str, object]:
    """The policies a manifest (or history summary) says its partition was landed under, in the shape of
    :meth:`AppliedPolicies.manifest`."""
    return {k: manifest[k] for k in ("column_policies", "hash") if k in manifest}


def hmac_hex(key: bytes, value: str) -> str:
    """The hex HMAC-SHA256 of one value's UTF-8 text."""
    return hmac.digest(key, value.encode("utf-8"), "sha256").hex()


def hash_array(column: pa.Array | pa.ChunkedArray, key: bytes) -> pa.Array:
    """The hex HMAC-SHA256 of each value's text (nulls stay null); distinct values are hashed once."""
    if isinstance(column, pa.ChunkedArray):
        column = column.combine_chunks()
    text = column if pa.types.is_string(column.type) else pc.cast(column, pa.string())
    encoded = pc.dictionary_encode(text)
    hashed = string_array([hmac_hex(key, v) for v in encoded.dictionary.to_pylist()])
    return pc.take(hashed, encoded.indices)
