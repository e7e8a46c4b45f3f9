# --8<-- [start:settings]
"""Voucherify → Parquet: one DAG per exported object, generated from the provider's catalog.

Copy this file into your DAGs folder. Deployment settings come from environment variables (read here,
at parse time, without touching the database), per-run overrides from DAG params (trigger with config in
the UI), and the destination can also come from the Airflow Variable ``voucherify_destination``:

=============================== ===================================== ========================================
env variable                    default                               meaning
=============================== ===================================== ========================================
VOUCHERIFY_CONN_ID              voucherify_default                    the ``voucherify`` connection
VOUCHERIFY_DESTINATION          $AIRFLOW_HOME/voucherify-warehouse    base path or URL (s3://..., gs://...)
VOUCHERIFY_DESTINATION_CONN_ID  (none)                                connection of the destination filesystem
VOUCHERIFY_OBJECTS              all seven                             comma-separated objects to build DAGs for
VOUCHERIFY_START_DATE           2024-01-01                            first data interval (UTC)
VOUCHERIFY_END_DATE             (none)                                last data interval (UTC), optional
VOUCHERIFY_SCHEDULE             @daily                                cron of the data intervals (UTC)
VOUCHERIFY_CATCHUP              false                                 schedule missed intervals on unpause
VOUCHERIFY_MAX_ACTIVE_RUNS      4                                     concurrent runs per DAG
VOUCHERIFY_POOL                 voucherify_api                        pool bounding concurrent API use
VOUCHERIFY_LOOKBACK             0                                     also re-export the previous N windows
VOUCHERIFY_DEFERRABLE           true                                  wait for exports in the triggerer
VOUCHERIFY_POLL_INTERVAL        15                                    first wait between status checks (s); doubles
VOUCHERIFY_RETRIES              3                                     task retries (an ERROR export is retried)
VOUCHERIFY_RETRY_DELAY          60                                    seconds between tries
VOUCHERIFY_INCREMENTAL          true                                  order/customer/voucher by change window
VOUCHERIFY_RECONCILE            weekly                                full id list marking deletions: weekly,
                                                                      daily or never
VOUCHERIFY_HISTORY              true                                  build the voucherify_<object>_history DAGs
VOUCHERIFY_HISTORY_START        a year before VOUCHERIFY_START_DATE   first day of history to load (UTC)
VOUCHERIFY_HISTORY_SPAN         month                                 one export per month, quarter, year, or
                                                                      all (one export up to the daily start)
VOUCHERIFY_HISTORY_MAX_ACTIVE   2                                     concurrent history runs per object
VOUCHERIFY_COLUMN_POLICIES      (none)                                personal_data (the catalog's suggestions)
                                                                      or JSON {"customer": {"email": "hash"}}
VOUCHERIFY_HASH_KEY_CONN_ID     (none)                                connection whose password is the hash key
VOUCHERIFY_HASH_KEY_VARIABLE    (none)                                or the Variable holding it
VOUCHERIFY_DELETE_EXPORTS       true                                  delete each export once landed
VOUCHERIFY_DELETED_RECORDS      keep                                  records deleted in Voucherify, in the
                                                                      current-state table: keep, redact, remove
=============================== ===================================== ========================================
"""
# --8<-- [end:settings]

from __future__ import annotations

import os
from datetime import datetime, timedelta, timezone
from typing import Any

from airflow.sdk import DAG, Asset, Param, task

from voucherify_provider import catalog

try:
    from airflow.sdk import CronDataIntervalTimetable, DeltaDataIntervalTimetable
except ImportError:  # Airflow 3.1: the timetables live in core
    from airflow.timetables.interval import (  # type: ignore[no-redef,assignment]
        CronDataIntervalTimetable,
        DeltaDataIntervalTimetable,
    )
from voucherify_provider.operators.current_state import (
    VoucherifyMarkDeletedOperator,
    VoucherifyMergeCurrentStateOperator,
)
from voucherify_provider.operators.export import VoucherifyCreateExportOperator
from voucherify_provider.transfers.export_to_warehouse import VoucherifyDownloadToWarehouseOperator


