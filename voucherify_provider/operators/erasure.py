"""VoucherifyEraseRecordsOperator: an erasure request (a list of ids) carried out in the lake."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from airflow.sdk import BaseOperator

from voucherify_provider import catalog
from voucherify_provider.arguments import is_templated
from voucherify_provider.errors import VoucherifyConfigError
from voucherify_provider.landing.destination import check_destination, destination_path, staging_owner
from voucherify_provider.outcomes import config_errors_fail_task
from voucherify_provider.privacy import ERASE_ACTIONS, REMOVE

if TYPE_CHECKING:
    from airflow.sdk import Context

RECONCILE_FOLDER = "_reconcile"


class VoucherifyEraseRecordsOperator(BaseOperator):
    """Erase records from everything the provider landed for one object: every partition under
    ``<destination>/<object>/`` (and the reconcile id lists), and the current-state table.

    Partitions holding a requested id are rewritten atomically (a reader sees them before or after, never
    half-way; manifests updated, old files removed) and the table's old files are vacuumed, so the records
    are not readable in any version. An audit record ``<destination>/_erasure/<object>/<stamp>.json`` says
    what was erased where, with the ids hashed. Ids never reach logs or XCom: the task returns counts.
    Run it once the records are deleted in Voucherify, so that no later export brings them back.

    :param exported_object: the object to erase from.
    :param ids: the ids to erase (templated: e.g. ``{{ params.customer_ids }}``; a list, or a JSON list or
        comma-separated string as rendered).
    :param destination: the same base path or URL the landings used.
    :param destination_conn_id: connection for the destination's filesystem.
    :param match_field: the field the ids are values of: default the object's key (``id``/``code``); e.g.
        ``customer_id`` to erase a customer's redemptions.
    :param action: ``remove`` the matching rows (default), or ``redact`` them: null their personal fields,
        metadata and customer reference, keep the rest (an order stays an order without its customer).
    :param current_state: also erase from the current-state table (objects that have one).
    :param vacuum: delete the table's files no current version uses (all time travel before the erasure
        goes: the erased rows are in those files).
    :param hash_key_conn_id: the column-policy key: columns landed hashed match the ids' hashes, and the
        audit record hashes the ids with it (so they compare with hashed columns); default: no key, the
        audit record's ids as plain SHA-256.
    :param hash_key_variable: or the Variable holding that key.
    """

    template_fields: Sequence[str] = ("exported_object", "ids", "destination", "destination_conn_id",
                                      "hash_key_conn_id", "hash_key_variable")
    ui_color = "#fde2e2"

    def __init__(self, *, exported_object: str, ids: Any, destination: str, destination_conn_id: str | None = None,
                 match_field: str | None = None, action: str = REMOVE, current_state: bool = True,
                 vacuum: bool = True, hash_key_conn_id: str | None = None, hash_key_variable: str | None = None,
                 **kwargs: Any) -> None:
        if action not in ERASE_ACTIONS:
            raise VoucherifyConfigError(f"action must be one of {', '.join(ERASE_ACTIONS)}; got {action!r}.")
        if not is_templated(destination):
            check_destination(destination)
        if not is_templated(exported_object):
            _match_field(catalog.get_object(exported_object), match_field)
        if hash_key_conn_id and hash_key_variable:
            raise VoucherifyConfigError("Give hash_key_conn_id or hash_key_variable, not both.")
        super().__init__(**kwargs)
        self.exported_object = exported_object
        self.ids = ids
        self.destination = destination
        self.destination_conn_id = destination_conn_id
        self.match_field = match_field
        self.action = action
        self.current_state = current_state
        self.vacuum = vacuum
        self.hash_key_conn_id = hash_key_conn_id
        self.hash_key_variable = hash_key_variable

    def execute(self, context: Context) -> dict[str, Any]:
        """Erase from the partitions, then the table; write the audit record; return the counts."""
        from voucherify_provider.landing.current_state import erase, table_path, vacuum
        from voucherify_provider.landing.erasure import (
            Erasure,
            erase_in_partitions,
            hashed_ids,
            write_audit_record,
        )
        from voucherify_provider.privacy import resolve_hash_key

        with config_errors_fail_task():
            obj = catalog.get_object(self.exported_object)
            field = _match_field(obj, self.match_field)
            ids = parse_ids(self.ids)
            key = (resolve_hash_key(self.hash_key_conn_id, self.hash_key_variable)
                   if self.hash_key_conn_id or self.hash_key_variable else None)
            base = destination_path(self.destination, self.destination_conn_id)
            owner = staging_owner(context) or "erase"
            erasure = Erasure(obj, field, ids, self.action, key)
            self.log.info("Erasing %d id(s) of %s by %s (%s)", len(ids), obj.name, field, self.action)
            # A column landed hashed with no key given is a config mistake: it fails here, not on retries.
            partitions = erase_in_partitions(base / obj.name, erasure, owner)
            if field == obj.key_field:  # the reconcile id lists hold keys only
                partitions += erase_in_partitions(base / RECONCILE_FOLDER / obj.name,
                                                  Erasure(obj, field, ids, REMOVE, key), owner)
        counts: dict[str, Any] = {"ids": len(ids), "partitions_rewritten": len(partitions),
                                  "rows_erased": sum(p["rows"] for p in partitions)}
        table = table_path(base, obj)
        if self.current_state and obj.incremental:
            table_counts = erase(table, obj, erasure, owner)
            counts["table_rows_erased"] = table_counts["num_target_rows_erased"]
            if self.vacuum:  # also when a retry finds nothing left: its earlier try may have died before this
                counts["table_files_vacuumed"] = vacuum(table, 0, owner)
        audit = write_audit_record(base, obj.name, {
            "object": obj.name, "match_field": field, "action": self.action, **hashed_ids(ids, key),
            "partitions": partitions, "counts": counts,
            "run": {"dag_id": getattr(context.get("dag"), "dag_id", None), "run_id": context.get("run_id")}})
        self.log.info("Erased %s row(s) in %d partition(s) of %s; audit record %s", counts["rows_erased"],
                      len(partitions), obj.name, audit)
        return {**counts, "audit_record": str(audit)}


def _match_field(obj: catalog.ExportedObject, match_field: str | None) -> str:
    field = match_field or obj.key_field
    if field not in obj.fields:
        raise VoucherifyConfigError(f"match_field: {catalog.UnknownFieldError(obj, field)}")
    return field


def parse_ids(value: Any) -> list[str]:
    """The ids of an erasure request: a list, or its rendered text (JSON list, or comma/newline separated);
    distinct, non-empty strings. The message never quotes them."""
    if isinstance(value, str):
        text = value.strip()
        if text.startswith("["):
            try:
                value = json.loads(text)
            except ValueError:
                value = [v.strip(" '\"") for v in text.strip("[]").split(",")]
        else:
            value = [v for v in (p.strip() for p in text.replace("\n", ",").split(",")) if v]
    if not isinstance(value, (list, tuple)) or not value:
        raise VoucherifyConfigError("ids must be a non-empty list of record ids (e.g. params customer_ids: "
                                    "[\"cust_...\"]); got " + (f"a {type(value).__name__}" if value else "none") + ".")
    bad = [i for i, v in enumerate(value) if not isinstance(v, str) or not v.strip()]
    if bad:
        raise VoucherifyConfigError(f"ids must be non-empty strings; entries at positions {bad[:10]} are not.")
    return sorted({v.strip() for v in value})
