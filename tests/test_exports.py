"""An export read back (ExportDescription), and the 0.1 import paths kept for copied DAG files."""

from __future__ import annotations

import pytest
from airflow.sdk.exceptions import AirflowFailException

from voucherify_provider import catalog
from voucherify_provider.exports import ExportDescription, ExportStatus

pytestmark = pytest.mark.unit
ORDER = catalog.get_object("order")
WINDOW = {"conditions": {"$after": ["2024-01-01T23:59:59.999Z"], "$before": ["2024-01-03T00:00:00.000Z"]}}


@pytest.mark.parametrize(("filters", "windowed", "changes"), [
    ({"junction": "and", "created_at": WINDOW}, True, False),
    ({"junction": "or", "created_at": WINDOW, "updated_at": WINDOW}, True, True),
    # A snapshot filtered by the user with an `or` on updated_at is still a snapshot, never a change window.
    ({"junction": "or", "updated_at": WINDOW, "status": {"conditions": {"$in": ["PAID"]}}}, False, False),
    ({}, False, False),
])
def test_an_export_says_what_it_is(filters, windowed, changes):
    export = ExportDescription({"status": "DONE", "exported_object": "order",
                                "parameters": {"fields": ["id"], "filters": filters}})
    assert (export.windowed, export.is_change_window(ORDER)) == (windowed, changes)
    assert export.status == ExportStatus.DONE and export.fields == ["id"]


def test_the_earlier_releases_import_paths_still_work():
    from voucherify_provider.operators._common import fail_task
    from voucherify_provider.transfers.current_state import VoucherifyMergeCurrentStateOperator
    from voucherify_provider.transfers.export_to_warehouse import lineage_dataset_name

    assert VoucherifyMergeCurrentStateOperator.__module__ == "voucherify_provider.operators.current_state"
    assert callable(lineage_dataset_name)
    with pytest.raises(AirflowFailException, match="no interval"):
        fail_task("no interval")
