"""1EdTech's JSON Schemas for Open Badges 3.0, vendored in `tests/support/openbadges/` (its
README gives their source and version), as validators."""

from __future__ import annotations

import json
import pathlib

import jsonschema  # type: ignore[import-untyped]

SCHEMAS = pathlib.Path(__file__).parent / "openbadges"


def validator(name: str) -> jsonschema.Draft201909Validator:
    schema = json.loads((SCHEMAS / name).read_text())
    return jsonschema.Draft201909Validator(
        schema, format_checker=jsonschema.Draft201909Validator.FORMAT_CHECKER
    )


CREDENTIAL_SCHEMA = validator("achievementcredential.schema.json")
PROFILE_SCHEMA = validator("profile.schema.json")