def _env(name: str, default: str) -> str:
    return os.environ.get(name, default).strip() or default


def _date(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=timezone.utc)


CONN_ID = _env("VOUCHERIFY_CONN_ID", "voucherify_default")
AIRFLOW_HOME = os.environ.get("AIRFLOW_HOME", os.path.expanduser("~/airflow"))
DESTINATION = _env("VOUCHERIFY_DESTINATION", os.path.join(AIRFLOW_HOME, "voucherify-warehouse"))
DESTINATION_CONN_ID = os.environ.get("VOUCHERIFY_DESTINATION_CONN_ID") or None
OBJECTS = [o.strip() for o in _env("VOUCHERIFY_OBJECTS", ",".join(catalog.OBJECTS)).split(",") if o.strip()]
START_DATE = _date(_env("VOUCHERIFY_START_DATE", "2024-01-01"))
END_DATE = _date(os.environ["VOUCHERIFY_END_DATE"]) if os.environ.get("VOUCHERIFY_END_DATE") else None
SCHEDULE = _env("VOUCHERIFY_SCHEDULE", "@daily")
CATCHUP = _env("VOUCHERIFY_CATCHUP", "false").lower() in ("1", "true", "yes")
MAX_ACTIVE_RUNS = int(_env("VOUCHERIFY_MAX_ACTIVE_RUNS", "4"))
POOL = _env("VOUCHERIFY_POOL", "voucherify_api")
LOOKBACK = int(_env("VOUCHERIFY_LOOKBACK", "0"))
DEFERRABLE = _env("VOUCHERIFY_DEFERRABLE", "true").lower() in ("1", "true", "yes")
POLL_INTERVAL = float(_env("VOUCHERIFY_POLL_INTERVAL", "15"))
INCREMENTAL = _env("VOUCHERIFY_INCREMENTAL", "true").lower() in ("1", "true", "yes")
RECONCILE = _env("VOUCHERIFY_RECONCILE", "weekly").lower()
if RECONCILE not in ("weekly", "daily", "never"):
    raise ValueError(f"VOUCHERIFY_RECONCILE must be weekly, daily or never, got {RECONCILE!r}")
HISTORY = _env("VOUCHERIFY_HISTORY", "true").lower() in ("1", "true", "yes")
# A year before the daily start by default (Feb 29 becomes Feb 28).
HISTORY_START = (_date(os.environ["VOUCHERIFY_HISTORY_START"]) if os.environ.get("VOUCHERIFY_HISTORY_START", "").strip()
                 else START_DATE.replace(year=START_DATE.year - 1, day=min(START_DATE.day, 28)))
HISTORY_SPAN = _env("VOUCHERIFY_HISTORY_SPAN", "month").lower()
HISTORY_SPANS = {"month": "@monthly", "quarter": "@quarterly", "year": "@yearly", "all": ""}
if HISTORY_SPAN not in HISTORY_SPANS:
    raise ValueError(f"VOUCHERIFY_HISTORY_SPAN must be one of {', '.join(HISTORY_SPANS)}, got {HISTORY_SPAN!r}")
HISTORY_MAX_ACTIVE = int(_env("VOUCHERIFY_HISTORY_MAX_ACTIVE", "2"))
DELETE_EXPORTS = _env("VOUCHERIFY_DELETE_EXPORTS", "true").lower() in ("1", "true", "yes")
DELETED_RECORDS = _env("VOUCHERIFY_DELETED_RECORDS", "keep").lower()


