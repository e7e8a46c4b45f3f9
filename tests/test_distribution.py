"""The provider as users install it.

The sdist and the wheel are built (``python -m build``: the wheel from the sdist, so the sdist is proven
complete) and must carry ``voucherify_provider`` only. The wheel is installed into a fresh virtualenv
with the newest Airflow the project pins (constraints.txt), the newest 3.2.x and the oldest it supports
(tests/compat/), and there Airflow lists the provider with its version, registers the ``voucherify``
connection type and the trigger, parses ``dags/voucherify_exports.py`` without import errors, and runs a
created_at-windowed and a change-window DAG (with its current-state merge) with ``airflow dags test``
against the emulator, landing the ground truth.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

import pyarrow.dataset as ds
import pytest

from harness.paths import EXAMPLE_DAGS, REPO_ROOT
from harness.stack import EmulatorProcess
from tests.support.warehouse_checks import assert_matches_ground_truth
from voucherify_provider import __version__

NEWEST, NEWEST_3_2, OLDEST = "3.3.2", "3.2.2", "3.1.8"
CONSTRAINTS = {NEWEST: REPO_ROOT / "constraints.txt",
               **{v: REPO_ROOT / "tests" / "compat" / f"constraints-airflow-{v}.txt" for v in (NEWEST_3_2, OLDEST)}}

pytestmark = [pytest.mark.slow, pytest.mark.timeout(1200)]

PROBE = """
import json
from airflow.providers_manager import ProvidersManager
try:
    from airflow.dag_processing.dagbag import DagBag
except ImportError:  # Airflow 3.1
    from airflow.models.dagbag import DagBag

