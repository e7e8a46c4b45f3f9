"""The provider registers with Airflow: entry point, provider info schema, declarative connection form."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import warnings
from pathlib import Path

import jsonschema
import pytest

from voucherify_provider import get_provider_info

pytestmark = pytest.mark.unit


def test_provider_info_matches_airflow_schema():
    import airflow

    schema = json.loads((Path(airflow.__file__).parent / "provider_info.schema.json").read_text())
    jsonschema.validate(get_provider_info(), schema)


def test_airflow_providers_list_shows_the_provider(tmp_path):
    env = {**os.environ, "AIRFLOW_HOME": str(tmp_path)}
    airflow_cli = Path(sys.executable).parent / "airflow"
    out = subprocess.run([str(airflow_cli), "providers", "list", "-o", "json"], env=env, capture_output=True,
                         text=True, timeout=180, check=True).stdout
    listed = {p["package_name"]: p for p in json.loads(out[out.index("["):])}
    assert listed["airflow-provider-voucherify"]["version"] == "0.1.0"


def test_connection_form_is_declarative_and_warning_free():
    from airflow.providers_manager import ProvidersManager

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        manager = ProvidersManager()
        behaviours = manager.field_behaviours
        widgets = manager.connection_form_widgets
        hooks = manager.hooks
    assert hooks["voucherify"].hook_class_name == "voucherify_provider.hooks.voucherify.VoucherifyHook"
    assert behaviours["voucherify"]["relabeling"] == {
        "login": "Application ID", "password": "Secret Key", "host": "Cluster (EU, US1, AS1) or base URL"}
    assert {"extra__voucherify__api_version", "extra__voucherify__allow_insecure_http",
            "extra__voucherify__download_host"} <= set(widgets)
    ours = [w for w in caught if "voucherify" in str(w.message).lower()]
    assert ours == []


def test_dag_facing_import_stays_light():
    code = ("import sys; import voucherify_provider, voucherify_provider.catalog, voucherify_provider.emulator; "
            "heavy = [m for m in ('pandas', 'pyarrow', 'fastapi', 'uvicorn') if m in sys.modules]; print(heavy)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True)
    assert out.stdout.strip() == "[]"


def test_triggerer_side_imports_no_sync_http_client():
    """The trigger and the async hook run in the triggerer's event loop: they share the hooks' rules
    (``_core``, ``exports``), not the sync hook module and its ``requests``."""
    code = ("import sys; import voucherify_provider.triggers.export, voucherify_provider.hooks.voucherify_async; "
            "heavy = [m for m in ('requests', 'pyarrow', 'pandas', 'voucherify_provider.hooks.voucherify') "
            "if m in sys.modules]; print(heavy)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True)
    assert out.stdout.strip() == "[]"