# --8<-- [start:privacy]
def _column_policies() -> dict[str, Any]:
    """VOUCHERIFY_COLUMN_POLICIES per object: ``personal_data`` (every object, the catalog's suggestions) or a
    JSON mapping of object to ``{field: "drop" | "hash"}``; the operators check each at parse time."""
    import json

    text = os.environ.get("VOUCHERIFY_COLUMN_POLICIES", "").strip()
    if not text:
        return {}
    if text == "personal_data":
        return dict.fromkeys(catalog.OBJECTS, text)
    try:
        policies = json.loads(text)
    except ValueError as err:
        raise ValueError(f"VOUCHERIFY_COLUMN_POLICIES is neither 'personal_data' nor JSON ({err}); e.g. "
                         '{"customer": {"email": "hash", "phone": "drop"}}') from None
    unknown = set(policies) - set(catalog.OBJECTS) if isinstance(policies, dict) else {"(not a mapping)"}
    if unknown:
        raise ValueError(f"VOUCHERIFY_COLUMN_POLICIES names {', '.join(sorted(unknown))}; objects are "
                         f"{', '.join(catalog.OBJECTS)}.")
    return policies


COLUMN_POLICIES = _column_policies()
PRIVACY: dict[str, Any] = {
    "hash_key_conn_id": os.environ.get("VOUCHERIFY_HASH_KEY_CONN_ID") or None,
    "hash_key_variable": os.environ.get("VOUCHERIFY_HASH_KEY_VARIABLE") or None,
    "delete_export": DELETE_EXPORTS,
}


def _exported_fields(obj: catalog.ExportedObject) -> list[str]:
    """Every field, less the dropped ones: what is never landed is not exported either."""
    from voucherify_provider.privacy import parse_policies

    dropped = parse_policies(obj, COLUMN_POLICIES.get(obj.name)).dropped
    return [f for f in obj.fields if f not in dropped]
# --8<-- [end:privacy]

# --8<-- [start:destination]
# Params override per run; an empty destination falls back to the Variable, then to the env default.
DESTINATION_TEMPLATE = (
    "{{ params.destination or var.value.get('voucherify_destination', '" + DESTINATION.replace("'", "\\'") + "') }}"
)
# Nullable with a null default: the UI's Trigger dialog shows it optional and Trigger works as it opens.
DESTINATION_PARAM = Param(None, type=["null", "string"],
                          description="Override the destination base path or URL (empty: the Variable "
                          f"voucherify_destination, else {DESTINATION}).")
TASK_DEFAULTS: dict[str, Any] = {
    "retries": int(_env("VOUCHERIFY_RETRIES", "3")),
    "retry_delay": timedelta(seconds=float(_env("VOUCHERIFY_RETRY_DELAY", "60"))),
    "pool": POOL,
}
# --8<-- [end:destination]


def _mode(obj: catalog.ExportedObject) -> str:
    """Immutable, windowable objects go by created_at window; objects that change by change window
    (created or updated in the interval) where the API allows it; the others as snapshots of the whole set."""
    if obj.windowable and not obj.mutable:
        return "window"
    return "changes" if obj.incremental and INCREMENTAL else "snapshot"


def _doc(obj: catalog.ExportedObject, mode: str) -> str:
    reason = "cannot be windowed" if not obj.windowable else "changes after creation"
    interval = "the run's data interval `[data_interval_start, data_interval_end)`"
    what = {
        "window": f"the {obj.name} records created in {interval}",
        "changes": f"the {obj.name} records created **or updated** in {interval}, each placed by its last "
                   f"change (updated_at, else created_at), and merges them into the current-state table "
                   f"`<destination>/current/{obj.name}` (Delta Lake: the latest version of every record)",
        "snapshot": f"a full snapshot of every {obj.name} (it {reason})",
    }[mode]
    reconcile = (f"\n* **Deletions**: {RECONCILE} (runs whose interval ends on a Monday, for weekly), a full list "
                 f"of {obj.name} ids marks records deleted in Voucherify with `_deleted` in the current-state "
                 "table; param `reconcile` forces it (`always`) or skips it (`never`).\n"
                 if mode == "changes" else "")
    return f"""
### Voucherify `{obj.name}` → Parquet

Exports {what} through Voucherify's export API and lands it as typed, zstd-compressed Parquet:

`<destination>/{obj.name}/window_start=<YYYYMMDDTHHMMSSZ>/part-<export_id>-<run>.parquet` plus
`_manifest.json` (written last: export id, window, fields, schema, rows, files with sha256).

* **destination**: param `destination`, else Variable `voucherify_destination`, else `{DESTINATION}`
  (connection `{DESTINATION_CONN_ID or "none"}`); Voucherify connection `{CONN_ID}`; pool `{POOL}`.
* **Re-running** a run replaces its partition whole (no duplicates, no leftovers).
* **Lookback**: param `lookback` (default {LOOKBACK}) re-exports the previous N windows too, to pick up
  late records; each lands in its own partition, idempotently.
* **Backfill**: `airflow backfill create --dag-id voucherify_{obj.name} --from-date 2024-01-01 --to-date 2024-01-31`
  (add `--reprocess-behavior completed` to redo landed days). Runs are bounded by `max_active_runs`
  ({MAX_ACTIVE_RUNS}) and the `{POOL}` pool, so a backfill stays within the plan's rate limit.
* An export ending in ERROR fails the export task; its retry creates a fresh export.{reconcile}
"""


