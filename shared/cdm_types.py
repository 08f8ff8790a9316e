"""Mailchimp merge-field types for source columns, read from the CDM model.json files Customer Insights writes.

Used when a destination asks for its missing merge fields to be created: a column the model calls `decimal` becomes
a `number` field rather than text, so Mailchimp can filter and sort on it. Anything unknown stays `text`, which
accepts every value.
"""
from __future__ import annotations

import json
from typing import Iterable

from shared.snapshots import MODEL_FILE, BlobSource

_MAILCHIMP_TYPES = {
    "int16": "number", "int32": "number", "int64": "number", "integer": "number", "double": "number",
    "decimal": "number", "float": "number", "date": "date", "datetime": "date", "datetimeoffset": "date",
}  # fmt: skip


def column_types(source: BlobSource, segments: Iterable[str]) -> dict[str, str]:
    """Case-folded column name -> Mailchimp merge type, from every model.json entity named like one of `segments`."""
    wanted = {name.casefold() for name in segments}
    types: dict[str, str] = {}
    for name in source.list_names():
        if name.rsplit("/", 1)[-1] != MODEL_FILE:
            continue
        try:
            entities = json.loads(source.read_bytes(name)).get("entities") or []
            for entity in entities:
                if str(entity.get("name", "")).casefold() in wanted:
                    for attribute in entity.get("attributes") or []:
                        kind = str(attribute.get("dataType", "")).casefold()
                        types.setdefault(str(attribute["name"]).casefold(), _MAILCHIMP_TYPES.get(kind, "text"))
        except (ValueError, KeyError, TypeError, AttributeError):
            continue  # an unreadable model only means text fields; snapshots.py reports it where it matters
    return types
