"""Storage events: which segment blobs a `Microsoft.Storage.BlobCreated` event (Event Grid schema) announces.

In Azure, Event Grid delivers these into the `segment-events` storage queue; locally the development host writes the
same events into the same queue, so one handler serves both.
"""
from __future__ import annotations

import json
from typing import Any

BLOB_CREATED = "Microsoft.Storage.BlobCreated"
_SUBJECT = "/blobServices/default/containers/"


def created_blobs(message: str | bytes, container: str) -> list[str]:
    """Blob names in `container` that the message's BlobCreated events announce; anything else is ignored."""
    try:
        doc: Any = json.loads(message)
    except ValueError:
        return []
    events = doc if isinstance(doc, list) else [doc]
    names = []
    for event in events:
        if not isinstance(event, dict) or event.get("eventType") != BLOB_CREATED:
            continue
        subject = str(event.get("subject", ""))
        if not subject.startswith(_SUBJECT):
            continue
        found_container, _, rest = subject[len(_SUBJECT):].partition("/blobs/")
        if found_container == container and rest:
            names.append(rest)
    return names