# --8<-- [start:windows]
@task
def windows(lookback: int, **context: Any) -> list[dict[str, str]]:
    """The run's window and the ``lookback`` windows before it, oldest first.

    The run's window is its data interval; a run without one (``airflow dags trigger`` with no logical
    date, REST ``"logical_date": null``) takes the latest complete interval of the timetable before it.
    """
    from voucherify_provider.outcomes import config_errors_fail_task
    from voucherify_provider.window import Window

    with config_errors_fail_task():  # a retry cannot give the run an interval
        window = Window.for_run(None, None, context)
    step = window.end - window.start
    return [
        {"window_start": (window.start - k * step).isoformat(), "window_end": (window.end - k * step).isoformat()}
        for k in range(int(lookback), -1, -1)
    ]
# --8<-- [end:windows]


# --8<-- [start:reconcile_due]
@task.short_circuit
def reconcile_due(reconcile: str, **context: Any) -> bool:
    """Whether this run lists every id to mark deletions: ``always``/``never`` from the param, else by
    VOUCHERIFY_RECONCILE: daily, or weekly (runs whose data interval reaches a Monday 00:00 UTC)."""
    if reconcile in ("always", "never"):
        return reconcile == "always"
    if RECONCILE != "weekly":
        return RECONCILE == "daily"
    start, end = context.get("data_interval_start"), context.get("data_interval_end")
    if start is None or end is None:
        return False
    monday = (end - timedelta(days=end.weekday())).replace(hour=0, minute=0, second=0, microsecond=0)
    return bool(start < monday <= end)
# --8<-- [end:reconcile_due]


# --8<-- [start:land_kwargs]
def _land_kwargs(pair: Any) -> dict[str, Any]:
    export_id, window = pair
    return {"export_id": export_id, **window}
# --8<-- [end:land_kwargs]


