"""Fixtures and the test environment: an isolated AIRFLOW_HOME, a running emulator and a connection pointing at it.

The environment is set at import, before anything imports Airflow; pytest alone imports this module (test
modules import shared helpers from :mod:`tests.support`, never from here).
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

# Airflow reads AIRFLOW_HOME on first import: keep tests away from ~/airflow.
_HOME = Path(tempfile.mkdtemp(prefix="vcf-airflow-home-"))
os.environ["AIRFLOW_HOME"] = str(_HOME)
os.environ["AIRFLOW__CORE__LOAD_EXAMPLES"] = "False"
# dag.test() syncs DAGs from the DAGs folder: test DAG files are written here (tests/support/dag_files.py).
(_HOME / "dags").mkdir()
os.environ["AIRFLOW__CORE__DAGS_FOLDER"] = str(_HOME / "dags")
os.environ.pop("AIRFLOW_CONN_VOUCHERIFY_DEFAULT", None)

import pytest  # noqa: E402

from tests.support.sleeps import Sleeps  # noqa: E402
from voucherify_provider.emulator import EmulatorConfig, run_emulator  # noqa: E402
from voucherify_provider.hooks._core import RetryPolicy  # noqa: E402

APP_TOKEN = "tok-EMULATOR-s3cr3t-7c1d"


# --8<-- [start:emulator_fixtures]
@pytest.fixture(scope="session")
def emulator():
    """One emulator for the session (scale 200 over a week); tests reset it as they need."""
    config = EmulatorConfig(app_id="app-test", app_token=APP_TOKEN, scale=200, in_progress_seconds=0.05)
    with run_emulator(config) as emu:
        yield emu


@pytest.fixture
def emu(emulator, monkeypatch):
    """The session emulator, reset, with default settings restored after the test."""
    emulator.reset()
    before = emulator.admin("GET", "config")
    monkeypatch.setenv("AIRFLOW_CONN_VOUCHERIFY_TEST", emulator.connection_uri())
    yield emulator
    mutable = {k: before[k] for k in EmulatorConfig.MUTABLE_AT_RUNTIME}
    emulator.configure(**mutable)
# --8<-- [end:emulator_fixtures]


@pytest.fixture(scope="session")
def airflow_db():
    """A migrated SQLite metadata database in the test AIRFLOW_HOME."""
    import subprocess
    import sys

    airflow = Path(sys.executable).parent / "airflow"
    subprocess.run([str(airflow), "db", "migrate"], check=True, capture_output=True, timeout=300)
    return _HOME


@pytest.fixture
def hook(emu):
    from voucherify_provider.hooks.voucherify import VoucherifyHook

    sleeps = Sleeps()
    h = VoucherifyHook("voucherify_test", retry_policy=RetryPolicy(backoff_base=0.01), sleep=sleeps)
    h.sleeps = sleeps
    return h
