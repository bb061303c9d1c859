"""The JSON Schema of pipeline files, generated from the pydantic models (never written by hand)."""

from __future__ import annotations

import json
from typing import Any

SCHEMA_ID = "https://ansflow.dev/schema/pipeline-v1.json"


def pipeline_schema() -> dict[str, Any]:
    """Schema for yaml-language-server and other JSON Schema tools (draft 2020-12)."""
    from ansflow.model import Pipeline

    schema = Pipeline.model_json_schema(mode="validation")
    schema = {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$id": SCHEMA_ID,
        "title": "ansflow pipeline",
        "description": "An ansflow pipeline file (ansflow.yml).",
        **{k: v for k, v in schema.items() if k not in ("title", "description")},
    }
    return schema


def schema_json() -> str:
    return json.dumps(pipeline_schema(), indent=2, sort_keys=False) + "\n"
