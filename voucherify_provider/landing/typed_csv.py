"""The one CSV parser: a Voucherify export stream in, typed Arrow record batches out.

Columns are mapped to the requested field keys by position (the header holds labels, API_NOTES 5) and
typed per the catalog: UTC timestamps, exact decimals for money (``2000`` and ``2000.00``), integers,
booleans, dates, JSON kept as text. A value that does not parse fails naming the row, column and value,
or, when asked, goes to the rejected rows instead.
"""

from __future__ import annotations

import csv
import re
import struct
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import TYPE_CHECKING, Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv

from voucherify_provider.catalog import ExportedObject, FieldType
from voucherify_provider.errors import VoucherifyError
from voucherify_provider.landing.stream import IterStream
from voucherify_provider.privacy import redacted
from voucherify_provider.window import Window

if TYPE_CHECKING:
    from voucherify_provider.landing.column_policies import AppliedPolicies

ARROW_TYPES: dict[FieldType, pa.DataType] = {
    FieldType.STRING: pa.string(),
    FieldType.TIMESTAMP: pa.timestamp("ms", tz="UTC"),
    FieldType.DATE: pa.date32(),
    FieldType.MONEY: pa.decimal128(20, 2),
    FieldType.INTEGER: pa.int64(),
    FieldType.BOOLEAN: pa.bool_(),
    FieldType.JSON: pa.string(),
}
# Bytes parsed per step. Peak memory grows with it (4 MiB cost ~200 MB more than 1 MiB, at the same speed,
# in benchmarks/); a record must fit in one block, so a bigger record sends the file to the diagnosing
# path, which reads with DIAGNOSE_BLOCK.
READ_BLOCK = 1 << 20
DIAGNOSE_BLOCK = 32 << 20


class BadExportFileError(VoucherifyError, ValueError):
    """The export file does not have the shape or values its fields promise."""


class NeedsDiagnosis(VoucherifyError):
    """The fast path met a value it cannot type: read the file again with ``diagnose=True``.

    The fast path lets pyarrow type every column while parsing (as fast as a one-shot read); it cannot
    say which row failed, and cannot set rows aside. The diagnosing path reads columns as text, types them
    itself, and names the row, column and value (or rejects the rows).
    """


def arrow_schema(obj: ExportedObject, fields: Sequence[str]) -> pa.Schema:
    """Arrow schema of an export: one column per field key, typed from the catalog."""
    return pa.schema([pa.field(key, ARROW_TYPES[obj.field_type(key)], nullable=True, metadata=field_metadata(obj, key))
                      for key in fields])


def landed_schema(obj: ExportedObject, fields: Sequence[str], policies: AppliedPolicies | None = None) -> pa.Schema:
    """The schema a landing writes: the export's (:func:`arrow_schema`) under the column policies."""
    schema = arrow_schema(obj, fields)
    return schema if policies is None else policies.schema(schema)


def without_values(message: str) -> str:
    """An Arrow parse message without the values or row text it quotes (they may be personal data)."""
    message = re.sub(r"invalid value '.*'", "an invalid value", message, flags=re.DOTALL)
    return re.sub(r"(Expected \d+ columns, got \d+): .*", r"\1", message, flags=re.DOTALL)


def field_metadata(obj: ExportedObject, key: str) -> dict[str, str]:
    """A landed column's Parquet field metadata: its catalog type and, for amounts, their unit."""
    metadata = {"voucherify_type": obj.field_type(key).value}
    if unit := obj.unit(key):
        metadata["voucherify_unit"] = unit
    return metadata


@dataclass
class RejectedRows:
    """Rows that failed to type, kept as their raw strings with the reason (``on_bad_value='reject'``)."""

    fields: list[str]
    rows: list[list[str | None]] = field(default_factory=list)
    reasons: list[str] = field(default_factory=list)

    def add(self, raw: list[str | None], reason: str) -> None:
        """Keep one rejected row."""
        self.rows.append(raw)
        self.reasons.append(reason)


@dataclass
class ParseStats:
    """What a parse saw: rows kept, rows outside the window, rows rejected."""

    rows: int = 0
    outside_window: int = 0
    rejected: int = 0


