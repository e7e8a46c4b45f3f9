"""Crash recovery under the real scheduler: task processes killed with SIGKILL mid-poll and mid-download,
and the triggerer killed while an export wait is deferred. Retries reuse the export already created and
land exact data."""

from __future__ import annotations

import os
import signal
from collections import Counter
from pathlib import Path
from typing import Any

import psutil
import pytest

from harness.paths import EXAMPLE_DAGS, VENV_BIN
from harness.stack import AirflowStack, EmulatorProcess, ManagedProcess, wait_until
from tests.support.warehouse_checks import assert_matches_ground_truth

pytestmark = [pytest.mark.e2e, pytest.mark.long, pytest.mark.timeout(900)]

DAY, NEXT = "2024-01-02", "2024-01-03"


def running_pid(airflow: AirflowStack, task_id: str) -> int | None:
    rows = airflow.query("SELECT pid FROM task_instance WHERE task_id = ? AND state = 'running' AND pid IS NOT NULL",
                         [task_id])
    return int(rows[0][0]) if rows else None


def processes_named(leader: psutil.Process, word: str) -> list[psutil.Process]:
    """Descendants whose command line holds ``word`` (finished task processes may linger as zombies)."""
    found = []
    for process in leader.children(recursive=True):
        try:
            if word in " ".join(process.cmdline()):
                found.append(process)
        except psutil.Error:
            continue
    return found


def stack(tmp_path: Path, emulator: EmulatorProcess, deferrable: bool, **extra: str) -> AirflowStack:
    env = {"AIRFLOW_CONN_VOUCHERIFY_DEFAULT": emulator.connection(),
           "VOUCHERIFY_DESTINATION": str(tmp_path / "warehouse"), "VOUCHERIFY_OBJECTS": "redemption",
           "VOUCHERIFY_START_DATE": DAY, "VOUCHERIFY_END_DATE": DAY, "VOUCHERIFY_POLL_INTERVAL": "1",
           "VOUCHERIFY_DEFERRABLE": str(deferrable).lower(), "VOUCHERIFY_RETRY_DELAY": "2", **extra}
    airflow = AirflowStack(tmp_path / "airflow", EXAMPLE_DAGS, env)
    airflow.prepare(pools={"voucherify_api": 2})
    return airflow


def finish(airflow: AirflowStack, backfill: int, emulator: EmulatorProcess, tmp_path: Path) -> dict[str, Any]:
    states = airflow.wait_for_backfills([backfill], timeout=600)
    assert Counter(s[2] for s in states) == Counter({"success": 1}), states
    assert_matches_ground_truth(emulator, tmp_path / "warehouse", "redemption", [DAY], NEXT)
    return dict(emulator.admin("GET", "requests"))


def test_task_killed_during_poll_and_download_reuses_the_export(tmp_path):
    with EmulatorProcess(tmp_path, scale=700, extra_args=["--in-progress-seconds", "12"]) as emulator:
        emulator.admin("POST", "faults", json=[{"route": "download_export", "delay": 10}])
        airflow = stack(tmp_path, emulator, deferrable=False)
        backfill = airflow.backfill("voucherify_redemption", DAY, DAY)
        with airflow:
            # The export task is polling the status in its own process: kill it.
            wait_until(lambda: emulator.admin("GET", "requests")["counts"].get("get_export", 0) >= 2, 240, "polling")
            os.kill(wait_until(lambda: running_pid(airflow, "export"), 60, "export task pid"), signal.SIGKILL)
            # The landing task is inside its (delayed) download: kill it too.
            injected = lambda: emulator.admin("GET", "requests")["faults_injected"]  # noqa: E731
            wait_until(lambda: injected().get("scripted:slow"), 240, "the landing task's download")
            os.kill(wait_until(lambda: running_pid(airflow, "land"), 60, "land task pid"), signal.SIGKILL)
            seen = finish(airflow, backfill, emulator, tmp_path)
            # The emulator logs a request when it has answered it: the killed try's download is still
            # sleeping out its delay when a quick retry has already landed, so wait for its entry.
            downloads = lambda: emulator.admin("GET", "requests")["counts"].get("download_export", 0)  # noqa: E731
            download_count = wait_until(lambda: (n := downloads()) >= 2 and n, 30,
                                        "the killed try's download to be logged")
        tries = dict(airflow.query("SELECT task_id, try_number FROM task_instance"))
    assert (tries["export"], tries["land"]) == (2, 2)  # each task died once and its retry finished the job
    assert seen["counts"]["create_export"] == 1  # the retry reconnected to the export instead of a new one
    assert download_count == 2  # one download per try: the retry fetched the file again, nothing more


def test_triggerer_killed_while_deferred_recovers_after_restart(tmp_path):
    with EmulatorProcess(tmp_path, scale=700, extra_args=["--in-progress-seconds", "25"]) as emulator:
        airflow = stack(tmp_path, emulator, deferrable=True,
                        AIRFLOW__TRIGGERER__TRIGGERER_HEALTH_CHECK_THRESHOLD="10")
        backfill = airflow.backfill("voucherify_redemption", DAY, DAY)
        with airflow:
            deferred = "SELECT 1 FROM task_instance WHERE task_id = 'export' AND state = 'deferred'"
            wait_until(lambda: airflow.query(deferred), 240, "a deferred export task")
            assert airflow.process.proc is not None
            leader = psutil.Process(airflow.process.proc.pid)
            triggerers = processes_named(leader, "triggerer")
            assert triggerers
            for process in triggerers:
                for doomed in [*process.children(recursive=True), process]:
                    try:
                        doomed.kill()
                    except psutil.NoSuchProcess:
                        pass
            replacement = ManagedProcess([str(VENV_BIN / "airflow"), "triggerer"], airflow.env,
                                         tmp_path / "triggerer-restarted.log")
            replacement.start()
            try:
                seen = finish(airflow, backfill, emulator, tmp_path)
            finally:
                replacement.stop()
    assert seen["counts"]["create_export"] == 1
    assert airflow.query("SELECT try_number FROM task_instance WHERE task_id = 'export'") == [(1,)]
