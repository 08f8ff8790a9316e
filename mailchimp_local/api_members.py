"""/3.0/lists/{list_id}/members: paging with filters, and single-member reads and writes."""
from __future__ import annotations

from typing import Any, Callable, Iterator

from . import refusals
from .audience import ARCHIVED, STATUSES, Audience, Member, MemberWrite, subscriber_id
from .call import Call
from .problems import invalid, invalid_fields, method_not_allowed, not_found
from .request_body import Problems, member_write
from .shapes import member_json, member_tag_json
from .web import Response

NO_CONTENT = 204
# Mailchimp's words (grouparoo's recorded Mailchimp fixtures), answered with 405 Method Not Allowed.
CANNOT_ARCHIVE = ("This list member cannot be removed. "
                  "Can not archive a contact that is bounced, pending or archived")
NOT_ARCHIVABLE = ("pending", "cleaned")  # "bounced" is Mailchimp's word for cleaned here


def list_members(call: Call, list_id: str) -> dict[str, Any]:
    """Stable order (creation); filters: status, since_last_changed, unsubscribed_since.

    Archived members are listed only with status=archived (the stricter reading: unconfirmed for Mailchimp)."""
    audience = call.audience(list_id)
    count, offset = call.page()
    status = call.request.param("status")
    if status is not None and status not in (*STATUSES, ARCHIVED):
        raise invalid("status", f"Send one of {', '.join((*STATUSES, ARCHIVED))} (got {status!r})")
    changed_since = call.instant("since_last_changed")
    unsubscribed_since = call.instant("unsubscribed_since")
    if unsubscribed_since is not None:
        if status not in (None, "unsubscribed"):
            raise invalid("status", "unsubscribed_since only works with status=unsubscribed (or no status)")
        status = "unsubscribed"
    key = (status, changed_since, unsubscribed_since)

    def matching() -> Iterator[Member]:
        # A time filter reads only the members changed last (Audience.changed_since), then checks them as the others.
        times = [t for t in (changed_since, unsubscribed_since) if t is not None]
        for member in audience.changed_since(max(times)) if times else audience.members.values():
            if ((changed_since is None or member.changed >= changed_since)
                    and (unsubscribed_since is None or (member.unsubscribed_at or 0.0) >= unsubscribed_since)
                    and (member.shown_status == status if status is not None else not member.archived)):
                yield member

    with audience.lock:
        everyone = key == (None, None, None) and not audience.counts[ARCHIVED]  # no filter to run: a plain copy
        members = audience.view(key, audience.members.values if everyone else matching)
        page = [member_json(m, audience) for m in members[offset:offset + count]]
    call.read += len(page)
    return {"members": page, "list_id": list_id, "total_items": len(members)}


def get_member(call: Call, list_id: str, subscriber_hash: str) -> dict[str, Any]:
    return _with_member(call, list_id, subscriber_hash, lambda audience, member: None)


def put_member(call: Call, list_id: str, subscriber_hash: str) -> dict[str, Any]:
    """Upsert: status_if_new applies to new (or archived) members only; status overwrites, compliance permitting."""
    audience = call.audience(list_id)
    sent = _member_body(call, ("email_address", "status_if_new"))
    if subscriber_hash.lower() not in (subscriber_id(sent.email), sent.email.strip().lower()):
        raise invalid("email_address", "The path's subscriber hash is not the MD5 of this lower-cased "
                                       "email_address: send the address the path names")
    with audience.lock:
        return member_json(_write(call, audience, sent), audience)


def patch_member(call: Call, list_id: str, subscriber_hash: str) -> dict[str, Any]:
    sent = _member_body(call, ())

    def update(audience: Audience, member: Member) -> None:
        if sent.email and subscriber_id(sent.email) != member.id:
            raise invalid("email_address", "Changing a member's address is not supported locally: "
                                           "archive this member and add the new address")
        sent.email = member.email
        _write(call, audience, sent)

    return _with_member(call, list_id, subscriber_hash, update)