def build_dag(obj: catalog.ExportedObject) -> DAG:
    """One DAG landing one exported object."""
    mode = _mode(obj)
    fields = _exported_fields(obj)
    # --8<-- [start:dag]
    with DAG(
        dag_id=f"voucherify_{obj.name}",
        description=f"Voucherify {obj.name} export → Parquet ({mode})",
        schedule=CronDataIntervalTimetable(SCHEDULE, timezone="UTC"),
        start_date=START_DATE,
        end_date=END_DATE,
        catchup=CATCHUP,
        max_active_runs=MAX_ACTIVE_RUNS,
        default_args=TASK_DEFAULTS,
        tags=["voucherify", mode],
        doc_md=_doc(obj, mode),
        params={
            "destination": DESTINATION_PARAM,
            "lookback": Param(LOOKBACK, type="integer", minimum=0, maximum=30,
                              description="Re-export this many previous windows too (window and change modes)."),
            **({"reconcile": Param("auto", enum=["auto", "always", "never"],
                                   description=f"List every id to mark deletions (auto: {RECONCILE}).")}
               if mode == "changes" else {}),
        },
    ) as dag:
        # --8<-- [end:dag]
        # --8<-- [start:tasks]
        # --8<-- [start:task_args]
        common: dict[str, Any] = {"exported_object": obj.name, "voucherify_conn_id": CONN_ID}
        waiting: dict[str, Any] = {"wait_for_completion": True, "deferrable": DEFERRABLE,
                                   "poll_interval": POLL_INTERVAL}
        landing: dict[str, Any] = {"destination": DESTINATION_TEMPLATE, "destination_conn_id": DESTINATION_CONN_ID,
                                   "outlets": [Asset(name=f"voucherify.{obj.name}")],
                                   "column_policies": COLUMN_POLICIES.get(obj.name), **PRIVACY, **common}
        # --8<-- [end:task_args]
        # --8<-- [start:windowed]
        if mode in ("window", "changes"):
            spans = windows(lookback="{{ params.lookback }}")
            export = VoucherifyCreateExportOperator.partial(
                task_id="export", fields=fields, incremental=mode == "changes", **waiting, **common,
            ).expand_kwargs(spans)
            land = VoucherifyDownloadToWarehouseOperator.partial(task_id="land", **landing).expand_kwargs(
                export.output.zip(spans).map(_land_kwargs))
            if mode == "changes":
                _current_state(obj, land, common, waiting)
        # --8<-- [end:windowed]
        else:
            # --8<-- [start:snapshot]
            export_one = VoucherifyCreateExportOperator(
                task_id="export", fields=fields, windowed=False, **waiting, **common,
            )
            export_one >> VoucherifyDownloadToWarehouseOperator(task_id="land", export_id=export_one.output,
                                                                **landing)
            # --8<-- [end:snapshot]
        # --8<-- [end:tasks]
    return dag


# --8<-- [start:current_state]
def _current_state(obj: catalog.ExportedObject, land: Any, common: dict[str, Any], waiting: dict[str, Any]) -> None:
    """Merge the run's change windows into the current-state table; on reconcile runs, then mark deletions
    from a full export of the ids (landed apart, under ``<destination>/_reconcile``)."""
    target = {"destination": DESTINATION_TEMPLATE, "destination_conn_id": DESTINATION_CONN_ID, **common}
    target.pop("voucherify_conn_id")
    merge = VoucherifyMergeCurrentStateOperator(task_id="merge_current_state", landed=land.output, **target)
    due = reconcile_due(reconcile="{{ params.reconcile }}")
    # The creation time places each id in its month of the current-state table.
    ids = VoucherifyCreateExportOperator(task_id="export_ids", fields=[obj.key_field, str(obj.created_field)],
                                         windowed=False, **waiting, **common)
    ids_landed = VoucherifyDownloadToWarehouseOperator(
        task_id="land_ids", export_id=ids.output, destination=DESTINATION_TEMPLATE + "/_reconcile",
        destination_conn_id=DESTINATION_CONN_ID, outlets=[], delete_export=DELETE_EXPORTS, **common)
    mark = VoucherifyMarkDeletedOperator(task_id="mark_deleted", snapshot=ids_landed.output,
                                         deleted_records=DELETED_RECORDS, **target)
    due >> ids >> ids_landed >> mark
    merge >> mark
# --8<-- [end:current_state]


