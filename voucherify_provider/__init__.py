"""Apache Airflow provider for Voucherify.

Kept import-light on purpose: Airflow reads :func:`get_provider_info` while parsing DAGs and loading
the UI, so nothing here may pull in requests, httpx, pandas or pyarrow.
"""

from __future__ import annotations

from typing import Any

__version__ = "0.1.0"

CONN_TYPE = "voucherify"
DEFAULT_CONN_ID = "voucherify_default"


def get_provider_info() -> dict[str, Any]:
    """Describe the provider to Airflow's providers manager (entry point ``apache_airflow_provider``).

    The connection form is declarative (``conn-fields`` / ``ui-field-behaviour``) so Airflow 3.2+ renders
    it without importing the hook and without deprecation warnings.
    """
    return {
        "package-name": "airflow-provider-voucherify",
        "name": "Voucherify",
        "description": "Land Voucherify exports (vouchers, redemptions, publications, customers, orders, "
        "points expirations, voucher transactions) as typed Parquet.",
        "versions": [__version__],
        "integrations": [
            {
                "integration-name": "Voucherify",
                "external-doc-url": "https://docs.voucherify.io/reference/",
                "tags": ["service"],
            }
        ],
        "hooks": [
            {
                "integration-name": "Voucherify",
                "python-modules": [
                    "voucherify_provider.hooks.voucherify",
                    "voucherify_provider.hooks.voucherify_async",
                ],
            }
        ],
        "operators": [
            {"integration-name": "Voucherify", "python-modules": ["voucherify_provider.operators.export",
                                                                 "voucherify_provider.operators.current_state"]}
        ],
        "sensors": [
            {"integration-name": "Voucherify", "python-modules": ["voucherify_provider.sensors.export"]}
        ],
        "triggers": [
            {"integration-name": "Voucherify", "python-modules": ["voucherify_provider.triggers.export"]}
        ],
        "transfers": [
            {
                "source-integration-name": "Voucherify",
                "target-integration-name": "Common IO",
                "python-module": "voucherify_provider.transfers.export_to_warehouse",
            },
        ],
        "connection-types": [
            {
                "hook-class-name": "voucherify_provider.hooks.voucherify.VoucherifyHook",
                "hook-name": "Voucherify",
                "connection-type": CONN_TYPE,
                "conn-fields": {
                    "api_version": {
                        "label": "API version",
                        "schema": {"type": ["string", "null"]},
                        "description": "Optional value sent as X-Voucherify-API-Version.",
                    },
                    "allow_insecure_http": {
                        "label": "Allow plain http:// to a non-loopback host",
                        "schema": {"type": ["boolean", "null"], "default": False},
                        "description": "Off by default: the secret key would travel unencrypted.",
                    },
                    "verify_tls": {
                        "label": "Verify TLS certificates",
                        "schema": {"type": ["boolean", "null"], "default": True},
                    },
                    "download_host": {
                        "label": "Download host (dedicated clusters only)",
                        "schema": {"type": ["string", "null"]},
                        "description": "Host that serves export files, e.g. acme.download.voucherify.io. "
                        "Derived from the cluster when empty.",
                    },
                    "timeout": {
                        "label": "Read timeout (seconds)",
                        "schema": {"type": ["number", "null"], "default": 60},
                    },
                },
                "ui-field-behaviour": {
                    "hidden-fields": ["schema", "port"],
                    "relabeling": {
                        "login": "Application ID",
                        "password": "Secret Key",
                        "host": "Cluster (EU, US1, AS1) or base URL",
                    },
                    "placeholders": {
                        "login": "your Application ID (X-App-Id)",
                        "password": "your Secret Key (X-App-Token)",
                        "host": "EU | US1 | AS1 | https://acme.api.voucherify.io | http://127.0.0.1:8089",
                        "api_version": "v2018-08-01",
                    },
                },
            }
        ],
    }
