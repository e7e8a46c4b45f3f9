"""Column policies (keep personal data out of the lake, or pseudonymise it) and the hash key they use.

A policy names, per field of an exported object, ``drop`` (the column never lands) or ``hash`` (the value
lands as the hex HMAC-SHA256 of its exported text under a secret key: the same email gives the same hash in
every object and run, so joins still work, but without the key it can be neither reversed nor guessed).
``"personal_data"`` stands for the catalog's suggestions (``ExportedObject.personal``).

Import-light (no pyarrow): operators check policies at DAG-parse time.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from voucherify_provider.catalog import DROP, HASH, ExportedObject, UnknownFieldError
from voucherify_provider.errors import VoucherifyConfigError

POLICIES = (DROP, HASH)
# What happens to a deleted or erased record: kept whole (flagged), redacted (personal fields nulled), removed.
KEEP, REDACT, REMOVE = "keep", "redact", "remove"
DELETED_RECORDS = (KEEP, REDACT, REMOVE)
ERASE_ACTIONS = (REMOVE, REDACT)
PERSONAL_DATA_PRESET = "personal_data"
HASH_ALGORITHM = "HMAC-SHA256"
# 128 bits: a key shorter than this could be searched for.
MIN_KEY_BYTES = 16
KEY_HELP = ('Generate one with: python -c "import secrets; print(secrets.token_urlsafe(32))", and keep it in '
            "a connection's password or a Variable (a secrets backend in production).")


@dataclass(frozen=True)
class ColumnPolicies:
    """Validated policies for one object: ``{field: "drop" | "hash"}``."""

    obj: ExportedObject
    columns: Mapping[str, str]

    @property
    def hashed(self) -> list[str]:
        """Fields landed as their keyed hash."""
        return [k for k, v in self.columns.items() if v == HASH]

    @property
    def dropped(self) -> list[str]:
        """Fields that never land."""
        return [k for k, v in self.columns.items() if v == DROP]


def parse_policies(obj: ExportedObject, spec: Mapping[str, str] | str | None) -> ColumnPolicies:
    """Check a ``column_policies`` argument against the catalog; names the field or policy at fault."""
    if spec is None or spec == {}:
        return ColumnPolicies(obj, {})
    if isinstance(spec, str):
        if spec != PERSONAL_DATA_PRESET:
            raise VoucherifyConfigError(
                f"column_policies {spec!r} is not a preset; use {PERSONAL_DATA_PRESET!r} (the catalog's personal "
                f"fields: {_suggested(obj)}) or a mapping like {{'email': 'hash', 'phone': 'drop'}}.")
        return ColumnPolicies(obj, dict(obj.personal))
    if not isinstance(spec, Mapping):
        raise VoucherifyConfigError(f"column_policies must be a mapping of field to 'drop' or 'hash', or "
                                    f"{PERSONAL_DATA_PRESET!r}; got {type(spec).__name__}.")
    for key, policy in spec.items():
        if not isinstance(key, str) or not obj.is_allowed_field(key):
            raise VoucherifyConfigError(f"column_policies: {UnknownFieldError(obj, key)}")
        if policy not in POLICIES:
            raise VoucherifyConfigError(
                f"column_policies[{key!r}] is {policy!r}; allowed: 'drop' (the column never lands) or 'hash' "
                f"(its keyed HMAC-SHA256, so joins still work).")
        if key in obj.placing_fields:
            raise VoucherifyConfigError(
                f"column_policies cannot {policy} {obj.name}.{key}: the landing places rows and the current-state "
                f"table matches records by {', '.join(obj.placing_fields)}. Record ids are not personal data by "
                "themselves; to remove a person's records, use VoucherifyEraseRecordsOperator.")
    return ColumnPolicies(obj, dict(spec))


def _suggested(obj: ExportedObject) -> str:
    return ", ".join(f"{k} ({v})" for k, v in obj.personal.items()) or "none"


def check_hash_key_source(policies: ColumnPolicies, conn_id: str | None, variable: str | None) -> None:
    """Hashing needs exactly one key source; a key source without hashing is a mistake worth naming."""
    if conn_id and variable:
        raise VoucherifyConfigError("Give hash_key_conn_id or hash_key_variable, not both.")
    if policies.hashed and not (conn_id or variable):
        raise VoucherifyConfigError(
            f"column_policies hash {', '.join(policies.hashed)}, which needs a secret key: set hash_key_conn_id "
            f"(a connection whose password is the key) or hash_key_variable (a Variable holding it). {KEY_HELP}")


def resolve_hash_key(conn_id: str | None, variable: str | None) -> bytes:
    """The hash key from its connection's password or its Variable, registered with the log masker."""
    from airflow.sdk.log import mask_secret

    if conn_id:
        from airflow.sdk import BaseHook

        from voucherify_provider.errors import explain_missing_connection

        with explain_missing_connection(f"hash_key_conn_id {conn_id!r} is not defined. Create it with the key as "
                                        f"its password. {KEY_HELP}"):
            secret = BaseHook.get_connection(conn_id).password or ""
        where = f"the password of connection {conn_id!r}"
    else:
        from airflow.sdk import Variable

        secret = str(Variable.get(str(variable), default="") or "")
        where = f"Variable {variable!r}"
    if secret:
        mask_secret(secret)
    key = secret.encode("utf-8")
    if len(key) < MIN_KEY_BYTES:
        raise VoucherifyConfigError(
            f"The hash key ({where}) is {'empty' if not key else 'too short'}: it needs at least {MIN_KEY_BYTES} "
            f"bytes so that hashes cannot be searched for. {KEY_HELP}")
    return key


def key_id(key: bytes) -> str:
    """A short fingerprint naming the key in manifests (two landings hashed alike when it matches); the key
    cannot be recovered from it."""
    return hmac.new(key, b"voucherify-provider hash key id", hashlib.sha256).hexdigest()[:16]


def redacted(value: Any) -> str:
    """What messages print instead of a personal value."""
    return f"<personal data, {len(str(value))} characters, not shown>"
