"""The emulator itself: dataset properties, CLI server, admin routes, deterministic faults, scale."""

from __future__ import annotations

import csv
import io
import json
import os
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable, Iterator

import httpx
import pytest

from harness.paths import REPO_ROOT
from tests.support.exports import wait_done, window_filter
from voucherify_provider.emulator import EmulatorConfig, run_emulator
from voucherify_provider.emulator.dataset import DAY_MS, FAILURE_CODES, Dataset, to_ms
from voucherify_provider.emulator.server import free_port


class ManualClock:
    """Stands in for the exports model's monotonic clock: time passes only when a test says so."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture
def clock(emu) -> Iterator[ManualClock]:
    """The session emulator's export lifecycle on a clock the test moves."""
    exports = emu.backend.exports
    manual, real = ManualClock(), exports.clock
    exports.clock = manual
    yield manual
    emu.reset()  # exports timed on the manual clock mean nothing on the real one
    exports.clock = real


def wait_until(condition: Callable[[], bool], timeout: float = 10.0) -> bool:
    """Poll ``condition`` until it holds or ``timeout`` passes; return whether it held."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.02)
    return True


@pytest.fixture(scope="module")
def dataset():
    config = EmulatorConfig(scale=2000)
    return Dataset(config.seed, config.scale, to_ms(config.start), to_ms(config.end))


def test_every_midnight_carries_a_record_and_times_grow(dataset):
    for obj in ("redemption", "order", "customer", "voucher_transactions"):
        times = [dataset.created_ms(obj, i) for i in range(dataset.count(obj))]
        assert times == sorted(times)
        midnights = {t for t in times if t % DAY_MS == 0}
        assert len(midnights) == 7, obj  # one per day of the week-long range


def test_rows_hold_the_awkward_values(dataset):
    rows = [dataset.row("redemption", i) for i in range(dataset.count("redemption"))]
    assert {r["result"] for r in rows} == {"SUCCESS", "FAILURE"}
    assert {r["failure_code"] for r in rows if r["result"] == "FAILURE"} <= set(FAILURE_CODES)
    assert any(r["object"] == "redemption_rollback" for r in rows)
    assert any("\n" in json.dumps(r["metadata"]) or "\\n" in json.dumps(r["metadata"]) for r in rows)
    assert any(not r["customer_name"].isascii() for r in rows)
    assert any(r["failure_message"] and "," in r["failure_message"] and '"' in r["failure_message"] for r in rows)
    customers = [dataset.row("customer", i) for i in range(dataset.count("customer"))]
    assert any(c["description"] and "\n" in c["description"] for c in customers)


def test_same_seed_same_data_other_seed_other_data():
    a = Dataset(1, 100, 0, 7 * DAY_MS)
    b = Dataset(1, 100, 0, 7 * DAY_MS)
    c = Dataset(2, 100, 0, 7 * DAY_MS)
    assert [a.row("order", i) for i in range(50)] == [b.row("order", i) for i in range(50)]
    assert [a.record_id("order", i) for i in range(50)] != [c.record_id("order", i) for i in range(50)]
    assert all(a.index_of("order", a.record_id("order", i)) == i for i in range(50))


def test_csv_follows_api_notes(hook, emu):
    export = hook.create_export("voucher", fields=["id", "code", "voucher_type", "value", "active", "metadata",
                                                   "created_at", "additional_info"])
    wait_done(hook, export["id"])
    text = b"".join(hook.iter_export_bytes(export["id"])).decode("utf-8")
    rows = list(csv.reader(io.StringIO(text)))
    assert rows[0][:4] == ["ID", "Code", "Voucher Type", "Value"]  # labels, not keys
    assert "\r\n" in text  # RFC 4180 line ends
    body = rows[1:]
    assert len(body) == emu.ground_truth("voucher")["count"]
    assert all(r[3] == "" or r[3].split(".")[1].__len__() == 2 for r in body)  # money as 2000.00
    assert {r[4] for r in body} <= {"true", "false"}
    assert all(r[6].endswith("Z") and len(r[6]) == 24 for r in body)
    assert any("\n" in r[7] and '"' in r[7] for r in body)
    json.loads(body[0][5])
    emu.configure(csv_headers="keys", money_format="minimal")
    second = hook.create_export("voucher", fields=["id", "value"])
    wait_done(hook, second["id"])
    rows = list(csv.reader(io.StringIO(b"".join(hook.iter_export_bytes(second["id"])).decode())))
    assert rows[0] == ["id", "value"] and any(r[1] and "." not in r[1] for r in rows[1:])


def test_filters_junction_and_operators(hook, emu):
    def count(filters):
        export = hook.create_export("redemption", fields=["id", "result"], filters=filters)
        wait_done(hook, export["id"])
        text = b"".join(hook.iter_export_bytes(export["id"])).decode()
        return list(csv.reader(io.StringIO(text)))[1:]

    failures = count({"junction": "and", "result": {"conditions": {"$in": ["FAILURE"]}}})
    assert failures and all(r[1] == "FAILURE" for r in failures)
    window = window_filter("2024-01-02T00:00:00Z", "2024-01-03T00:00:00Z")
    both = count({**window, "result": {"conditions": {"$is": ["FAILURE"]}}})
    assert 0 < len(both) < len(failures)
    either = count({**window, "junction": "or", "result": {"conditions": {"$is": ["FAILURE"]}}})
    assert len(either) > len(failures)
    bad = httpx.post(f"{emu.base_url}/v1/exports", headers={"X-App-Id": emu.config.app_id,
                                                             "X-App-Token": emu.config.app_token},
                     json={"exported_object": "redemption",
                           "parameters": {"filters": {"result": {"conditions": {"$near": [1]}}}}})
    assert bad.status_code == 400 and "$near" in bad.json()["details"]


def test_export_lifecycle_delays(emu, hook, clock):
    emu.configure(scheduled_seconds=0.3, in_progress_seconds=0.3)
    export = hook.create_export("customer")
    assert hook.get_export(export["id"])["status"] == "SCHEDULED"
    clock.advance(0.35)
    assert hook.get_export(export["id"])["status"] == "IN_PROGRESS"
    clock.advance(0.3)
    assert hook.get_export(export["id"])["status"] == "DONE"


def test_export_durations_spread_between_the_bounds(emu, hook, clock):
    emu.configure(in_progress_seconds=0.2, in_progress_seconds_max=1.2)
    ids = [hook.create_export("customer")["id"] for _ in range(12)]
    clock.advance(0.5)
    early = [hook.get_export(i)["status"] for i in ids]
    assert "DONE" in early and "IN_PROGRESS" in early  # some short exports, some long ones
    clock.advance(0.8)
    assert {hook.get_export(i)["status"] for i in ids} == {"DONE"}


def test_export_time_grows_with_its_rows(emu, hook, clock):
    rate, base = 100.0, 0.5
    emu.configure(in_progress_seconds=base, export_rows_per_second=rate)
    rows = {obj: emu.ground_truth(obj)["count"] for obj in ("redemption", "customer")}
    assert rows["redemption"] > rows["customer"] > 0
    ids = {obj: hook.create_export(obj)["id"] for obj in rows}
    records = emu.backend.exports.records
    assert all(records[i].row_count is None for i in ids.values())  # creating counts nothing
    done_at = {obj: base + n / rate for obj, n in rows.items()}

    def status(obj: str) -> str:
        return str(hook.get_export(ids[obj])["status"])

    clock.advance(done_at["customer"] - 0.005)
    assert status("customer") == status("redemption") == "IN_PROGRESS"
    assert {records[i].row_count for i in ids.values()} == set(rows.values())  # counted at the first check
    clock.advance(0.01)
    assert (status("customer"), status("redemption")) == ("DONE", "IN_PROGRESS")  # same age, bigger: later
    clock.now = done_at["redemption"] - 0.005
    assert status("redemption") == "IN_PROGRESS"
    clock.advance(0.01)
    assert status("redemption") == "DONE"

    emu.configure(export_rows_per_second=0)  # size no longer matters: both take in_progress_seconds
    ids = {obj: hook.create_export(obj)["id"] for obj in rows}
    clock.advance(base - 0.005)
    assert status("customer") == status("redemption") == "IN_PROGRESS"
    clock.advance(0.01)
    assert status("customer") == status("redemption") == "DONE"
    assert all(records[i].row_count is None for i in ids.values())  # never counted when the rate is 0


def test_export_rows_per_second_rejects_negatives(emu):
    with pytest.raises(httpx.HTTPStatusError) as err:
        emu.configure(export_rows_per_second=-1)
    assert err.value.response.status_code == 400 and "export_rows_per_second" in err.value.response.text
    with pytest.raises(ValueError, match="export_rows_per_second"):
        EmulatorConfig(export_rows_per_second=-1)


def test_export_cache_renders_each_file_once(emu, hook, tmp_path):
    emu.configure(export_cache_dir=str(tmp_path))

    def download(export_id: str) -> bytes:
        return b"".join(b"".join(part.iter_bytes()) for part in hook.download_export(export_id))

    def export_orders() -> str:
        return str(hook.wait_for_export(hook.create_export("order")["id"], poll_interval=0.05)["id"])

    first_id = export_orders()
    first = download(first_id)
    cached = list(tmp_path.iterdir())
    assert len(cached) == 1 and cached[0].read_bytes() == first
    assert download(export_orders()) == first and list(tmp_path.iterdir()) == cached  # same data: same file
    first_order = first.splitlines()[1].split(b",")[0].decode()
    hook.create_order({"id": first_order, "status": "FULFILLED"})  # the data changes...
    download(export_orders())
    assert len(list(tmp_path.iterdir())) == 2  # ...so a new export renders its own file,
    assert download(first_id) == first  # while an export's file stays what it was at its first download
    emu.reset()
    assert list(tmp_path.iterdir()) == []  # ids restart after a reset: stale files must not be served


def test_admin_routes(emu, hook):
    hook.create_export("voucher")
    seen = emu.requests()
    assert seen["counts"] == {"create_export": 1} and seen["log"][0]["status"] == 200
    truth = emu.ground_truth("redemption", "2024-01-01T00:00:00Z", "2024-01-02T00:00:00Z", ids=True)
    assert truth["count"] == len(truth["ids"]) > 0
    emu.reset()
    assert emu.requests()["counts"] == {}
    with pytest.raises(httpx.HTTPStatusError):
        emu.configure(scale=5)  # the dataset is fixed for a server's life


def test_random_faults_are_deterministic_per_seed():
    def run() -> list[int]:
        config = EmulatorConfig(app_id="a", app_token="t-123456", fault_rate_5xx=0.3, fault_rate_429=0.1)
        with run_emulator(config) as emu:
            headers = {"X-App-Id": "a", "X-App-Token": "t-123456"}
            return [httpx.get(f"{emu.base_url}/v1/exports", headers=headers).status_code for _ in range(40)]

    first, second = run(), run()
    assert first == second
    assert {500, 502, 503, 429} & set(first) and 200 in first


def test_slow_response_read_timeout_is_retried(emu, monkeypatch):
    from tests.support.sleeps import Sleeps
    from voucherify_provider.hooks._core import RetryPolicy
    from voucherify_provider.hooks.voucherify import VoucherifyHook

    conn = json.loads(emu.connection_uri())
    conn["extra"] = json.dumps({"timeout": 0.3})
    monkeypatch.setenv("AIRFLOW_CONN_VOUCHERIFY_IMPATIENT", json.dumps(conn))
    impatient = VoucherifyHook("voucherify_impatient", retry_policy=RetryPolicy(backoff_base=0.01), sleep=Sleeps())
    export = impatient.create_export("voucher")
    emu.inject({"route": "get_export", "delay": 1.0})
    assert impatient.get_export(export["id"])["id"] == export["id"]
    # The abandoned slow request is logged when the server finishes it, a second after it came in.
    wait_until(lambda: emu.requests()["counts"].get("get_export", 0) >= 2)
    assert emu.requests()["counts"]["get_export"] == 2


def test_command_line_server(tmp_path):
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "voucherify_provider.emulator", "--port", str(port), "--app-id", "cli-app",
         "--app-token", "cli-token-1", "--seed", "7", "--scale", "300"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env={**os.environ},
    )
    try:
        base = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"{base}/_emulator/health").status_code == 200:
                    break
            except httpx.TransportError:
                time.sleep(0.1)
        listed = httpx.get(f"{base}/v1/exports", headers={"X-App-Id": "cli-app", "X-App-Token": "cli-token-1"})
        assert listed.status_code == 200 and listed.json()["total"] == 0
        assert httpx.get(f"{base}/_emulator/config").json()["scale"] == 300
    finally:
        proc.terminate()
        proc.wait(timeout=20)


# Run in a fresh process: ru_maxrss is a peak, so in the test process an earlier test's peak would hide any
# growth. A small emulator first pays for imports, threads and the HTTP client, so the growth is the scale's.
MEMORY_PROBE = textwrap.dedent("""
    import json, resource
    from voucherify_provider.emulator import EmulatorConfig, run_emulator
    from voucherify_provider.emulator.dataset import iso_ms

    with run_emulator(EmulatorConfig(scale=100)) as warm_up:
        warm_up.ground_truth("redemption", "2024-01-03T00:00:00Z", "2024-01-04T00:00:00Z")
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    with run_emulator(EmulatorConfig(scale=5_000_000)) as emu:
        window = emu.ground_truth("redemption", "2024-01-03T00:00:00Z", "2024-01-04T00:00:00Z")["count"]
        total = emu.ground_truth("redemption")["count"]
        last = iso_ms(emu.backend.dataset.row("redemption", 4_999_999)["date"])
    grown_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before  # KiB on Linux
    print(json.dumps({"window": window, "total": total, "last": last, "grown_mb": grown_kb / 1024}))
""")


def test_millions_of_rows_cost_no_memory():
    probe = subprocess.run([sys.executable, "-c", MEMORY_PROBE], cwd=REPO_ROOT, capture_output=True, text=True,
                           timeout=120)
    assert probe.returncode == 0, probe.stderr
    seen = json.loads(probe.stdout.strip().splitlines()[-1])
    assert seen["window"] == pytest.approx(5_000_000 / 7, rel=0.01)
    assert seen["total"] == 5_000_000
    assert seen["last"] < "2024-01-08"
    assert seen["grown_mb"] < 50
