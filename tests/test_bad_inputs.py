"""A catalogue of bad inputs: each fails with a message naming the problem, and leaves nothing behind.

Every case runs against the emulator with an empty destination; after the failure the destination
holds no file (no partial Parquet, no staged file, no manifest). Cases marked ``no_calls`` must fail
before any API request.
"""

from __future__ import annotations

import asyncio
import base64
import json
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
from airflow.sdk.exceptions import AirflowException, AirflowFailException

from tests.support.exports import wait_done
from tests.support.operators import JAN2, JAN3, UTC, context
from voucherify_provider.catalog import CatalogError
from voucherify_provider.errors import VoucherifyAuthError, VoucherifyConfigError
from voucherify_provider.operators.current_state import VoucherifyMergeCurrentStateOperator
from voucherify_provider.operators.export import VoucherifyCreateExportOperator
from voucherify_provider.sensors.export import VoucherifyExportDoneSensor
from voucherify_provider.transfers.export_to_warehouse import VoucherifyDownloadToWarehouseOperator
from voucherify_provider.triggers.export import VoucherifyExportTrigger
from voucherify_provider.window import Window

pytestmark = pytest.mark.unit

FIELDS = ["id", "date", "order_amount"]
HEADER = b"ID,Date,Order Amount\r\n"
GOOD_ROW = b"r_1,2024-01-02T01:00:00.000Z,12.50\r\n"


@dataclass
class Env:
    """What a case can use: the emulator, a hook on it, the destination."""

    emu: Any
    hook: Any
    dest: Path
    monkeypatch: Any

    def create(self, **kwargs: Any) -> VoucherifyCreateExportOperator:
        kwargs.setdefault("exported_object", "redemption")
        kwargs.setdefault("voucherify_conn_id", "voucherify_test")
        return VoucherifyCreateExportOperator(task_id="create", **kwargs)

    def land(self, export_id: str, **kwargs: Any) -> VoucherifyDownloadToWarehouseOperator:
        kwargs.setdefault("destination", str(self.dest))
        kwargs.setdefault("voucherify_conn_id", "voucherify_test")
        return VoucherifyDownloadToWarehouseOperator(task_id="land", export_id=export_id, **kwargs)

    def sensor(self, export_id: str) -> VoucherifyExportDoneSensor:
        return VoucherifyExportDoneSensor(task_id="wait", export_id=export_id, voucherify_conn_id="voucherify_test",
                                          deferrable=False, poke_interval=0.05, timeout=5)

    def done_export(self, **kwargs: Any) -> str:
        export = self.hook.create_export(kwargs.pop("exported_object", "redemption"), **kwargs)
        wait_done(self.hook, export["id"])
        return str(export["id"])

    def land_body(self, body: bytes) -> None:
        """Land a DONE export whose download serves ``body`` instead of the real file."""
        export_id = self.done_export(fields=FIELDS)
        self.emu.inject({"route": "download_export", "body_base64": base64.b64encode(body).decode(), "count": 6})
        self.land(export_id, exported_object="redemption").execute(context())

    def connection(self, conn_id: str, **conn: Any) -> str:
        self.monkeypatch.setenv(f"AIRFLOW_CONN_{conn_id.upper()}", json.dumps({"conn_type": "voucherify", **conn}))
        return conn_id


def deleted_mid_wait(env: Env) -> None:
    """The export disappears while the deferred sensor's trigger polls; the task fails naming it."""
    env.emu.configure(in_progress_seconds=30)
    export_id = env.hook.create_export("voucher")["id"]
    threading.Timer(0.3, env.hook.delete_export, args=(export_id,)).start()
    trigger = VoucherifyExportTrigger(export_id, "voucherify_test", time.time() + 10, 0.1, 0.2)

    async def first_event() -> dict[str, Any]:
        async for event in trigger.run():
            return dict(event.payload)
        raise AssertionError("no event")

    env.sensor(export_id).execute_complete(context(), asyncio.run(first_event()))


OTHER_WINDOW = {"window_start": JAN3, "window_end": datetime(2024, 1, 4, tzinfo=UTC)}