# --8<-- [start:history]
def _history_timetable() -> tuple[Any, datetime, datetime] | None:
    """The history DAGs' timetable, first interval start and last interval end: spans of
    VOUCHERIFY_HISTORY_SPAN from the boundary at or before VOUCHERIFY_HISTORY_START to the first boundary at
    or after the daily DAGs' start (the last interval is clipped there: history and daily runs meet without
    gap or overlap); ``all``: one interval from the history start to the daily start. None when there is no
    history before the daily start. Intervals the daily schedule does not tile fail here, at parse time."""
    from voucherify_provider.window import Window

    if HISTORY_START >= START_DATE:
        return None
    if HISTORY_SPAN == "all":
        first, end, timetable = HISTORY_START, START_DATE, DeltaDataIntervalTimetable(START_DATE - HISTORY_START)
        edges = [Window.of(first, end)]
    else:
        from croniter import croniter

        from voucherify_provider.window import cron_schedule

        cron = cron_schedule(HISTORY_SPANS[HISTORY_SPAN])
        first = croniter(cron, HISTORY_START + timedelta(microseconds=1)).get_prev(datetime)
        end = croniter(cron, START_DATE - timedelta(microseconds=1)).get_next(datetime)
        timetable = CronDataIntervalTimetable(cron, timezone="UTC")
        edges = [Window.of(first, croniter(cron, first).get_next(datetime)),
                 Window.of(croniter(cron, end).get_prev(datetime), START_DATE)]
    from voucherify_provider.errors import VoucherifyConfigError

    for edge in edges:  # what one run lands must be whole intervals of the daily DAGs' schedule
        try:
            edge.split(SCHEDULE)
        except VoucherifyConfigError as err:
            raise ValueError(
                f"History DAGs: {err} Set VOUCHERIFY_HISTORY_SPAN (and VOUCHERIFY_HISTORY_START, "
                f"VOUCHERIFY_START_DATE) so that history intervals are whole intervals of VOUCHERIFY_SCHEDULE "
                f"{SCHEDULE!r}, or VOUCHERIFY_HISTORY=false.") from None
    return timetable, first, end


@task
def history_window(history_end: str, **context: Any) -> dict[str, str]:
    """The run's interval, its end clipped to the daily DAGs' start; a run of an interval at or after that
    start is skipped (the daily DAG lands it). The DAG's end date lets a manual run of the last interval
    exist (its logical date is that interval's end), so the scheduler also plans the interval after it."""
    from voucherify_provider.outcomes import airflow_exception

    start, end, history_end_at = (context.get("data_interval_start"), context.get("data_interval_end"),
                                  datetime.fromisoformat(history_end))
    if start is None or end is None:
        raise airflow_exception("AirflowSkipException")(
            "This run has no data interval. Backfill a range, or trigger with a logical date at the end of "
            "the interval to load (e.g. 2023-07-01 for June).")
    if start >= history_end_at:
        raise airflow_exception("AirflowSkipException")(
            f"[{start}, {end}) is not history: the daily DAGs land from {history_end} on.")
    return {"window_start": start.isoformat(), "window_end": min(end, history_end_at).isoformat()}


def build_history_dag(obj: catalog.ExportedObject, timetable: Any, first: datetime, end: datetime) -> DAG:
    """One history DAG for one object: each run exports its whole interval (a month by default) at once and
    lands it as the daily DAG's partitions, then (change windows) merges them in one pass."""
    mode = _mode(obj)
    common: dict[str, Any] = {"exported_object": obj.name, "voucherify_conn_id": CONN_ID}
    with DAG(
        dag_id=f"voucherify_{obj.name}_history",
        description=f"Voucherify {obj.name} history → the daily DAG's Parquet partitions ({HISTORY_SPAN} exports)",
        schedule=timetable,
        start_date=first,
        end_date=end,
        catchup=True,  # unpaused, it loads every interval of history, then stops
        is_paused_upon_creation=True,  # whatever the deployment's default: history starts when you say so
        max_active_runs=HISTORY_MAX_ACTIVE,
        default_args=TASK_DEFAULTS,
        tags=["voucherify", "history", mode],
        doc_md=_history_doc(obj, mode, first),
        params={"destination": DESTINATION_PARAM},
    ) as dag:
        order = obj.created_field if obj.created_field in obj.order_values else None
        span = history_window(history_end=START_DATE.isoformat())
        window = {"window_start": span["window_start"], "window_end": span["window_end"]}
        export = VoucherifyCreateExportOperator(
            task_id="export", fields=_exported_fields(obj), incremental=mode == "changes", order=order,
            wait_for_completion=True, deferrable=DEFERRABLE, poll_interval=POLL_INTERVAL, **window, **common)
        land = VoucherifyDownloadToWarehouseOperator(
            task_id="land", export_id=export.output, partition_schedule=SCHEDULE, destination=DESTINATION_TEMPLATE,
            destination_conn_id=DESTINATION_CONN_ID, outlets=[Asset(name=f"voucherify.{obj.name}")], **window,
            column_policies=COLUMN_POLICIES.get(obj.name), **PRIVACY, **common)
        if mode == "changes":
            VoucherifyMergeCurrentStateOperator(
                task_id="merge_current_state", landed=land.output, exported_object=obj.name,
                destination=DESTINATION_TEMPLATE, destination_conn_id=DESTINATION_CONN_ID)
    return dag
