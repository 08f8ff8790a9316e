"""/3.0/lists/{list_id}/segments: tags (static segments) and their members."""
from __future__ import annotations

from typing import Any, Callable

from .audience import Audience, Member, Segment
from .call import Call
from .problems import invalid, invalid_fields, not_found
from .request_body import Problems, emails
from .shapes import member_json, segment_json

MAX_CHANGES = 500
NOT_MEMBERS = ("These addresses are not members of this audience (or are archived), so they were ignored: "
               "add them to the audience first")


def list_segments(call: Call, list_id: str) -> dict[str, Any]:
    """Only static segments exist here, so type=saved or type=fuzzy lists none."""
    audience = call.audience(list_id)
    count, offset = call.page()
    wanted_type = call.request.param("type")
    if wanted_type not in (None, "static", "saved", "fuzzy"):
        raise invalid("type", f"Send static, saved or fuzzy (got {wanted_type!r})")
    with audience.lock:
        segments = list(audience.segments.values()) if wanted_type in (None, "static") else []
        return {"segments": [segment_json(s, list_id) for s in segments[offset:offset + count]],
                "list_id": list_id, "total_items": len(segments)}


def create_segment(call: Call, list_id: str) -> dict[str, Any]:
    audience = call.audience(list_id)
    body = call.body()
    problems: Problems = []
    name = body.get("name")
    if not isinstance(name, str) or not name.strip():
        problems.append(("name", "Send the tag's name (a non-empty string)"))
    if "options" in body:
        problems.append(("options", "Saved (condition) segments are not supported locally; create a static "
                                    "segment (a tag) with static_segment instead"))
    addresses = emails(body, "static_segment", problems, None)
    if problems:
        raise invalid_fields(problems)
    with audience.lock:
        segment = audience.create_segment(name, call.now)
        for email in addresses:
            member = _member(audience, email)
            if member is not None:
                audience.tag(member, segment, call.now)
        call.written += len(addresses)
        return segment_json(segment, list_id)


def get_segment(call: Call, list_id: str, segment_id: str) -> dict[str, Any]:
    audience = call.audience(list_id)
    with audience.lock:
        return segment_json(_segment(audience, segment_id), list_id)


def change_members(call: Call, list_id: str, segment_id: str) -> dict[str, Any]:
    """Adding a member already tagged (or removing one not tagged) is reported as done: retries are harmless."""
    audience = call.audience(list_id)
    body = call.body()
    problems: Problems = []
    to_add = emails(body, "members_to_add", problems, MAX_CHANGES)
    to_remove = emails(body, "members_to_remove", problems, MAX_CHANGES)
    if problems:
        raise invalid_fields(problems)
    with audience.lock:
        segment = _segment(audience, segment_id)
        added, missed_add = _apply(audience, segment, to_add, audience.tag, call.now)
        removed, missed_remove = _apply(audience, segment, to_remove, audience.untag, call.now)
    call.written += len(to_add) + len(to_remove)
    errors = [{"email_addresses": missed, "error": NOT_MEMBERS} for missed in (missed_add, missed_remove) if missed]
    return {"members_added": added, "members_removed": removed, "errors": errors, "total_added": len(added),
            "total_removed": len(removed), "error_count": len(missed_add) + len(missed_remove)}


def segment_members(call: Call, list_id: str, segment_id: str) -> dict[str, Any]:
    """Like Mailchimp, unsubscribed, cleaned and transactional members only show when asked for."""
    audience = call.audience(list_id)
    count, offset = call.page()
    shown = {"subscribed", "pending"} | {s for s in ("unsubscribed", "cleaned", "transactional")
                                          if call.flag(f"include_{s}")}
    with audience.lock:
        segment = _segment(audience, segment_id)
        members = audience.view(("segment", segment.id, frozenset(shown)),
                                lambda: (m for m in segment.members.values() if m.status in shown))
        page = [member_json(m, audience) for m in members[offset:offset + count]]
    call.read += len(page)
    return {"members": page, "total_items": len(members)}


def _apply(audience: Audience, segment: Segment, addresses: list[str],
           change: Callable[[Member, Segment, float], bool], now: float) -> tuple[list[dict[str, Any]], list[str]]:
    done: dict[str, dict[str, Any]] = {}
    missed = []
    for email in addresses:
        member = _member(audience, email)
        if member is None:
            missed.append(email)
        elif member.id not in done:
            change(member, segment, now)
            done[member.id] = member_json(member, audience)
    return list(done.values()), missed


def _member(audience: Audience, email: str) -> Member | None:
    member = audience.find(email) if "@" in email else None
    return None if member is None or member.archived else member


def _segment(audience: Audience, segment_id: str) -> Segment:
    segment = audience.segment(segment_id)
    if segment is None:
        raise not_found("segment")
    return segment


ROUTES = [
    ("GET", "/lists/{list_id}/segments", list_segments),
    ("POST", "/lists/{list_id}/segments", create_segment),
    ("GET", "/lists/{list_id}/segments/{segment_id}", get_segment),
    ("POST", "/lists/{list_id}/segments/{segment_id}", change_members),
    ("GET", "/lists/{list_id}/segments/{segment_id}/members", segment_members),
]
