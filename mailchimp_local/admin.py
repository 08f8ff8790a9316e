"""/__admin: set the local Mailchimp up and look inside it (no auth, never faulted, not counted in stats)."""
from __future__ import annotations

import time
from typing import Any, Protocol

from .audience import Audience, require_status, subscriber_id
from .faults import FaultPlan
from .latency import Latency
from .problems import invalid, invalid_fields, not_found
from .refusals import Refused
from .request_body import Problems, boolean, instant
from .shapes import member_json
from .timestamps import iso
from .web import Request, Router
from .world import World, new_api_key


class Server(Protocol):
    world: World

    def reset(self) -> None: ...


def stats(server: Server, request: Request) -> dict[str, Any]:
    world = server.world
    with world.lock:
        doc = world.stats.to_json()
        doc["in_flight"] = sum(a.in_flight for a in world.accounts.values())
    doc.update(connection_cap=world.connection_cap, latency_profile=world.latency.profile,
               latency=world.latency.to_json(), faults=world.faults.to_json(), oauth_deny=world.oauth_deny,
               members=sum(len(a.members) for a in world.audiences.values()))
    return doc


def reset_stats(server: Server, request: Request) -> dict[str, Any]:
    server.world.reset_stats()
    return {"reset": "stats"}


def reset(server: Server, request: Request) -> dict[str, Any]:
    server.reset()
    return {"reset": True}


def create_account(server: Server, request: Request) -> dict[str, Any]:
    name = request.json_object().get("name") or "Local account"
    api_key = new_api_key()
    account = server.world.add_account(str(name), api_key)
    return {"account_id": account.id, "api_key": api_key}


def create_audience(server: Server, request: Request) -> dict[str, Any]:
    body = request.json_object()
    account = server.world.credentials.get(str(body.get("api_key", "")))
    if account is None:
        raise invalid("api_key", "Send the api_key of an account (the demo key or one from POST /__admin/accounts)")
    problems: Problems = []
    double_optin = boolean(body, "double_optin", problems)
    if problems:
        raise invalid_fields(problems)
    audience = server.world.new_audience(account, str(body.get("name") or "Local audience"), double_optin)
    return {"id": audience.id}


def set_faults(server: Server, request: Request) -> dict[str, Any]:
    """The whole plan is replaced; `{}` turns faults off."""
    try:
        server.world.faults = FaultPlan.from_json(request.json_object(), server.world.settings.seed)
    except ValueError as exc:
        raise invalid("faults", str(exc)) from None
    return server.world.faults.to_json()


def set_latency(server: Server, request: Request) -> dict[str, Any]:
    try:
        server.world.latency = Latency.from_json(request.json_object())
    except ValueError as exc:
        raise invalid("latency", str(exc)) from None
    return server.world.latency.to_json()


def set_connection_cap(server: Server, request: Request) -> dict[str, Any]:
    cap = request.json_object().get("cap")
    if not isinstance(cap, int) or isinstance(cap, bool) or cap < 1:
        raise invalid("cap", "Send cap: a whole number >= 1")
    server.world.connection_cap = cap
    return {"connection_cap": cap}


