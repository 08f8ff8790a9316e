"""Mailchimp merge-field types for source columns, read from the CDM model.json files Customer Insights writes.

Used when a destination asks for its missing merge fields to be created: a column the model calls `decimal` becomes
a `number` field rather than text, so Mailchimp can filter and sort on it. Anything unknown stays `text`, which
accepts every value.
"""
from __future__ import annotations

from typing import Iterable

from shared.snapshots import DEFAULT_LIMITS, MODEL_FILE, BlobSource, ReadLimits, SnapshotProblem, read_model_json

_MAILCHIMP_TYPES = {
    "int16": "number", "int32": "number", "int64": "number", "integer": "number", "double": "number",
    "decimal": "number", "float": "number", "date": "date", "datetime": "date", "datetimeoffset": "date",
}  # fmt: skip


def mailchimp_type(data_type: object) -> str:
    """The Mailchimp merge-field type for a CDM attribute `dataType` (anything unknown, or none: text)."""
    return _MAILCHIMP_TYPES.get(data_type.casefold() if isinstance(data_type, str) else "", "text")


def column_types(source: BlobSource, segments: Iterable[str], limits: ReadLimits = DEFAULT_LIMITS) -> dict[str, str]:
    """Case-folded column name -> Mailchimp merge type, from every model.json entity named like one of `segments`.

    A model.json that is too large, too deep or not JSON, and any part of one that is not shaped as expected, only
    means text fields: snapshots.py reports it where it matters."""
    wanted = {name.casefold() for name in segments}
    types: dict[str, str] = {}
    for name in source.list_names():
        if name.rsplit("/", 1)[-1] != MODEL_FILE:
            continue
        try:
            model = read_model_json(source, name, limits)
        except SnapshotProblem:
            continue
        entities = model.get("entities") if isinstance(model, dict) else None
        for entity in entities if isinstance(entities, list) else []:
            if not isinstance(entity, dict) or not isinstance(entity.get("name"), str) or entity["name"].casefold() not in wanted:
                continue
            attributes = entity.get("attributes")
            for attribute in attributes if isinstance(attributes, list) else []:
                if isinstance(attribute, dict) and isinstance(attribute.get("name"), str):
                    types.setdefault(attribute["name"].casefold(), mailchimp_type(attribute.get("dataType")))
    return types
