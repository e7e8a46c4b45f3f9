"""Benchmark inputs: redemption CSVs as the emulator writes them, at any size, quickly.

The emulator's generator is exact but pure Python (~20k rows/s); for millions of rows a block of real
emulator rows (metadata JSON, quoted commas and newlines, non-ASCII names) is repeated with each copy's
ids made unique, which keeps realistic widths and quoting at disk speed.
"""

from __future__ import annotations

import csv
import io
from pathlib import Path

from voucherify_provider import catalog
from voucherify_provider.emulator.dataset import Dataset, render_row

FIELDS = list(catalog.OBJECTS["redemption"].fields)
BLOCK_ROWS = 20_000


def make_redemption_csv(path: Path, rows: int, seed: int = 42) -> Path:
    """Write a labelled-header redemption CSV of ``rows`` rows (cached by name)."""
    if path.exists():
        return path
    obj = catalog.OBJECTS["redemption"]
    data = Dataset(seed, BLOCK_ROWS, 1704067200000, 1704672000000)
    kinds = [obj.field_type(f).value for f in FIELDS]
    block: list[str] = []
    for i in range(min(rows, BLOCK_ROWS)):
        row = data.row("redemption", i)
        buffer = io.StringIO()
        cells = render_row(row, FIELDS, kinds, "fixed2")
        csv.writer(buffer).writerow(cells)
        block.append(buffer.getvalue())
    tmp = path.with_suffix(".tmp")
    with tmp.open("w", encoding="utf-8", newline="") as out:
        out.write(",".join(obj.label(f) for f in FIELDS) + "\r\n")
        written, copy = 0, 0
        while written < rows:
            for line in block[: rows - written]:
                out.write(f"c{copy}{line}" if copy else line)  # ids are the first column: keep them unique
            written += min(len(block), rows - written)
            copy += 1
    tmp.rename(path)
    return path