def put_member(server: Server, request: Request) -> dict[str, Any]:
    """Any state, bypassing Mailchimp's write rules: self-unsubscribed, cleaned, archived, permanently deleted."""
    body = request.json_object()
    audience = _audience(server.world, body.get("list_id"))
    email = body.get("email")
    if not isinstance(email, str) or "@" not in email:
        raise invalid("email", "Send the member's email address")
    problems: Problems = []
    forgotten = boolean(body, "permanently_deleted", problems)
    archived = boolean(body, "archived", problems)
    if problems:
        raise invalid_fields(problems)
    now = time.time()
    with audience.lock:
        if forgotten:
            member = audience.find(email)
            if member is not None:
                audience.forget(member, now)
            else:
                audience.forgotten.add(subscriber_id(email))
            return {"id": subscriber_id(email)}
        status = require_status(body.get("status", "subscribed"), "status")
        unsubscribed_by = require_status(body.get("unsubscribed_by", "self"), "unsubscribed_by", ("admin", "self"))
        merge_fields = body.get("merge_fields")
        if merge_fields is not None and not isinstance(merge_fields, dict):
            raise invalid("merge_fields", "Send merge_fields as an object keyed by merge tag")
        tags = _names(body.get("tags"))
        times = {slot: instant(str(body[key]), key) for key, slot in (("last_changed", "changed"),
                                                                      ("unsubscribed_at", "unsubscribed_at"))
                 if body.get(key)}
        try:
            member = audience.put_state(email, status, now, unsubscribed_by=unsubscribed_by, archived=archived,
                                        merge_fields=merge_fields)
        except Refused as refusal:
            raise invalid(f"merge_fields.{refusal.field}", refusal.field_message) from None
        audience.retag(member, tags, now)
        if times:
            audience.set_times(member, times.get("changed", member.changed),
                               times.get("unsubscribed_at", member.unsubscribed_at))
        return {"id": member.id}


def dump_members(server: Server, request: Request, list_id: str) -> dict[str, Any]:
    """Every member (archived ones too) with who unsubscribed them, and the hashes of permanently deleted ones."""
    audience = _audience(server.world, list_id)
    with audience.lock:
        members = [{**member_json(m, audience), "unsubscribed_by": m.unsubscribed_by,
                    "unsubscribed_at": iso(m.unsubscribed_at) if m.unsubscribed_at else None}
                   for m in audience.members.values()]
        return {"members": members, "total_items": len(members), "permanently_deleted": sorted(audience.forgotten)}


def revoke(server: Server, request: Request) -> dict[str, Any]:
    body = request.json_object()
    secret = body.get("api_key") or body.get("token")
    if server.world.credentials.pop(str(secret), None) is None:
        raise not_found("api_key or token")
    return {"revoked": True}


def set_oauth(server: Server, request: Request) -> dict[str, Any]:
    problems: Problems = []
    server.world.oauth_deny = boolean(request.json_object(), "deny", problems)
    if problems:
        raise invalid_fields(problems)
    return {"deny": server.world.oauth_deny}


def age_members(server: Server, request: Request, list_id: str) -> dict[str, Any]:
    """Move every member's times (created, opted in, last changed, unsubscribed) and every tag's (created, updated,
    when it was added to each member) `seconds` into the past, as if that much time had gone by since they were
    written: how a benchmark runs a scheduled refresh "the next day" without waiting for it."""
    seconds = request.json_object().get("seconds")
    if not isinstance(seconds, (int, float)) or isinstance(seconds, bool) or seconds <= 0:
        raise invalid("seconds", "Send seconds as a positive number: how far back every member's times move")
    audience = _audience(server.world, list_id)
    with audience.lock:
        audience.move_back(seconds)
        return {"members": len(audience.members)}


def _audience(world: World, list_id: Any) -> Audience:
    audience = world.audiences.get(str(list_id))
    if audience is None:
        raise not_found("audience")
    return audience


def _names(tags: Any) -> list[str]:
    if tags is None:
        return []
    if not isinstance(tags, list) or not all(isinstance(t, str) and t for t in tags):
        raise invalid("tags", "Send tags as a list of tag names")
    return tags


ROUTER = Router([
    ("GET", "/__admin/stats", stats),
    ("POST", "/__admin/stats/reset", reset_stats),
    ("POST", "/__admin/reset", reset),
    ("POST", "/__admin/accounts", create_account),
    ("POST", "/__admin/audiences", create_audience),
    ("POST", "/__admin/faults", set_faults),
    ("POST", "/__admin/latency", set_latency),
    ("POST", "/__admin/connection-cap", set_connection_cap),
    ("POST", "/__admin/members", put_member),
    ("GET", "/__admin/lists/{list_id}/members", dump_members),
    ("POST", "/__admin/lists/{list_id}/age", age_members),
    ("POST", "/__admin/revoke", revoke),
    ("POST", "/__admin/oauth", set_oauth),
])