# (id, action, message regex, fails before any API call)
CASES: list[tuple[str, Callable[[Env], Any], str, bool]] = [
    # -- what to export (checked when the DAG is parsed) --
    ("unknown object", lambda e: e.create(exported_object="coupons"),
     r"Unknown exported object 'coupons'\. Allowed: order, voucher", True),
    ("misspelled object", lambda e: e.create(exported_object="redemptions"), r"Did you mean 'redemption'", True),
    ("misspelled field", lambda e: e.create(fields=["id", "vouchr_code"]),
     r"Unknown field 'vouchr_code'.*Did you mean 'voucher_code'", True),
    ("unknown field", lambda e: e.create(fields=["id", "colour"]), r"Unknown field 'colour'.*Allowed fields: ", True),
    ("fields as one string", lambda e: e.create(fields="id,date"),
     r"fields must be a list of field names.*\['id', 'date'\]", True),
    ("repeated field", lambda e: e.create(fields=["id", "date", "id"]), r"repeat id; list each field once", True),
    ("empty field list", lambda e: e.create(fields=[]), r"is empty; omit it to export the default fields", True),
    ("unknown order", lambda e: e.create(order="amount"), r"order 'amount' is not allowed .*allowed: id, -id", True),
    ("doubled order sign", lambda e: e.create(order="--id"), r"order '--id' is not allowed", True),
    ("filters not a mapping", lambda e: e.create(filters=[]), r"filters must be a mapping like .* got list", True),
    ("filter without conditions", lambda e: e.create(filters={"result": "SUCCESS"}),
     r"filters\['result'\] must look like \{'conditions'", True),
    ("unknown filter operator", lambda e: e.create(filters={"result": {"conditions": {"$equal": ["SUCCESS"]}}}),
     r"unknown operator '\$equal'.*Allowed: \$in", True),
    ("unknown filter field", lambda e: e.create(filters={"colour": {"conditions": {"$in": ["red"]}}}),
     r"filters: Unknown field 'colour'", True),
    ("bad junction", lambda e: e.create(filters={"junction": "xor"}), r"junction must be 'and' or 'or', got 'xor'",
     True),
    ("snapshot object windowed", lambda e: e.create(exported_object="points_expiration", windowed=True),
     r"cannot be exported in created_at windows.*set windowed=False", True),
    # -- the window (checked when the task runs, before any call) --
    ("naive window", lambda e: e.create(window_start=datetime(2024, 1, 2), window_end=JAN3).execute(context()),
     r"naive", True),
    ("inverted window", lambda e: e.create(window_start=JAN3, window_end=JAN2).execute(context()),
     r"not after window_start", True),
    ("zero-length interval", lambda e: e.create().execute(context(data_interval_end=JAN2)),
     r"CronDataIntervalTimetable", True),
    ("window for a snapshot object",
     lambda e: e.create(exported_object="points_expiration", window_start=JAN2, window_end=JAN3).execute(context()),
     r"is a snapshot", True),
    ("filters fight the window",
     lambda e: e.create(filters={"created_at": {"conditions": {"$after": ["2024-01-01T00:00:00Z"]}}})
     .execute(context()), r"already constrain created_at", True),
    # -- the connection --
    ("missing connection", lambda e: e.create(voucherify_conn_id="nope").execute(context()),
     r"Connection 'nope' is not defined\. Create it .*AIRFLOW_CONN_NOPE", True),
    ("missing credentials",
     lambda e: e.create(voucherify_conn_id=e.connection("bare", host=e.emu.base_url)).execute(context()),
     r"Connection 'bare' has no login \(Application ID\) and password \(Secret Key\)", True),
    ("wrong cluster or key (401)",
     lambda e: e.create(voucherify_conn_id=e.connection("wrong", host=e.emu.base_url, login="app-test",
                                                        password="not-the-key")).execute(context()),
     r"401.*(cluster|Secret Key|credentials)", False),
    ("plain http to a remote host",
     lambda e: e.create(voucherify_conn_id=e.connection("plain", host="http://api.example.com", login="a",
                                                        password="b-secret")).execute(context()),
     r"plain http:// to api\.example\.com.*Use https://", True),
    # -- the destination --
    ("bad on_bad_value", lambda e: e.land("exp_x", on_bad_value="skip"), r"on_bad_value must be 'fail' or 'reject'",
     True),
    ("destination under a file",
     lambda e: (e.dest / "file").write_text("x") and e.land(
         "exp_x", destination=str(e.dest / "file" / "wh"), exported_object="redemption").execute(context()),
     r"Cannot write to destination", True),
    ("unknown destination scheme",
     lambda e: e.land("exp_x", destination="foo://bucket/wh", exported_object="redemption").execute(context()),
     r"the foo:// scheme cannot be landed on safely.*Use a local path or file://, s3://.*gs://.*abfs://", True),
    ("destination store without an exclusive create (current state)",
     lambda e: VoucherifyMergeCurrentStateOperator(task_id="m", landed=[], exported_object="customer",
                                                   destination="http://files.example.com/lake"),
     r"the http:// scheme cannot be landed on safely .*exclusive create", True),
    ("missing destination connection",
     lambda e: e.land("exp_x", destination="s3://bucket/wh", destination_conn_id="no_s3",
                      exported_object="redemption").execute(context()),
     r"destination_conn_id 'no_s3' is not defined", True),
    # -- the export --
    ("unknown export id (landing)", lambda e: e.land("exp_nope", exported_object="redemption").execute(context()),
     r"Export exp_nope does not exist .*clear the create task", False),
    ("unknown export id (sensor)", lambda e: e.sensor("exp_nope").execute(context()),
     r"Export exp_nope does not exist", False),
    ("export not done yet",
     lambda e: (e.emu.configure(in_progress_seconds=30), e.land(e.hook.create_export("redemption")["id"],
                                                                exported_object="redemption").execute(context())),
     r"is (SCHEDULED|IN_PROGRESS), not DONE; wait for it first", False),
    ("export ended in ERROR",
     lambda e: (e.emu.inject({"route": "create_export", "export_error": True}),
                e.sensor(e.done_export()).execute(context())), r"ended in ERROR", False),
    ("export deleted mid-wait", deleted_mid_wait, r"does not exist", False),
    ("export of another object",
     lambda e: e.land(e.done_export(), exported_object="order").execute(context()),
     r"exports 'redemption', but this task lands 'order'", False),
    ("export of another window",
     lambda e: e.land(wait_done(e.hook, e.create().execute(context()))["id"], exported_object="redemption",
                      **OTHER_WINDOW).execute(context()), r"not this task's window", False),
    ("windowed export without its creation field",
     lambda e: e.land(e.done_export(fields=["id", "order_amount"],
                                    filters={"junction": "and", "created_at": Window.of(JAN2, JAN3).api_filter()}),
                      exported_object="redemption").execute(context()),
     r"A windowed redemption export must include 'date'", False),
    # -- the file --
    ("wrong column count", lambda e: e.land_body(HEADER + b"r_1,2024-01-02T01:00:00.000Z,1,extra\r\n"),
     r"has 4 columns but the export has 3 fields", False),
    ("untypeable value", lambda e: e.land_body(HEADER + GOOD_ROW + b"r_2,2024-01-02T02:00:00.000Z,12.3.4\r\n"),
     r"row 2, column 'order_amount' \(money\): cannot read '12\.3\.4'.*on_bad_value='reject'", False),
    ("invalid UTF-8 byte", lambda e: e.land_body(HEADER + GOOD_ROW + b"r_\xff\xfe,2024-01-02T02:00:00.000Z,1\r\n"),
     r"not valid UTF-8", False),
    ("empty file", lambda e: e.land_body(b""), r"the file is empty: not even a header row", False),
    ("header of other fields", lambda e: e.land_body(b"ID,Code\r\nr_1,X\r\n"),
     r"the header has 2 columns \(ID, Code\) but the export has 3 fields", False),
]


