"""Column policies applied by the CSV reader while it streams, before anything is written.

``drop``ped columns are never read (the parser skips them); ``hash``ed ones are read as text and land as
strings holding the hex HMAC-SHA256 of the exported text (``privacy.py``). Each distinct value of a batch is
hashed once (a customer's name repeats across their redemptions). Imports pyarrow: the landing imports this
inside ``execute``.
"""

from __future__ import annotations

import binascii
import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass, field

import pyarrow as pa
import pyarrow.compute as pc

from voucherify_provider.privacy import HASH_ALGORITHM, ColumnPolicies, key_id


@dataclass(frozen=True)
class AppliedPolicies:
    """Policies with their key, ready to transform a landing's batches and schema."""

    policies: ColumnPolicies
    key: bytes | None
    _hasher: Hasher | None = field(default=None, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if self.key is not None:  # one per landing: its cache spans the batches and columns of the landing
            object.__setattr__(self, "_hasher", Hasher(self.key))

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
        assert self._hasher is not None
        columns = [self._hasher(column) if self.policies.columns.get(name) == "hash" else column
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
    """The hex HMAC-SHA256 of one value's UTF-8 text (the same computation as :class:`Hasher`'s columns)."""
    return Hasher(key).digest(value).decode("ascii")


class Hasher:
    """Hashes columns with one key. Each distinct value of a batch is hashed once, and values seen in
    earlier batches come from a bounded cache (a customer's name repeats across their redemptions); the
    cache holds at most ``capacity`` values (about 20 MB at 100,000), then starts again. A landing whose
    values rarely repeat (customers' own emails) stops caching: there the cache cost more than it saved."""

    def __init__(self, key: bytes, capacity: int = 100_000) -> None:
        self.key, self.capacity = key, capacity
        self._cache: dict[str, bytes] | None = {}
        self._lookups = self._hits = 0
        # HMAC's keyed inner and outer states (RFC 2104), copied per value: a third of hmac.digest's time,
        # which sets up OpenSSL's HMAC on every call (measured: 1.6 against 4.3 us per value).
        block = hashlib.sha256(key).digest() if len(key) > 64 else key
        block = block.ljust(64, b"\0")
        self._inner = hashlib.sha256(bytes(b ^ 0x36 for b in block))
        self._outer = hashlib.sha256(bytes(b ^ 0x5C for b in block))

    def digest(self, value: str) -> bytes:
        """One value's hex HMAC-SHA256, as ASCII bytes."""
        inner, outer = self._inner.copy(), self._outer.copy()
        inner.update(value.encode("utf-8"))
        outer.update(inner.digest())
        return binascii.hexlify(outer.digest())

    def __call__(self, column: pa.Array | pa.ChunkedArray) -> pa.Array:
        """The hex HMAC-SHA256 of each value's text, as strings (nulls stay null)."""
        import numpy as np

        if isinstance(column, pa.ChunkedArray):
            column = column.combine_chunks()
        text = column if pa.types.is_string(column.type) else pc.cast(column, pa.string())
        encoded = pc.dictionary_encode(text)
        values, cache = encoded.dictionary.to_pylist(), self._cache
        if cache is None:
            digests = [self.digest(value) for value in values]
        else:
            digests = []
            for value in values:
                digest = cache.get(value)
                if digest is None:
                    digest = self.digest(value)
                    if len(cache) >= self.capacity:
                        cache.clear()
                    cache[value] = digest
                else:
                    self._hits += 1
                digests.append(digest)
            self._lookups += len(values)
            if self._lookups >= MEASURED_LOOKUPS and self._hits < self._lookups * MIN_HIT_RATE:
                self._cache = None
        # Every digest is 64 characters: the offsets are a range, the data one join.
        offsets = np.arange(0, HEX_LENGTH * (len(digests) + 1), HEX_LENGTH, dtype=np.int32)
        hashed = pa.StringArray.from_buffers(len(digests), pa.py_buffer(offsets), pa.py_buffer(b"".join(digests)))
        return pc.take(hashed, encoded.indices)


HEX_LENGTH = 64
# After this many distinct values, a cache hit by fewer than this share of them is not worth keeping.
MEASURED_LOOKUPS, MIN_HIT_RATE = 50_000, 0.2
