"""Reading fields of request bodies; callers collect every problem and answer one 400 naming them all.

Malformed structure (a status outside the enum, merge_fields that is not an object...) is a programming error in
the client and fails the whole request, as Mailchimp's schema validation does; per-member refusals come later.
"""
from __future__ import annotations

from typing import Any

from .audience import STATUSES, MemberWrite
from .problems import invalid
from .timestamps import parse_iso

Problems = list[tuple[str, str]]


def member_write(doc: Any, prefix: str, problems: Problems, required: tuple[str, ...]) -> MemberWrite:
    """`prefix` locates the member in the body (e.g. "members[3]."), so each problem names its field."""
    if not isinstance(doc, dict):
        problems.append((prefix.rstrip(".") or "body", "Send a member object"))
        return MemberWrite("")
    for key in required:
        if doc.get(key) is None:
            problems.append((f"{prefix}{key}", f"{key} is required for every member"))
    email = doc.get("email_address")
    if email is not None and not isinstance(email, str):
        problems.append((f"{prefix}email_address", "Send the address as a string"))
    for key in ("status", "status_if_new"):
        value = doc.get(key)
        if value is not None and value not in STATUSES:
            problems.append((f"{prefix}{key}", f"Send one of {', '.join(STATUSES)} (got {value!r})"))
    merge_fields = doc.get("merge_fields")
    if merge_fields is not None and not isinstance(merge_fields, dict):
        problems.append((f"{prefix}merge_fields", "Send merge_fields as an object keyed by merge tag"))
    tags = doc.get("tags")
    if tags is not None and not (isinstance(tags, list) and all(isinstance(t, str) and t for t in tags)):
        problems.append((f"{prefix}tags", "Send tags as a list of tag names (non-empty strings)"))
    return MemberWrite(email if isinstance(email, str) else "", doc.get("status"), doc.get("status_if_new"),
                       merge_fields if isinstance(merge_fields, dict) else None,
                       tags if isinstance(tags, list) else None)


def boolean(body: dict[str, Any], key: str, problems: Problems) -> bool:
    value = body.get(key, False)
    if not isinstance(value, bool):
        problems.append((key, f"Send {key} as true or false"))
        return False
    return value


def emails(body: dict[str, Any], key: str, problems: Problems, limit: int | None) -> list[str]:
    value = body.get(key, [])
    if not isinstance(value, list) or not all(isinstance(e, str) for e in value):
        problems.append((key, f"Send {key} as a list of email addresses"))
        return []
    if limit is not None and len(value) > limit:
        problems.append((key, f"At most {limit} addresses per call; this one has {len(value)}: "
                              f"split it into calls of {limit} or fewer"))
    return value


def instant(value: str, field: str) -> float:
    """An ISO 8601 value; a wrong one is a 400 naming the field (not collected: it stands alone)."""
    try:
        return parse_iso(value)
    except ValueError:
        raise invalid(field, f"{field} must be an ISO 8601 date-time such as 2024-05-01T12:00:00+00:00") from None