# --8<-- [end:history]


def _history_doc(obj: catalog.ExportedObject, mode: str, first: datetime) -> str:
    placed = "its creation" if mode == "window" else "its last change (its current version)"
    return f"""
### Voucherify `{obj.name}` history → the daily partitions

Each run exports every {obj.name} of its interval ({HISTORY_SPAN}; from {first.date()} to the daily DAG's start
{START_DATE.date()}) in **one** export and lands it as the partitions `voucherify_{obj.name}` lands, one per
`{SCHEDULE}` interval, each record in the partition of {placed}, each committed with its own `_manifest.json`:
readers{", the current-state merge" if mode == "changes" else ""} and later daily runs cannot tell them apart.
{"The partitions are then merged into the current-state table in one pass." if mode == "changes" else ""}

* Unpause it first: it runs every interval of history (catchup), then stops; then unpause `voucherify_{obj.name}`.
* Or backfill a range: `airflow backfill create --dag-id voucherify_{obj.name}_history --from-date 2023-01-01
  --to-date 2023-12-01` (intervals starting in that range).
* Re-running replaces its partitions whole; a daily run landing a day at the same time never leaves a mixed
  partition (the same commit lock). Memory stays bounded: rows wait in local spill files, one per day.
"""


# --8<-- [start:erasure]
def build_erasure_dag() -> DAG:
    """``voucherify_erasure``: trigger it with the ids of customers deleted in Voucherify (an erasure request);
    it removes the customers' rows and redacts what their orders, redemptions, publications and vouchers say
    about them, in every landed partition and current-state table, with an audit record."""
    from voucherify_provider.operators.erasure import VoucherifyEraseRecordsOperator

    with DAG(
        dag_id="voucherify_erasure",
        description="Voucherify: erase customers from the lake (an erasure request)",
        schedule=None,
        start_date=START_DATE,
        catchup=False,
        render_template_as_native_obj=True,  # the ids param renders as a list
        tags=["voucherify", "privacy"],
        doc_md=build_erasure_dag.__doc__,
        params={"customer_ids": Param([], type="array", items={"type": "string"},
                                      description="Ids of the customers to erase (cust_...)."),
                "destination": DESTINATION_PARAM},
    ) as dag:
        for obj in catalog.OBJECTS.values():
            if obj.customer_field is None or obj.name not in OBJECTS:
                continue
            VoucherifyEraseRecordsOperator(
                task_id=f"erase_{obj.name}", exported_object=obj.name, ids="{{ params.customer_ids }}",
                match_field=obj.customer_field, action="remove" if obj.name == "customer" else "redact",
                destination=DESTINATION_TEMPLATE, destination_conn_id=DESTINATION_CONN_ID,
                hash_key_conn_id=PRIVACY["hash_key_conn_id"], hash_key_variable=PRIVACY["hash_key_variable"])
    return dag
# --8<-- [end:erasure]


voucherify_erasure = build_erasure_dag()
_history = _history_timetable() if HISTORY else None
for _name in OBJECTS:
    globals()[f"voucherify_{_name}"] = build_dag(catalog.get_object(_name))
    if _history is not None and _mode(catalog.get_object(_name)) != "snapshot":  # snapshots have no history
        globals()[f"voucherify_{_name}_history"] = build_history_dag(catalog.get_object(_name), *_history)
