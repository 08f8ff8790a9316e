"""Status-safe upsert: an export creates and updates members but never changes an existing member's status.

Batch subscribe with `update_existing: true` overwrites status with the one sent, so existing members are sent
with the status Mailchimp holds for them right now, and new members are sent with `update_existing: false`.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Iterable, Iterator, Protocol, Sequence

from shared.emails import normalize_email
from shared.members import ExistingMember, Member, MemberResult, Outcome

from .batching import chunks
from .errors import MailchimpRequestError
from .merge_values import unchanged, values_to_send
from .redact import redact

NEW_STATUSES = ("subscribed", "pending", "unsubscribed", "transactional")
CLEANED = ("Mailchimp cleaned this address (it bounced or was reported); it is left untouched and not re-added")
CONTACT_EXISTS = "ERROR_CONTACT_EXISTS"


@dataclass
class BatchAnswer:
    """Batch-subscribe answer keyed by normalized address."""

    created: set[str] = field(default_factory=set)
    updated: set[str] = field(default_factory=set)
    errors: dict[str, dict[str, Any]] = field(default_factory=dict)


class MemberStore(Protocol):
    """The Mailchimp calls the algorithm needs (MailchimpClient provides them)."""

    def batch_subscribe(self, list_id: str, members: Sequence[dict[str, Any]], *,
                        update_existing: bool) -> BatchAnswer: ...

    def get_member(self, list_id: str, email: str) -> ExistingMember | None: ...

    def iter_members(self, list_id: str, *, fields: Sequence[str], status: str | None,
                     unsubscribed_since: datetime | None) -> Iterator[ExistingMember]: ...


def upsert(store: MemberStore, list_id: str, members: Sequence[Member], status_for_new: str,
           existing_as_of: datetime | None) -> list[MemberResult]:
    if status_for_new not in NEW_STATUSES:
        raise ValueError(f"status_for_new must be one of {', '.join(NEW_STATUSES)}, not {status_for_new!r}")
    firsts: dict[str, Member] = {}
    for member in members:
        firsts.setdefault(normalize_email(member.email), member)
    results: dict[str, MemberResult] = {}
    new = [(email, m) for email, m in firsts.items() if _absent(m.existing)]
    known = [(email, m, m.existing) for email, m in firsts.items() if not _absent(m.existing)]
    known += _create(store, list_id, new, status_for_new, results)
    _update(store, list_id, known, existing_as_of, results)
    return [results[normalize_email(m.email)] for m in members]


def _absent(existing: ExistingMember | None) -> bool:
    """Archived members are not in the audience any more: re-adding them is a create with the status for new."""
    return existing is None or existing.status == "archived"


def _create(store: MemberStore, list_id: str, new: list[tuple[str, Member]], status: str,
            results: dict[str, MemberResult]) -> list[tuple[str, Member, ExistingMember]]:
    """Step 1; returns the members that turned out to exist (added since the audience was read)."""
    appeared = []
    for chunk in chunks(new):
        answer = _write(store, list_id, [_payload(e, m, status) for e, m in chunk], False, chunk, results)
        if answer is None:
            continue
        for email, member in chunk:
            error = answer.errors.get(email)
            if email in answer.created:
                results[email] = MemberResult(email, Outcome.CREATED)
            elif error and error.get("error_code") == CONTACT_EXISTS:
                try:
                    current = store.get_member(list_id, email)
                except MailchimpRequestError as exc:
                    results[email] = MemberResult(email, Outcome.FAILED, str(exc))
                    continue
                if _absent(current):
                    results[email] = _refused(email, error)
                else:
                    appeared.append((email, member, current))
            else:
                results[email] = _refused(email, error) if error else _unmentioned(email)
    return appeared


def _update(store: MemberStore, list_id: str, known: list[tuple[str, Member, ExistingMember]],
            existing_as_of: datetime | None, results: dict[str, MemberResult]) -> None:
    """Step 2: skip what would not change, refresh statuses right before writing, write with the current status."""
    to_write = []
    for email, member, existing in known:
        if existing.status == "cleaned":
            results[email] = MemberResult(email, Outcome.REFUSED, CLEANED)
        elif unchanged(member.merge_fields, existing.merge_fields):
            results[email] = MemberResult(email, Outcome.UNCHANGED)
        else:
            to_write.append((email, member, existing))
    if not to_write:
        return
    wanted = {email for email, _, _ in to_write}
    try:
        unsubscribed = _unsubscribed_since(store, list_id, wanted, existing_as_of)
    except MailchimpRequestError as exc:
        for email, _, _ in to_write:
            results[email] = MemberResult(email, Outcome.FAILED, str(exc))
        return
    for chunk in chunks(to_write):
        payloads = [_payload(e, m, "unsubscribed" if e in unsubscribed else ex.status) for e, m, ex in chunk]
        answer = _write(store, list_id, payloads, True, chunk, results)
        if answer is None:
            continue
        for email, *_ in chunk:
            error = answer.errors.get(email)
            if email in answer.updated:
                results[email] = MemberResult(email, Outcome.UPDATED)
            elif email in answer.created:  # deleted between the read and the write, re-created with its old status
                results[email] = MemberResult(email, Outcome.CREATED)
            else:
                results[email] = _refused(email, error) if error else _unmentioned(email)


def _unsubscribed_since(store: MemberStore, list_id: str, wanted: set[str], since: datetime | None) -> set[str]:
    """Members at hand who unsubscribed after the audience was read (all unsubscribed ones when we don't know when)."""
    found = store.iter_members(list_id, fields=("email_address", "status"), status="unsubscribed",
                                  unsubscribed_since=since)
    return {m.email for m in found if m.email in wanted}


def _write(store: MemberStore, list_id: str, payloads: list[dict[str, Any]], update_existing: bool,
           chunk: Iterable[tuple], results: dict[str, MemberResult]) -> BatchAnswer | None:
    """One batch call; a batch Mailchimp refuses fails only its own members.

    MailchimpUnavailable (retries exhausted) and credential errors propagate: the caller retries the whole chunk
    later (the queue does), instead of writing members off during a passing outage.
    """
    try:
        return store.batch_subscribe(list_id, payloads, update_existing=update_existing)
    except MailchimpRequestError as exc:
        for email, *_ in chunk:
            results[email] = MemberResult(email, Outcome.FAILED, str(exc))
        return None


def _payload(email: str, member: Member, status: str) -> dict[str, Any]:
    doc: dict[str, Any] = {"email_address": email, "status": status}
    merge_fields = values_to_send(member.merge_fields)
    if merge_fields:
        doc["merge_fields"] = merge_fields
    return doc


def _refused(email: str, error: dict[str, Any]) -> MemberResult:
    reason = redact(str(error.get("error") or "Mailchimp refused this member"))
    detail = error.get("field_message")
    if detail:
        reason = f"{reason} ({redact(str(detail))})"
    return MemberResult(email, Outcome.REFUSED, reason, error.get("field") or None)


def _unmentioned(email: str) -> MemberResult:
    return MemberResult(email, Outcome.FAILED,
                        "Mailchimp's batch answer did not mention this member; run the export again")
