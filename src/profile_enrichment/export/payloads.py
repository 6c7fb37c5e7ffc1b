"""Schema Registry / Catalog payloads and the run-time record JSON Schema.

Everything under ``modelInsights`` is generated from :data:`.layout.MODEL_INSIGHTS`.
Ids that only exist after the previous API call (field group id, schema id) are passed in,
so callers can substitute placeholders such as ``"{{FIELD_GROUP_ID}}"``.
"""

from __future__ import annotations

from typing import Any

from .layout import MODEL_INSIGHTS, Field, tenant_key, validate_tenant_id

PROFILE_CLASS = "https://ns.adobe.com/xdm/context/profile"
IDENTITYMAP_FIELD_GROUP = "https://ns.adobe.com/xdm/context/identitymap"
FIELD_GROUP_NAME = "modelInsightsFieldGroup"
FIELD_GROUP_TITLE = "Profile enrichment model insights"
SCHEMA_TITLE = "Profile enrichment: model insights (Individual Profile)"
DATASET_NAME = "Profile enrichment model insights"
JSON_SCHEMA_DIALECT = "https://json-schema.org/draft/2020-12/schema"


def _field_schema(f: Field, *, strict: bool) -> dict[str, Any]:
    """JSON Schema of one layout field.

    ``strict=False``: Schema Registry flavour (title, description, type, XDM constraints).
    ``strict=True``: validation flavour (no empties, closed objects, required keys).
    """
    out: dict[str, Any] = {"title": f.title, "description": f.description}
    if f.xdm_type == "date":
        out.update(type="string", format="date")
    elif f.xdm_type == "map":
        out.update(type="object", additionalProperties={"type": "string"})
        if strict:
            out["minProperties"] = 1
            out["additionalProperties"]["minLength"] = 1
        else:
            out["meta:xdmType"] = "map"
    elif f.xdm_type == "object":
        out.update(type="object", properties=_props(f.children, strict=strict))
        if strict:
            out["minProperties"] = 1
            out["additionalProperties"] = False
            if f.required:
                out["required"] = list(f.required)
    elif f.xdm_type == "array":
        item: dict[str, Any] = {
            "title": f"{f.title} item",
            "description": f"One entry of {f.name}.",
            "type": "object",
            "properties": _props(f.children, strict=strict),
        }
        if strict:
            item["additionalProperties"] = False
            if f.required:
                item["required"] = list(f.required)
        out.update(type="array", items=item)
        if strict:
            out["minItems"] = 1
    else:
        out["type"] = f.xdm_type
        if f.xdm_type == "string" and strict:
            out["minLength"] = 1
    if f.minimum is not None:
        out["minimum"] = f.minimum
    if f.maximum is not None:
        out["maximum"] = f.maximum
    if f.enum:
        out["enum"] = list(f.enum)
    if f.pattern:
        out["pattern"] = f.pattern
    return out


def _props(fields: tuple[Field, ...], *, strict: bool) -> dict[str, Any]:
    return {c.name: _field_schema(c, strict=strict) for c in fields}


def model_insights_schema(*, strict: bool = False) -> dict[str, Any]:
    """JSON Schema of the ``modelInsights`` object (see :func:`_field_schema` for flavours)."""
    return _field_schema(MODEL_INSIGHTS, strict=strict)


def field_group_payload(tenant: str) -> dict[str, Any]:
    """Body of ``POST /data/foundation/schemaregistry/tenant/fieldgroups``."""
    key = tenant_key(tenant)
    return {
        "title": FIELD_GROUP_TITLE,
        "description": "Churn and conversion propensity, customer lifetime value, category "
        "affinity and segment written by the profile-enrichment exporter.",
        "type": "object",
        "meta:intendedToExtend": [PROFILE_CLASS],
        "definitions": {
            FIELD_GROUP_NAME: {
                "properties": {
                    key: {
                        "title": f"Tenant namespace {key}",
                        "description": "Custom fields of the organisation's tenant namespace.",
                        "type": "object",
                        "properties": {"modelInsights": model_insights_schema()},
                    }
                }
            }
        },
        "allOf": [{"$ref": f"#/definitions/{FIELD_GROUP_NAME}"}],
    }


def schema_payload(tenant: str, field_group_id: str = "{{FIELD_GROUP_ID}}") -> dict[str, Any]:
    """Body of ``POST /data/foundation/schemaregistry/tenant/schemas`` (Individual Profile)."""
    validate_tenant_id(tenant)
    return {
        "title": SCHEMA_TITLE,
        "description": "XDM Individual Profile with IdentityMap and the model-insights field group.",
        "type": "object",
        "meta:class": PROFILE_CLASS,
        "allOf": [
            {"$ref": PROFILE_CLASS},
            {"$ref": IDENTITYMAP_FIELD_GROUP},
            {"$ref": field_group_id},
        ],
    }


def dataset_payload(schema_id: str = "{{SCHEMA_ID}}") -> dict[str, Any]:
    """Body of ``POST /data/foundation/catalog/dataSets``, enabled for Real-Time Profile."""
    return {
        "name": DATASET_NAME,
        "description": "Model scores per profile, written by the profile-enrichment exporter.",
        "schemaRef": {
            "id": schema_id,
            "contentType": "application/vnd.adobe.xed-full+json;version=1",
        },
        "tags": {"unifiedProfile": ["enabled:true"]},
    }


def record_json_schema(tenant: str) -> dict[str, Any]:
    """Draft 2020-12 JSON Schema of ONE exported record, for run-time validation.

    The primary-identity rule (exactly one ``primary: true`` across all namespaces) is not
    expressible per namespace, so :mod:`.validate` checks it in code.
    """
    key = tenant_key(tenant)
    identity_item = {
        "type": "object",
        "required": ["id"],
        "properties": {
            "id": {"type": "string", "minLength": 1},
            "authenticatedState": {
                "type": "string",
                "enum": ["ambiguous", "authenticated", "loggedOut"],
            },
            "primary": {"type": "boolean"},
        },
        "additionalProperties": False,
    }
    return {
        "$schema": JSON_SCHEMA_DIALECT,
        "$id": f"urn:profile-enrichment:export:record:{key}",
        "title": "One exported profile record",
        "type": "object",
        "required": ["identityMap", "_id", key],
        "properties": {
            "_id": {"type": "string", "minLength": 1, "pattern": "^[^:]+$"},
            "identityMap": {
                "type": "object",
                "minProperties": 1,
                "propertyNames": {"minLength": 1, "pattern": "^[^\\s]+$"},
                "properties": {
                    "Email_LC_SHA256": {
                        "type": "array",
                        "minItems": 1,
                        "items": {
                            **identity_item,
                            "properties": {
                                **identity_item["properties"],
                                "id": {"type": "string", "pattern": "^[a-f0-9]{64}$"},
                            },
                        },
                    }
                },
                "additionalProperties": {"type": "array", "minItems": 1, "items": identity_item},
            },
            key: {
                "type": "object",
                "required": ["modelInsights"],
                "properties": {"modelInsights": model_insights_schema(strict=True)},
                "additionalProperties": False,
            },
        },
        "additionalProperties": False,
    }
