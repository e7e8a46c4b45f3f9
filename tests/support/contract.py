"""Validate JSON bodies against Voucherify's official OpenAPI specs, vendored in tests/specs/."""

from __future__ import annotations

import copy
import functools
import json
from typing import Any

from openapi_schema_validator import OAS30Validator, oas30_format_checker

from harness.paths import REPO_ROOT

# Voucherify's OpenAPI specs, vendored (tests/specs/README.md says from where and under which licence).
SPECS = REPO_ROOT / "tests" / "specs"


@functools.cache
def spec(name: str) -> dict[str, Any]:
    """A spec, with two documented relaxations of its own contradictions applied.

    1. ``Any`` (filter condition values) is ``oneOf`` string / date string / date-time string / number /
       object: a date-time string matches both "string" and "date-time", so ``oneOf`` rejects every date
       filter, including the seed's own paging example. Read as ``anyOf``.
    2. The 400 answer of ``POST /v1/exports`` is ``oneOf`` invalid_payload / invalid_export_fields, two
       schemas with no required keys or enums: every error body matches both, so ``oneOf`` rejects even
       the spec's own examples. Read as ``anyOf``.
    """
    data = json.loads((SPECS / f"{name}.json").read_text())
    relaxed = copy.deepcopy(data)
    schemas = relaxed["components"]["schemas"]
    if "Any" in schemas and "oneOf" in schemas["Any"].get("items", {}):
        schemas["Any"]["items"]["anyOf"] = schemas["Any"]["items"].pop("oneOf")
    for operation in (relaxed["paths"].get("/v1/exports") or {}).values():
        if not isinstance(operation, dict):
            continue
        bad_request = operation.get("responses", {}).get("400", {}).get("content", {}).get("application/json")
        if bad_request and "oneOf" in bad_request["schema"]:
            bad_request["schema"]["anyOf"] = bad_request["schema"].pop("oneOf")
    return relaxed


def _validate(spec_name: str, schema: dict[str, Any], body: Any) -> None:
    root = {**schema, "components": spec(spec_name)["components"]}
    OAS30Validator(root, format_checker=oas30_format_checker).validate(body)


def check_response(spec_name: str, method: str, path: str, status: int, body: Any) -> None:
    """Validate a response body against the spec's schema for (path, method, status).

    Statuses the spec does not document for an operation must still be an ``Error`` object.
    """
    operation = spec(spec_name)["paths"][path][method.lower()]
    response = operation["responses"].get(str(status))
    content = (response or {}).get("content", {}).get("application/json")
    schema = content["schema"] if content else {"$ref": "#/components/schemas/Error"}
    _validate(spec_name, schema, body)


def check_request(spec_name: str, method: str, path: str, body: Any) -> None:
    """Validate a request body against the operation's requestBody schema."""
    operation = spec(spec_name)["paths"][path][method.lower()]
    schema = operation["requestBody"]["content"]["application/json"]["schema"]
    _validate(spec_name, schema, body)