manager = ProvidersManager()
info = manager.providers["airflow-provider-voucherify"]
bag = DagBag(dag_folder=DAGS)  # examples are off (AIRFLOW__CORE__LOAD_EXAMPLES)
print(json.dumps({
    "version": info.version,
    "sections": sorted(info.data),
    "hook": manager.hooks["voucherify"].hook_class_name,
    "triggers": [t.trigger_class_name for t in manager.trigger if t.package_name == "airflow-provider-voucherify"],
    "import_errors": {str(k): str(v)[-500:] for k, v in bag.import_errors.items()},
    "dag_ids": sorted(bag.dag_ids),
}))
"""


def run(cmd: list[str], env: dict[str, str] | None = None, timeout: float = 600, with_stderr: bool = False) -> str:
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout)
    assert done.returncode == 0, f"{' '.join(cmd[:4])}... failed:\n{done.stdout[-4000:]}\n{done.stderr[-4000:]}"
    return done.stdout + done.stderr if with_stderr else done.stdout


@pytest.fixture(scope="module")
def dist(tmp_path_factory) -> dict[str, Path]:
    out = tmp_path_factory.mktemp("dist")
    run([sys.executable, "-m", "build", "--outdir", str(out), str(REPO_ROOT)], timeout=900)
    return {"wheel": next(out.glob("*.whl")), "sdist": next(out.glob("*.tar.gz"))}


def test_wheel_and_sdist_carry_the_provider_only(dist):
    wheel_tops = {name.split("/")[0] for name in zipfile.ZipFile(dist["wheel"]).namelist()}
    assert wheel_tops == {"voucherify_provider", f"airflow_provider_voucherify-{__version__}.dist-info"}
    wheel_files = zipfile.ZipFile(dist["wheel"]).namelist()
    assert "voucherify_provider/emulator/__main__.py" in wheel_files  # the emulator ships inside the package
    assert any(name.endswith("licenses/LICENSE") for name in wheel_files)
    with tarfile.open(dist["sdist"]) as sdist:
        members = {m.name.split("/", 1)[1] for m in sdist.getmembers() if "/" in m.name}
    # hatchling always adds .gitignore to an sdist; no package but the provider's
    assert {m.split("/")[0] for m in members} == {"voucherify_provider", "README.md", "LICENSE", "pyproject.toml",
                                                 "PKG-INFO", ".gitignore"}


# Each version costs a fresh virtualenv (~75 s of pip) and an `airflow dags test`: the suites behind `long`.
@pytest.fixture(scope="module",
                params=[pytest.param(v, marks=pytest.mark.long) for v in (NEWEST, NEWEST_3_2, OLDEST)])
def installed(request, dist, tmp_path_factory) -> tuple[str, Path]:
    """A fresh virtualenv holding the built wheel and one Airflow version."""
    version = request.param
    venv = tmp_path_factory.mktemp(f"venv-airflow-{version}")
    run([sys.executable, "-m", "venv", str(venv)])
    pip = [str(venv / "bin" / "python"), "-m", "pip", "install", "--quiet", "--disable-pip-version-check"]
    run([*pip, "-c", str(CONSTRAINTS[version]), f"apache-airflow=={version}", str(dist["wheel"])], timeout=1200)
    return version, venv


def airflow_env(home: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AIRFLOW", "VOUCHERIFY_", "PYTHONPATH"))}
    env.update({"AIRFLOW_HOME": str(home), "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
                "AIRFLOW__CORE__DAGS_FOLDER": str(EXAMPLE_DAGS), **extra})
    return env


def test_airflow_registers_the_provider_and_parses_the_dags(installed, tmp_path):
    version, venv = installed
    env = airflow_env(tmp_path / "home")
    listed = run([str(venv / "bin" / "airflow"), "providers", "list", "-o", "json"], env)
    providers = {p["package_name"]: p for p in json.loads(listed[listed.index("["):])}
    assert providers["airflow-provider-voucherify"]["version"] == __version__, version
    probe = json.loads(run([str(venv / "bin" / "python"), "-c", PROBE.replace("DAGS", repr(str(EXAMPLE_DAGS)))],
                           env).strip().splitlines()[-1])
    assert probe["version"] == __version__
    assert probe["hook"] == "voucherify_provider.hooks.voucherify.VoucherifyHook"
    assert {"hooks", "operators", "sensors", "triggers", "transfers", "connection-types"} <= set(probe["sections"])
    assert probe["triggers"] == ["voucherify_provider.triggers.export"]
    assert probe["import_errors"] == {}
    # The daily DAG of each of the 7 objects, the history DAG of the 6 that have history, the erasure DAG.
    assert len(probe["dag_ids"]) == 14
    assert {"voucherify_redemption", "voucherify_order_history", "voucherify_erasure"} <= set(probe["dag_ids"])


def test_example_dags_run_on_this_airflow(installed, tmp_path):
    version, venv = installed
    with EmulatorProcess(tmp_path, scale=300) as emulator:
        env = airflow_env(tmp_path / "home", AIRFLOW_CONN_VOUCHERIFY_DEFAULT=emulator.connection(),
                          VOUCHERIFY_DESTINATION=str(tmp_path / "lake"), VOUCHERIFY_OBJECTS="redemption,order",
                          VOUCHERIFY_POLL_INTERVAL="0.5", VOUCHERIFY_RETRIES="0")
        airflow = str(venv / "bin" / "airflow")
        run([airflow, "db", "migrate"], env)
        logs = [run([airflow, "dags", "test", dag_id, "2024-01-03T00:00:00+00:00"], env, with_stderr=True)
                for dag_id in ("voucherify_redemption", "voucherify_order")]
        if version != OLDEST:  # Airflow 3.1's task SDK itself logs any absent Variable at ERROR (3.2: debug)
            # The destination falls back from the param to the (unset) Variable: expected, not an error.
            assert not [line for log in logs for line in log.splitlines() if "Variable not found" in line]
        assert_matches_ground_truth(emulator, tmp_path / "lake", "redemption", ["2024-01-02"], "2024-01-03")
        # Orders land by change window and merge into their Delta current-state table.
        orders = ds.dataset(str(tmp_path / "lake" / "order"), format="parquet", partitioning="hive").to_table()
        truth = emulator.admin("GET", "ground-truth", params={
            "object": "order", "start": "2024-01-02T00:00:00Z", "end": "2024-01-03T00:00:00Z", "ids": "true",
            "placed_by": "last_change"})
        assert sorted(orders.column("id").to_pylist()) == sorted(truth["ids"]) and truth["count"] > 0
        from deltalake import DeltaTable

        current = DeltaTable(str(tmp_path / "lake" / "current" / "order")).to_pyarrow_table()
        assert sorted(current.column("id").to_pylist()) == sorted(truth["ids"])
