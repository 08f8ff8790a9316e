"""POST /3.0/lists/{list_id}: batch subscribe, the bulk write (up to 500 members, per-member errors in a 200)."""
from __future__ import annotations

from typing import Any

from . import refusals
from .call import Call
from .problems import invalid, invalid_fields
from .request_body import Problems, boolean, member_write
from .shapes import member_json

MAX_MEMBERS = 500


def batch_subscribe(call: Call, list_id: str) -> dict[str, Any]:
    """update_existing=true sets the status sent, re-subscribing anyone an admin unsubscribed: Mailchimp's trap.

    `members[].tags` (tag names) and `sync_tags` are applied as Audience.write describes. The answer is Mailchimp's
    `Batch_update_List_members` (OpenAPI 3.0.55): `new_members` and `updated_members` are full member objects, their
    `tags` as they stand after the write (so a client can see which tags a member carries), and `errors[]` has one
    entry per member refused (`email_address`, `error`, `error_code`, `field`, `field_message`). Mailchimp documents
    no per-tag error in that answer, so none is invented here: a member refused gets none of its tags, a member
    written gets all of them."""
    audience = call.audience(list_id)
    body = call.body()
    members = body.get("members")
    if not isinstance(members, list):
        raise invalid("members", f"Send members: a list of up to {MAX_MEMBERS} member objects")
    if len(members) > MAX_MEMBERS:
        raise invalid("members", f"At most {MAX_MEMBERS} members per call; this one has {len(members)}: "
                                 f"split it into calls of {MAX_MEMBERS} or fewer")
    problems: Problems = []
    writes = [member_write(doc, f"members[{i}].", problems, ("email_address", "status"))
              for i, doc in enumerate(members)]
    update_existing = boolean(body, "update_existing", problems)
    sync_tags = boolean(body, "sync_tags", problems)
    if problems:
        raise invalid_fields(problems)
    skip_required = call.flag("skip_merge_validation")
    keep_first_only = call.flag("skip_duplicate_check")
    new, updated, errors = [], [], []
    seen: set[str] = set()
    with audience.lock:
        for sent in writes:
            key = sent.email.strip().lower()
            if key in seen:
                if not keep_first_only:
                    errors.append(refusals.duplicate(sent.email.strip()).batch_error(sent.email))
                continue
            seen.add(key)
            try:
                created, member = audience.write(sent, call.now, update_existing=update_existing,
                                                 skip_required=skip_required, sync_tags=sync_tags)
            except refusals.Refused as refusal:
                errors.append(refusal.batch_error(sent.email))
                continue
            (new if created else updated).append(member_json(member, audience))
    call.written += len(writes)
    return {"new_members": new, "updated_members": updated, "errors": errors, "total_created": len(new),
            "total_updated": len(updated), "error_count": len(errors)}


ROUTES = [("POST", "/lists/{list_id}", batch_subscribe)]
