"""Every record lands in exactly one of consecutive windows, whatever the API's bound rules."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest

from tests.support.exports import wait_done
from voucherify_provider import catalog
from voucherify_provider.errors import VoucherifyConfigError
from voucherify_provider.landing.stream import IterStream
from voucherify_provider.landing.typed_csv import TypedCsvReader
from voucherify_provider.window import Window, merge_filters

pytestmark = pytest.mark.unit

UTC = timezone.utc


@pytest.mark.parametrize("after_inclusive", [False, True])
@pytest.mark.parametrize("before_inclusive", [False, True])
@pytest.mark.parametrize("name", ["redemption", "order", "voucher_transactions"])
def test_consecutive_windows_partition_the_records(hook, emu, after_inclusive, before_inclusive, name):
    emu.configure(after_inclusive=after_inclusive, before_inclusive=before_inclusive)
    obj = catalog.get_object(name)
    id_field = "id"
    landed: list[str] = []
    day = datetime(2024, 1, 2, tzinfo=UTC)
    for offset in range(3):
        window = Window(day + timedelta(days=offset), day + timedelta(days=offset + 1))
        export = hook.create_export(name, fields=[id_field, obj.created_field], filters=merge_filters(None, window))
        wait_done(hook, export["id"])
        reader = TypedCsvReader(obj, [id_field, obj.created_field], window=window)
        for batch in reader.batches(IterStream(hook.iter_export_bytes(export["id"]))):
            landed.extend(batch.column(id_field).to_pylist())
    truth = emu.ground_truth(name, "2024-01-02T00:00:00Z", "2024-01-05T00:00:00Z", ids=True)
    assert len(landed) == len(set(landed))
    assert sorted(landed) == sorted(truth["ids"])


def test_window_validation_messages():
    with pytest.raises(VoucherifyConfigError, match="naive"):
        Window.of(datetime(2024, 1, 1), datetime(2024, 1, 2, tzinfo=UTC))
    with pytest.raises(VoucherifyConfigError, match="not after window_start"):
        Window.of(datetime(2024, 1, 2, tzinfo=UTC), datetime(2024, 1, 2, tzinfo=UTC))
    with pytest.raises(VoucherifyConfigError, match="CronDataIntervalTimetable"):
        Window.of(None, None)
    with pytest.raises(VoucherifyConfigError, match="ISO 8601"):
        Window.of("yesterday", "today")
    assert Window.of("2024-01-01T00:00:00Z", "2024-01-02T01:00:00+01:00").end == datetime(2024, 1, 2, tzinfo=UTC)
    assert Window.of("2024-01-01T00:00:00Z", "2024-01-02T00:00:00Z").partition == "window_start=20240101T000000Z"


def test_filters_merge_with_the_window():
    window = Window(datetime(2024, 1, 1, tzinfo=UTC), datetime(2024, 1, 2, tzinfo=UTC))
    merged = merge_filters({"result": {"conditions": {"$in": ["SUCCESS"]}}}, window)
    assert merged["junction"] == "and" and merged["result"] == {"conditions": {"$in": ["SUCCESS"]}}
    assert merged["created_at"]["conditions"] == {"$after": ["2023-12-31T23:59:59.999Z"],
                                                  "$before": ["2024-01-02T00:00:00.000Z"]}
    with pytest.raises(VoucherifyConfigError, match="already constrain created_at"):
        merge_filters({"created_at": {"conditions": {"$after": ["x"]}}}, window)
    with pytest.raises(VoucherifyConfigError, match="junction 'or' with several conditions"):
        merge_filters({"junction": "or", "result": {"conditions": {"$in": ["x"]}},
                       "voucher_code": {"conditions": {"$in": ["y"]}}}, window)


class _Run:
    def __init__(self, run_after: datetime) -> None:
        self.run_after = run_after


class _Dag:
    def __init__(self, timetable: object) -> None:
        self.timetable = timetable


def test_a_run_without_interval_takes_the_latest_complete_interval_of_its_timetable():
    from airflow.sdk import CronDataIntervalTimetable

    context = {"dag": _Dag(CronDataIntervalTimetable("@daily", timezone="UTC")),
               "dag_run": _Run(datetime(2024, 1, 5, 10, 30, tzinfo=timezone.utc)),
               "data_interval_start": None, "data_interval_end": None}
    window = Window.for_run(None, None, context)
    assert (window.start, window.end) == (datetime(2024, 1, 4, tzinfo=timezone.utc),
                                          datetime(2024, 1, 5, tzinfo=timezone.utc))


def test_a_run_without_interval_or_timetable_says_how_to_trigger_it():
    from airflow.sdk import CronTriggerTimetable

    for dag in (None, _Dag(CronTriggerTimetable("@daily", timezone="UTC"))):  # no timetable / zero-length
        with pytest.raises(VoucherifyConfigError, match=r"airflow dags trigger DAG_ID -l .*logical_date"):
            Window.for_run(None, None, {"dag": dag, "dag_run": _Run(datetime(2024, 1, 5, tzinfo=timezone.utc))})


def test_a_snapshot_is_named_by_its_interval_else_by_run_after():
    jan2, jan3 = datetime(2024, 1, 2, tzinfo=timezone.utc), datetime(2024, 1, 3, tzinfo=timezone.utc)
    with_interval = Window.snapshot(None, None, {"data_interval_start": jan2, "data_interval_end": jan3})
    assert with_interval.partition == "window_start=20240102T000000Z" and with_interval.end == jan3
    zero_length = Window.snapshot(None, None, {"data_interval_start": jan2, "data_interval_end": jan2})
    assert zero_length.partition == "window_start=20240102T000000Z"
    run_after = datetime(2024, 1, 5, 10, 30, 15, tzinfo=timezone.utc)
    without = Window.snapshot(None, None, {"dag_run": _Run(run_after)})
    assert without.partition == "window_start=20240105T103015Z" and without.start == without.end == run_after