PARSE_TIME = {"unknown object", "misspelled object", "misspelled field", "unknown field", "fields as one string",
              "repeated field", "empty field list", "unknown order", "doubled order sign", "filters not a mapping",
              "filter without conditions", "unknown filter operator", "unknown filter field", "bad junction"}
# What each case raises, exactly: a DAG-file error at parse time, AirflowFailException (fail at once: a
# retry would meet the same mistake), or an error Airflow retries (the API or the export may recover).
RAISES: dict[str, type[BaseException]] = {
    **dict.fromkeys(PARSE_TIME, CatalogError),
    "snapshot object windowed": VoucherifyConfigError,
    "bad on_bad_value": VoucherifyConfigError,
    "unknown destination scheme": VoucherifyConfigError,  # refused at parse time
    "destination store without an exclusive create (current state)": VoucherifyConfigError,
    "wrong cluster or key (401)": VoucherifyAuthError,  # a key rotated in the connection works on retry
    "destination under a file": PermissionError,  # the store's permissions can be fixed between tries
    "export not done yet": AirflowException,
}


@pytest.mark.parametrize(("case", "action", "message", "no_calls"), CASES, ids=[c[0] for c in CASES])
def test_bad_input_is_named_and_leaves_nothing(emu, hook, tmp_path, monkeypatch, case, action, message, no_calls):
    dest = tmp_path / "warehouse"
    dest.mkdir()
    env = Env(emu, hook, dest, monkeypatch)
    expected = RAISES.get(case, AirflowFailException)
    with pytest.raises(expected, match=message) as caught:
        action(env)
    exact = type(caught.value) is expected or (expected is CatalogError and isinstance(caught.value, CatalogError))
    assert exact, f"{case}: raised {type(caught.value).__name__}, expected {expected.__name__}"
    assert "Traceback" not in str(caught.value)
    leftovers = [p for p in dest.rglob("*") if p.is_file() and p.name != "file"]
    assert leftovers == []
    if no_calls:
        assert emu.requests()["counts"] == {}


def test_the_catalogue_is_large_enough():
    assert len(CASES) >= 30 and len({c[0] for c in CASES}) == len(CASES)


def test_header_only_file_is_an_empty_window_not_an_error(emu, hook, tmp_path):
    # An export with no rows is a header-only CSV: it lands as an empty, schema-carrying partition.
    env = Env(emu, hook, tmp_path, None)
    export_id = env.done_export(fields=FIELDS)
    emu.inject({"route": "download_export", "body_base64": base64.b64encode(HEADER).decode()})
    manifest = env.land(export_id, exported_object="redemption").execute(context())
    assert manifest["rows"] == 0 and len(manifest["files"]) == 1
