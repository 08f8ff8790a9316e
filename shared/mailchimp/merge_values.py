"""Merge-field values as Mailchimp will store them: what to send, and whether a write would change anything.

Planning calls these for every member of a refresh, so the usual types (str, dict, int, float, None) are told
apart with `type(value) is ...` before any isinstance against Mapping, an ABC check that cost 5-9 % of planning
CPU. The fast paths give exactly what the general rules below them give (tests/unit/test_merge_values_equivalence.py
compares them with the old implementation); subclasses and other types take the general rules.
"""
from __future__ import annotations

from collections.abc import Mapping
from typing import Any

MAX_TEXT_BYTES = 255  # Mailchimp cuts text values at 255 bytes


def values_to_send(desired: Mapping[str, Any]) -> dict[str, Any]:
    """Empty values are dropped: an export only adds what it knows and never erases what Mailchimp holds."""
    sent = {}
    for tag, value in desired.items():
        if type(value) is str:
            stored = _cut(value)
            if stored:  # a str is empty only when ""
                sent[tag] = stored
            continue
        stored = _as_stored(value)
        if not _is_empty(stored):
            sent[tag] = stored
    return sent


def unchanged(desired: Mapping[str, Any], existing: Mapping[str, Any]) -> bool:
    """True when writing `desired` would leave Mailchimp's values as they are, so the write can be skipped.

    ASCII text Mailchimp holds exactly as given (both of type str) is the same whatever the rules below make of it,
    and is passed over: in a refresh most values are, and every member is compared (about 4 % of a refresh's planning
    CPU saved). The others go through `changed_fields`, which compares each tag on its own. (Numbers are left to the
    rules: one too long for str() must fail there as before.)"""
    if type(desired) is not dict or type(existing) is not dict:  # what planning passes; anything else, by the rules
        return not changed_fields(desired, existing)
    rest: dict[str, Any] | None = None
    for tag, value in desired.items():
        if type(value) is str and type(held := existing.get(tag)) is str and held == value and value.isascii():
            continue
        if rest is None:
            rest = {}
        rest[tag] = value
    return rest is None or not changed_fields(rest, existing)


def changed_fields(desired: Mapping[str, Any], existing: Mapping[str, Any]) -> list[str]:
    """The merge tags whose values writing `desired` would change (what a preview shows for an update)."""
    return [tag for tag, value in values_to_send(desired).items() if not _same(value, existing.get(tag))]


def _cut(value: str) -> str:
    """A str (exactly) as Mailchimp keeps it: trimmed, at most MAX_TEXT_BYTES bytes of UTF-8, trimmed again."""
    if value.isascii():  # a byte a character, nothing to split (and no lone surrogate, which would not encode)
        value = value.strip()
        return value if len(value) <= MAX_TEXT_BYTES else value[:MAX_TEXT_BYTES].strip()
    return value.strip().encode("utf-8")[:MAX_TEXT_BYTES].decode("utf-8", "ignore").strip()


def _as_stored(value: Any) -> Any:
    kind = type(value)
    if kind is str:
        return _cut(value)
    if kind is dict:  # address: sub-values follow the same rules
        return values_to_send(value)
    if value is None or kind is int or kind is float:
        return value
    if isinstance(value, str):
        cut = value.strip().encode("utf-8")[:MAX_TEXT_BYTES].decode("utf-8", "ignore")
        return cut.strip()
    if _is_mapping(value):
        return values_to_send(value)
    return value


def _is_mapping(value: Any) -> bool:
    """isinstance(value, typing.Mapping) exactly: typing asks of type(value), never of a __class__ it claims."""
    return issubclass(type(value), Mapping)


def _is_empty(value: Any) -> bool:
    kind = type(value)
    if kind is str or kind is dict:
        return not value
    if kind is int or kind is float:
        return False
    return value is None or value == "" or value == {}


def _same(sent: Any, held: Any) -> bool:
    kind = type(sent)
    if kind is str:  # str(sent) is sent
        held_kind = type(held)
        if held_kind is str:
            return sent == _cut(held)
        if held is None:
            return sent == ""
        return sent == _scalar(_as_stored(held))
    if kind is dict or (kind is not int and kind is not float and sent is not None and _is_mapping(sent)):
        if type(held) is not dict and not _is_mapping(held):
            return False
        for key, value in sent.items():
            if not _same(value, held.get(key)):
                return False
        return True
    return _scalar(sent) == _scalar(_as_stored(held))


def _scalar(value: Any) -> str:
    """Numbers come back as numbers or strings depending on the field type; compare their text."""
    kind = type(value)
    if kind is str:
        return value
    if value is None:
        return ""
    if kind is int:
        return str(value)
    if kind is float:
        return str(int(value)) if value.is_integer() else str(value)
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return "" if value is None else str(value)
