"""The shape x402 v2 gives every extension: `{"info": ..., "schema": ...}`.

A server declares an extension in a 402's `extensions` as `info` (the data) and `schema` (a
JSON Schema describing `info`); a client echoes what it received in its `PaymentPayload`,
adding to `info` but never removing from it. `declare` builds such an entry; `info_of` reads
one, and also takes the bare `info` object that agent-pay servers sent before they used this
shape (cheap to keep, and an old server's 402 stays readable).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Final

__all__ = ["JSON_SCHEMA_DIALECT", "declare", "info_of", "object_schema"]

JSON_SCHEMA_DIALECT: Final = "https://json-schema.org/draft/2020-12/schema"


def declare(info: Any, schema: Mapping[str, Any]) -> dict[str, Any]:
    """An extension entry: `info`, and the JSON Schema it follows."""
    return {"info": info, "schema": dict(schema)}


def info_of(extensions: Mapping[str, Any] | None, key: str) -> Any:
    """`extensions[key]["info"]` when the entry has the `{info, schema}` shape; the entry
    itself when it has not (an older agent-pay peer); None without an entry."""
    entry = (extensions or {}).get(key)
    if isinstance(entry, dict) and "info" in entry and set(entry) <= {"info", "schema"}:
        return entry["info"]
    return entry


def object_schema(
    properties: Mapping[str, Any], required: list[str] | None = None
) -> dict[str, Any]:
    """A compact JSON Schema for an object with `properties` (the `schema` of a declaration)."""
    schema: dict[str, Any] = {
        "$schema": JSON_SCHEMA_DIALECT,
        "type": "object",
        "properties": dict(properties),
    }
    if required:
        schema["required"] = list(required)
    return schema
