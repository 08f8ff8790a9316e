"""Plain answers of the audience-level reads, so callers never handle Mailchimp's raw JSON."""
from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any


@dataclass(frozen=True)
class Audience:
    id: str
    name: str
    double_optin: bool  # decides whether new members should be sent as "pending" (Mailchimp mails them to confirm)
    member_count: int  # subscribed contacts
    total_contacts: int | None = None  # contacts of any status (pending, unsubscribed, cleaned...); None: not said

    @classmethod
    def from_json(cls, doc: dict[str, Any]) -> "Audience":
        stats = doc.get("stats") or {}
        total = stats.get("total_contacts")
        return cls(str(doc["id"]), str(doc.get("name", "")), bool(doc.get("double_optin", False)),
                   int(stats.get("member_count", 0)), int(total) if isinstance(total, int) else None)


@dataclass(frozen=True)
class MergeField:
    tag: str
    name: str
    type: str
    required: bool  # a required field missing from a row makes Mailchimp refuse that member
    merge_id: int

    @classmethod
    def from_json(cls, doc: dict[str, Any]) -> "MergeField":
        return cls(str(doc["tag"]), str(doc.get("name", "")), str(doc.get("type", "")),
                   bool(doc.get("required", False)), int(doc.get("merge_id", 0)))


@dataclass(frozen=True)
class Tag:
    """A tag (static segment) and when it last changed: adding or removing its members does not move the members'
    `last_changed`, so a reader of changes asks the tags too."""

    id: int
    name: str
    updated_at: datetime | None  # None when Mailchimp gives no time: read as "may have changed"
    member_count: int  # Mailchimp's: "active subscribers currently included" (the local Mailchimp counts every member)

    @classmethod
    def from_json(cls, doc: dict[str, Any]) -> "Tag":
        updated = doc.get("updated_at")
        return cls(int(doc["id"]), str(doc["name"]), datetime.fromisoformat(updated) if updated else None,
                   int(doc.get("member_count") or 0))
