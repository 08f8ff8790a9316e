"""Merge-field values as Mailchimp will store them: what to send, and whether a write would change anything."""
from __future__ import annotations

from typing import Any, Mapping

MAX_TEXT_BYTES = 255  # Mailchimp cuts text values at 255 bytes


def values_to_send(desired: Mapping[str, Any]) -> dict[str, Any]:
    """Empty values are dropped: an export only adds what it knows and never erases what Mailchimp holds."""
    sent = {}
    for tag, value in desired.items():
        stored = _as_stored(value)
        if not _is_empty(stored):
            sent[tag] = stored
    return sent


def unchanged(desired: Mapping[str, Any], existing: Mapping[str, Any]) -> bool:
    """True when writing `desired` would leave Mailchimp's values as they are, so the write can be skipped."""
    return not changed_fields(desired, existing)


def changed_fields(desired: Mapping[str, Any], existing: Mapping[str, Any]) -> list[str]:
    """The merge tags whose values writing `desired` would change (what a preview shows for an update)."""
    return [tag for tag, value in values_to_send(desired).items() if not _same(value, existing.get(tag))]


def _as_stored(value: Any) -> Any:
    if isinstance(value, str):
        cut = value.strip().encode("utf-8")[:MAX_TEXT_BYTES].decode("utf-8", "ignore")
        return cut.strip()
    if isinstance(value, Mapping):  # address: sub-values follow the same rules
        return values_to_send(value)
    return value


def _is_empty(value: Any) -> bool:
    return value is None or value == "" or value == {}


def _same(sent: Any, held: Any) -> bool:
    if isinstance(sent, Mapping):
        return isinstance(held, Mapping) and all(_same(v, held.get(k)) for k, v in sent.items())
    return _scalar(sent) == _scalar(_as_stored(held))


def _scalar(value: Any) -> str:
    """Numbers come back as numbers or strings depending on the field type; compare their text."""
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return "" if value is None else str(value)
