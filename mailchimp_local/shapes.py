"""Local state in Mailchimp's JSON shapes (checked against the OpenAPI description of API 3.0.55).

Fields this server does not model (stats, location, ...) carry Mailchimp's neutral values; `_links` are left out
(optional in every schema). Date-time fields are always real instants, never "", so they satisfy the schema.
"""
from __future__ import annotations

from typing import Any

from .accounts import Account
from .audience import Audience, Member, Segment
from .timestamps import iso

_STATS = {"avg_open_rate": 0, "avg_click_rate": 0}
_LOCATION = {"latitude": 0, "longitude": 0, "gmtoff": 0, "dstoff": 0, "country_code": "", "timezone": ""}
_INTERESTS: dict[str, bool] = {}


def member_json(member: Member, audience: Audience) -> dict[str, Any]:
    segments = audience.segments
    tags = [{"id": t, "name": segments[t].name} for t in member.tags]
    merge_fields = audience.merge_dict(member.merge)
    full_name = " ".join(str(merge_fields[k]) for k in ("FNAME", "LNAME") if merge_fields.get(k))
    return {
        "id": member.id, "email_address": member.email, "unique_email_id": member.id[-10:],
        "full_name": full_name, "email_type": "html", "status": member.shown_status,
        "merge_fields": merge_fields, "interests": _INTERESTS, "stats": _STATS,
        "ip_signup": "", "timestamp_signup": iso(member.created), "ip_opt": "", "timestamp_opt": iso(member.opted),
        "member_rating": 2, "last_changed": iso(member.changed), "language": "", "vip": False,
        "email_client": "", "location": _LOCATION, "tags_count": len(tags), "tags": tags, "list_id": audience.id,
    }


def member_tag_json(segment: Segment, member: Member) -> dict[str, Any]:
    """One entry of GET /lists/{id}/members/{hash}/tags."""
    return {"id": segment.id, "name": segment.name, "date_added": iso(segment.added[member.id])}


def audience_json(audience: Audience, base_url: str) -> dict[str, Any]:
    counts = audience.counts
    total = sum(counts.values()) - counts["archived"]
    return {
        "id": audience.id, "web_id": int(audience.id, 16) % 1_000_000, "name": audience.name,
        "contact": {"company": "Demo company", "address1": "1 Demo street", "address2": "", "city": "Atlanta",
                    "state": "GA", "zip": "30308", "country": "US", "phone": ""},
        "permission_reminder": "You signed up on our website.", "use_archive_bar": False,
        "campaign_defaults": {"from_name": "Demo", "from_email": "owner@demo.invalid", "subject": "",
                              "language": "en"},
        "notify_on_subscribe": "", "notify_on_unsubscribe": "", "date_created": iso(audience.created),
        "list_rating": 0, "email_type_option": False,
        "subscribe_url_short": f"{base_url}/subscribe/{audience.id}",
        "subscribe_url_long": f"{base_url}/subscribe?id={audience.id}",
        "beamer_address": f"{audience.id}@inbound.mailchimp.local", "visibility": "prv",
        "double_optin": audience.double_optin, "has_welcome": False, "marketing_permissions": False, "modules": [],
        "stats": {
            "member_count": counts["subscribed"], "total_contacts": total,
            "unsubscribe_count": counts["unsubscribed"], "cleaned_count": counts["cleaned"],
            "member_count_since_send": counts["subscribed"], "unsubscribe_count_since_send": counts["unsubscribed"],
            "cleaned_count_since_send": counts["cleaned"], "campaign_count": 0,
            "merge_field_count": len(audience.merge_fields), "avg_sub_rate": 0, "avg_unsub_rate": 0,
            "target_sub_rate": 0, "open_rate": 0, "click_rate": 0,
        },
    }


def segment_json(segment: Segment, audience_id: str) -> dict[str, Any]:
    return {"id": segment.id, "name": segment.name, "member_count": len(segment.members), "type": "static",
            "created_at": iso(segment.created), "updated_at": iso(segment.updated), "list_id": audience_id}


def account_json(account: Account, total_subscribers: int) -> dict[str, Any]:
    return {
        "account_id": account.id, "login_id": account.login_id, "account_name": account.name,
        "email": account.email, "first_name": "Demo", "last_name": "Owner", "username": account.username,
        "avatar_url": "", "role": "owner", "member_since": iso(account.created), "pricing_plan_type": "monthly",
        "account_timezone": "UTC", "account_industry": "Other", "pro_enabled": False,
        "contact": {"company": account.name, "addr1": "1 Demo street", "addr2": "", "city": "Atlanta",
                    "state": "GA", "zip": "30308", "country": "US"},
        "last_login": iso(account.created), "total_subscribers": total_subscribers,
    }
