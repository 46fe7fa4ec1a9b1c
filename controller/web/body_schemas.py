"""Request bodies that routes read themselves, declared in the OpenAPI document as the
models they are.

Some routes parse their body by hand (to answer in the project's own error format), so
FastAPI cannot see its model. `BODY_SCHEMAS` holds those models' JSON schemas as OpenAPI
components; a route's `openapi_extra` names its body by `body_ref(NAME)`, and
`with_body_schemas(app)` adds the components to the app's document.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

from fastapi import FastAPI

from schedules.model import Campaign

_REF = "#/components/schemas/{model}"
CAMPAIGN_BODY_SCHEMA = "CampaignBody"


def _campaign_body() -> dict[str, dict[str, Any]]:
    schema = Campaign.model_json_schema(ref_template=_REF)
    defs: dict[str, dict[str, Any]] = schema.pop("$defs", {})
    # `id` may be left out of the body: the path names the campaign
    schema["required"] = [name for name in schema.get("required", []) if name != "id"]
    schema["title"] = CAMPAIGN_BODY_SCHEMA
    return {CAMPAIGN_BODY_SCHEMA: schema, **defs}


BODY_SCHEMAS: dict[str, dict[str, Any]] = _campaign_body()


def body_ref(name: str) -> dict[str, str]:
    if name not in BODY_SCHEMAS:
        raise KeyError(f"no body schema {name!r}")
    return {"$ref": _REF.format(model=name)}


def with_body_schemas(app: FastAPI) -> None:
    """Make `app.openapi()` carry `BODY_SCHEMAS` among its components."""
    build: Callable[[], dict[str, Any]] = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is not None:
            return app.openapi_schema
        document = build()
        schemas = document.setdefault("components", {}).setdefault("schemas", {})
        for name, schema in BODY_SCHEMAS.items():
            if name in schemas and schemas[name] != schema:
                raise RuntimeError(f"two different OpenAPI schemas are named {name!r}")
            schemas[name] = copy.deepcopy(schema)
        app.openapi_schema = document
        return document

    app.openapi = openapi  # type: ignore[method-assign]