def archive_member(call: Call, list_id: str, subscriber_hash: str) -> Response:
    """Pending, cleaned and already archived contacts cannot be archived (405); unknown ones are 404."""
    audience = call.audience(list_id)
    with audience.lock:
        member = audience.find(subscriber_hash)
        if member is None:
            raise not_found("list member")
        if member.archived or member.status in NOT_ARCHIVABLE:
            raise method_not_allowed(CANNOT_ARCHIVE)
        audience.archive(member, call.now)
    return Response(NO_CONTENT)


def delete_permanently(call: Call, list_id: str, subscriber_hash: str) -> Response:
    audience = call.audience(list_id)
    with audience.lock:
        member = audience.find(subscriber_hash)
        if member is None:
            raise not_found("list member")
        audience.forget(member, call.now)
    return Response(NO_CONTENT)


def list_member_tags(call: Call, list_id: str, subscriber_hash: str) -> dict[str, Any]:
    """The member's tags in the order they were added, paged by count/offset; `total_items` counts them all."""
    audience = call.audience(list_id)
    count, offset = call.page()
    with audience.lock:
        member = audience.find(subscriber_hash)
        if member is None:
            raise not_found("list member")
        tags = [member_tag_json(audience.segments[t], member) for t in member.tags[offset:offset + count]]
        return {"tags": tags, "total_items": len(member.tags)}


def member_tags(call: Call, list_id: str, subscriber_hash: str) -> Response:
    """Tags by name, ignoring case: active ones are created when missing, inactive ones removed."""
    body = call.body()
    tags = body.get("tags")
    if not isinstance(tags, list) or not all(isinstance(t, dict) and isinstance(t.get("name"), str) and t["name"]
                                             and t.get("status") in ("active", "inactive") for t in tags):
        raise invalid("tags", 'Send tags as a list of {"name": "...", "status": "active" or "inactive"}')

    def retag(audience: Audience, member: Member) -> None:
        call.written += 1
        audience.retag(member, [t["name"] for t in tags if t["status"] == "active"], call.now)
        audience.retag(member, [t["name"] for t in tags if t["status"] == "inactive"], call.now, active=False)

    _with_member(call, list_id, subscriber_hash, retag)
    return Response(NO_CONTENT)


def _with_member(call: Call, list_id: str, subscriber_hash: str,
                 change: Callable[[Audience, Member], None]) -> dict[str, Any]:
    """Find the member (404 when unknown), apply `change` under the audience lock, answer the member."""
    audience = call.audience(list_id)
    with audience.lock:
        member = audience.find(subscriber_hash)
        if member is None:
            raise not_found("list member")
        change(audience, member)
        return member_json(member, audience)


def _member_body(call: Call, required: tuple[str, ...]) -> MemberWrite:
    problems: Problems = []
    sent = member_write(call.body(), "", problems, required)
    if problems:
        raise invalid_fields(problems)
    return sent


def _write(call: Call, audience: Audience, sent: MemberWrite) -> Member:
    try:
        _, member = audience.write(sent, call.now, skip_required=call.flag("skip_merge_validation"))
    except refusals.Refused as refusal:
        raise refusal.problem() from None
    call.written += 1
    return member


ROUTES = [
    ("GET", "/lists/{list_id}/members", list_members),
    ("GET", "/lists/{list_id}/members/{subscriber_hash}", get_member),
    ("PUT", "/lists/{list_id}/members/{subscriber_hash}", put_member),
    ("PATCH", "/lists/{list_id}/members/{subscriber_hash}", patch_member),
    ("DELETE", "/lists/{list_id}/members/{subscriber_hash}", archive_member),
    ("POST", "/lists/{list_id}/members/{subscriber_hash}/actions/delete-permanent", delete_permanently),
    ("GET", "/lists/{list_id}/members/{subscriber_hash}/tags", list_member_tags),
    ("POST", "/lists/{list_id}/members/{subscriber_hash}/tags", member_tags),
]