class TypedCsvReader:
    """Parses one export file (or part) into typed batches.

    :param obj: the exported object (catalog entry).
    :param fields: the export's field keys, in column order.
    :param window: when set, only rows placed in ``[start, end)`` are kept (see ``window.py``).
    :param place_by: the time columns placing a row, the first non-null one wins: by default the creation
        field; change windows pass ``(updated_at, created_at)``, the record's last change.
    :param rejected: collect unparseable rows there instead of failing (diagnosing path).
    :param diagnose: read as text and type per column (slow, precise); the default fast path raises
        :class:`NeedsDiagnosis` on the first untypeable value.
    :param policies: column policies: dropped columns are not read at all, hashed ones are read as text and
        hashed before a batch leaves the reader. Messages never quote a personal field's value
        (:meth:`ExportedObject.is_personal`, or any column with a policy).
    """

    def __init__(self, obj: ExportedObject, fields: Sequence[str], *, window: Window | None = None,
                 place_by: Sequence[str] | None = None, rejected: RejectedRows | None = None,
                 label: str = "export", diagnose: bool = False, policies: AppliedPolicies | None = None) -> None:
        self.obj, self.fields, self.window, self.rejected, self.label = obj, list(fields), window, rejected, label
        self.diagnose = diagnose
        self.policies = policies
        self.schema = landed_schema(obj, fields, policies)
        self.columns = self.schema.names  # the fields that land, in order
        self.stats = ParseStats()
        self.place_by = list(place_by or [obj.created_field or ""])
        missing = [f for f in self.place_by if f not in self.fields]
        if window is not None and missing:
            raise BadExportFileError(
                f"A windowed {obj.name} export must include {', '.join(map(repr, missing))}, which place each row "
                f"in its window (fields: {', '.join(self.fields)})."
            )
        self._bounds: tuple[pa.Scalar, pa.Scalar] | None = None
        if window is not None:
            time_type = self.schema.field(self.place_by[0]).type
            self._bounds = (timestamp_scalar(window.start, time_type), timestamp_scalar(window.end, time_type))

    def batches(self, stream: IterStream) -> Iterator[pa.RecordBatch]:
        """Typed, window-filtered batches of one file; the header row is checked and dropped."""
        self._check_header(stream)
        if stream.at_end():
            return
        read = pacsv.ReadOptions(column_names=self.fields, block_size=DIAGNOSE_BLOCK if self.diagnose else READ_BLOCK,
                                 use_threads=True)
        parse = pacsv.ParseOptions(newlines_in_values=True)
        types = self.schema.types if not self.diagnose else [pa.string()] * len(self.columns)
        convert = pacsv.ConvertOptions(
            column_types=dict(zip(self.columns, types, strict=True)), strings_can_be_null=True,
            quoted_strings_can_be_null=True, null_values=[""], include_columns=self.columns,
        )
        row_offset = 0
        try:
            reader = pacsv.open_csv(pa.PythonFile(stream, mode="r"), read_options=read, parse_options=parse,
                                    convert_options=convert)
            for raw in reader:
                if self.diagnose:
                    typed = self._type_batch(raw, row_offset)
                else:
                    typed = pa.RecordBatch.from_arrays(raw.columns, schema=self.schema)
                row_offset += raw.num_rows
                typed = self._in_window(typed)
                if typed.num_rows:
                    self.stats.rows += typed.num_rows
                    yield typed if self.policies is None else self.policies.apply(typed)
        except pa.ArrowInvalid as err:
            if not self.diagnose and (str(err).startswith("In CSV column #") or "straddles" in str(err)):
                # Arrow quotes the value; the diagnosis names it, unless it is personal data.
                raise NeedsDiagnosis(f"{self.label}: {without_values(str(err))}") from None
            raise self._explain(err, row_offset) from None

    def _check_header(self, stream: IterStream) -> None:
        header = stream.read_line()
        if not header.strip():
            raise BadExportFileError(
                f"{self.label}: the file is empty: not even a header row. The download was cut short or the "
                "export is broken; download it again or re-create the export."
            )
        try:
            cells = next(csv.reader([header.decode("utf-8").rstrip("\r\n")]))
        except UnicodeDecodeError:
            raise BadExportFileError(f"{self.label}: the header row is not valid UTF-8.") from None
        if len(cells) != len(self.fields):
            raise BadExportFileError(
                f"{self.label}: the header has {len(cells)} columns ({', '.join(cells)}) but the export has "
                f"{len(self.fields)} fields ({', '.join(self.fields)}). The file does not match the requested "
                "fields; re-create the export."
            )

    def _explain(self, err: pa.ArrowInvalid, row_offset: int) -> BadExportFileError:
        text = str(err)
        columns = re.search(r"Expected (\d+) columns, got (\d+)", text)
        if columns:
            return BadExportFileError(
                f"{self.label}: a CSV row near row {row_offset + 1} has {columns.group(2)} columns but the export "
                f"has {columns.group(1)} fields ({', '.join(self.fields)}). The file does not match the "
                "requested fields; re-create the export."
            )
        if "UTF8" in text or "UTF-8" in text:
            return BadExportFileError(
                f"{self.label}: the file holds bytes that are not valid UTF-8 (near row {row_offset + 1}); "
                "it is corrupt or not a Voucherify export. Re-download or re-create the export."
            )
        if "straddles" in text:
            return BadExportFileError(
                f"{self.label}: a record near row {row_offset + 1} is larger than {DIAGNOSE_BLOCK >> 20} MiB; "
                "export fewer fields (e.g. without metadata) to land it.")
        return BadExportFileError(f"{self.label}: the CSV cannot be parsed near row {row_offset + 1}: "
                                  f"{without_values(text)}")

    def _shown(self, key: str, value: Any) -> str:
        """A bad value as messages quote it: personal data (or a column under a policy) is not shown."""
        personal = self.obj.is_personal(key) or (self.policies is not None and key in self.policies.policies.columns)
        return redacted(value) if personal else repr(value)

    def _type_batch(self, raw: pa.RecordBatch, row_offset: int) -> pa.RecordBatch:
        columns: list[pa.Array] = []
        bad = None
        reasons: dict[int, str] = {}
        for key, target in zip(self.columns, self.schema.types, strict=True):
            column = raw.column(key)
            try:
                columns.append(pc.cast(column, target) if target != pa.string() else column)
            except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
                mask, first = self._bad_values(column, target, key, row_offset, reasons)
                if self.rejected is None:
                    index, value = first
                    raise BadExportFileError(
                        f"{self.label}: row {row_offset + index + 1}, column {key!r} "
                        f"({self.obj.field_type(key).value}): cannot read {self._shown(key, value)} as "
                        f"{self.obj.field_type(key).value}. Pass on_bad_value='reject' to set such rows aside "
                        "in a rejected-rows file instead of failing."
                    ) from None
                bad = mask if bad is None else pc.or_(bad, mask)
                columns.append(pc.cast(pc.if_else(mask, pa.scalar(None, pa.string()), column), target))
        typed = pa.RecordBatch.from_arrays(columns, schema=self.schema)
        if bad is not None and self.rejected is not None:
            for index in range(raw.num_rows):
                if bad[index].as_py():
                    values = [raw.column(k)[index].as_py() for k in self.columns]
                    if self.policies is not None:
                        values = self.policies.raw_row(self.columns, values)
                    self.rejected.add(values, reasons[index])
            self.stats.rejected += pc.sum(pc.cast(bad, pa.int64())).as_py() or 0
            typed = typed.filter(pc.invert(bad))
        return self._in_window(typed)

    def _bad_values(self, column: pa.Array, target: pa.DataType, key: str, row_offset: int,
                    reasons: dict[int, str]) -> tuple[pa.Array, tuple[int, Any]]:
        """Per-value slow path, taken only when a column fails to cast: which rows are bad."""
        flags: list[bool] = []
        first: tuple[int, Any] | None = None
        for index, value in enumerate(column.to_pylist()):
            ok = True
            if value is not None:
                try:
                    pc.cast(pa.array([value], pa.string()), target)
                except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
                    ok = False
            flags.append(not ok)
            if not ok:
                reasons.setdefault(index, f"column {key!r}: cannot read {self._shown(key, value)} as "
                                          f"{self.obj.field_type(key).value}")
                if first is None:
                    first = (index, value)
        assert first is not None
        return pa.array(flags, pa.bool_()), first

    def _in_window(self, batch: pa.RecordBatch) -> pa.RecordBatch:
        if self._bounds is None or batch.num_rows == 0:
            return batch
        columns = [batch.column(f) for f in self.place_by]
        placed = columns[0] if len(columns) == 1 else pc.coalesce(*columns)
        start, end = self._bounds
        if placed.null_count == 0:  # the common case, every row inside: keep the batch without copying it
            bounds = pc.min_max(placed)
            if pc.and_(pc.greater_equal(bounds["min"], start), pc.less(bounds["max"], end)).as_py():
                return batch
        keep = pc.fill_null(pc.and_(pc.greater_equal(placed, start), pc.less(placed, end)), False)
        kept = batch.filter(keep)
        self.stats.outside_window += batch.num_rows - kept.num_rows
        return kept


EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)
_PER_SECOND = {"s": 1, "ms": 1_000, "us": 1_000_000, "ns": 1_000_000_000}


def timestamp_scalar(moment: datetime, type_: pa.DataType) -> pa.Scalar:
    """``moment`` as an Arrow scalar of timestamp type ``type_``, built from its bytes.

    Converting Python objects to Arrow (``pa.scalar``, ``pa.array``, comparing with a datetime) imports
    pandas in pyarrow 26: 0.6 s added to every landing task, which otherwise never loads it.
    """
    micros = (moment - EPOCH) // timedelta(microseconds=1)
    value = micros * _PER_SECOND[type_.unit] // 1_000_000
    raw = pa.py_buffer(struct.pack("<q", value))
    return pa.Array.from_buffers(pa.int64(), 1, [None, raw]).view(type_)[0]


# Arrays built from buffers, for the same reason as ``timestamp_scalar``: no pandas import on the hot path.
def int64_array(values: Any) -> pa.Array:
    """A numpy int64 array as an Arrow array (no copy)."""
    import numpy as np

    values = np.ascontiguousarray(values, dtype=np.int64)
    return pa.Array.from_buffers(pa.int64(), len(values), [None, pa.py_buffer(values)])


def int64_values(array: pa.Array) -> Any:
    """The values of a null-free Arrow array of 8-byte integers or timestamps, as numpy int64 (no copy)."""
    import numpy as np

    return np.frombuffer(array.buffers()[1], dtype=np.int64, count=len(array), offset=array.offset * 8)


def string_array(values: Sequence[str]) -> pa.Array:
    """Python strings as an Arrow string array."""
    encoded = [v.encode("utf-8") for v in values]
    offsets, end = [0], 0
    for value in encoded:
        end += len(value)
        offsets.append(end)
    return pa.StringArray.from_buffers(len(encoded), pa.py_buffer(struct.pack(f"<{len(offsets)}i", *offsets)),
                                       pa.py_buffer(b"".join(encoded)))

