"""Status-safe upsert: an export creates and updates members but never changes an existing member's status.

Batch subscribe with `update_existing: true` overwrites status with the one sent, so existing members are sent
with the status Mailchimp holds for them right now, and new members are sent with `update_existing: false`.
Archived members are never written: Mailchimp cannot tell whether they had unsubscribed (see README.md).

Tags ride along: with `tags_of`, each member written carries those tag names in its batch-subscribe payload
(`members[].tags`: Mailchimp applies them to new members, and since 2022 to existing ones sent with
`update_existing: true`; never `sync_tags`, so tags not named stay). A member counts as tagged by the write
(`MemberResult.tagged`) only when Mailchimp's answer shows every tag sent on it (`new_members[].tags` /
`updated_members[].tags`): Mailchimp's batch `errors[]` documents no per-tag error, so a tag it silently left off
is caught by comparing, and the caller adds it through the static-segment call instead.
"""
from __future__ import annotations

import contextvars
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Any, Callable, Iterable, Iterator, Protocol, Sequence

from shared.emails import normalize_email
from shared.members import ExistingMember, Member, MemberResult, Outcome

from .batching import chunks
from .errors import MailchimpAuthError, MailchimpRequestError, WritesStopped
from .joined_listings import JoinedListings
from .merge_values import unchanged, values_to_send
from .redact import redact

NEW_STATUSES = ("subscribed", "pending", "unsubscribed", "transactional")
CLEANED = ("Mailchimp cleaned this address (it bounced or was reported); it is left untouched and not re-added")
ARCHIVED = ("archived in Mailchimp, so it is left archived: Mailchimp does not tell whether an archived contact had "
            "unsubscribed, and writing it would bring it back with the status sent. If this person should be in the "
            "audience again, unarchive them in Mailchimp (Audience > All contacts > the contact > Unarchive), then export again")
CONTACT_EXISTS = "ERROR_CONTACT_EXISTS"
ALL_STATUSES = ("subscribed", "unsubscribed", "cleaned", "pending", "transactional", "archived")
SINGLE_READS = 10  # "already a member" answers re-read one by one up to this many; more are re-read by listing
STATUS_READS = 50  # members read with a status other than subscribed, re-read one by one before a write
CLOCK_MARGIN = timedelta(seconds=5)  # our clock against Mailchimp's, for "changed since" listings


@dataclass
class BatchAnswer:
    """Batch-subscribe answer keyed by normalized address."""

    created: set[str] = field(default_factory=set)
    updated: set[str] = field(default_factory=set)
    errors: dict[str, dict[str, Any]] = field(default_factory=dict)
    # tag names (casefolded) each created or updated member carries in the answer; a member missing here is not
    # known to carry any tag
    tags: dict[str, set[str]] = field(default_factory=dict)


class MemberStore(Protocol):
    """The Mailchimp calls the algorithm needs (MailchimpClient provides them)."""

    def batch_subscribe(self, list_id: str, members: Sequence[dict[str, Any]], *,
                        update_existing: bool) -> BatchAnswer: ...

    def get_member(self, list_id: str, email: str) -> ExistingMember | None: ...

    def iter_members(self, list_id: str, *, fields: Sequence[str], status: str | None = None,
                     since_last_changed: datetime | None = None,
                     unsubscribed_since: datetime | None = None) -> Iterator[ExistingMember]: ...


TagsOf = Callable[[Member], Sequence[str]]


def no_tags(member: Member) -> Sequence[str]:
    return ()


def upsert(store: MemberStore, list_id: str, members: Sequence[Member], status_for_new: str,
           existing_as_of: datetime | None, tags_of: TagsOf = no_tags,
           joined: JoinedListings | None = None) -> list[MemberResult]:
    """`tags_of(member)`: the tag names to send with a member that is written (see the module's docstring).
    `joined`: the status listings other upserts through the same store are about to make, to join (joined_listings.py)."""
    if status_for_new not in NEW_STATUSES:
        raise ValueError(f"status_for_new must be one of {', '.join(NEW_STATUSES)}, not {status_for_new!r}")
    keys = [normalize_email(m.email) for m in members]
    firsts: dict[str, Member] = {}
    for key, member in zip(keys, members):
        firsts.setdefault(key, member)
    results: dict[str, MemberResult] = {}
    new = [(email, m) for email, m in firsts.items() if m.existing is None]
    known = [(email, m, m.existing) for email, m in firsts.items() if m.existing is not None]
    try:
        known += _create(store, list_id, new, status_for_new, existing_as_of, results, tags_of)
        _update(store, list_id, known, existing_as_of, results, tags_of, joined)
    except MailchimpAuthError as error:  # what was written before the credentials were refused still counts
        error.results = [results.get(key) or MemberResult(m.email, Outcome.FAILED, str(error))
                         for key, m in zip(keys, members)]
        raise
    return [results[key] for key in keys]


def _create(store: MemberStore, list_id: str, new: list[tuple[str, Member]], status: str,
            existing_as_of: datetime | None, results: dict[str, MemberResult],
            tags_of: TagsOf) -> list[tuple[str, Member, ExistingMember]]:
    """Step 1; returns the members that turned out to exist (added since the audience was read)."""
    appeared = []
    for chunk in chunks(new):
        # Our own earlier attempt may have created them, in this call (a retry) or in an earlier delivery of the
        # chunk: either way after the audience was read.
        sent_at = (existing_as_of or datetime.now(timezone.utc)) - CLOCK_MARGIN
        tags = [tags_of(m) for _, m in chunk]
        answer = _write(store, list_id, [_payload(e, m, status, t) for (e, m), t in zip(chunk, tags)], False, chunk,
                        results)
        if answer is None:
            continue
        exists = []
        for (email, member), sent in zip(chunk, tags):
            error = answer.errors.get(email)
            if email in answer.created:
                results[email] = MemberResult(email, Outcome.CREATED, tagged=_carries(answer.tags.get(email), sent))
            elif error and error.get("error_code") == CONTACT_EXISTS:
                exists.append((email, member))
            else:
                results[email] = _refused(email, error) if error else _unmentioned(email)
        if exists:
            appeared += _existing_after_create(store, list_id, exists, status, sent_at, results, tags_of)
    return appeared


def _existing_after_create(store: MemberStore, list_id: str, exists: list[tuple[str, Member]], status: str,
                           sent_at: datetime, results: dict[str, MemberResult],
                           tags_of: TagsOf) -> list[tuple[str, Member, ExistingMember]]:
    """Members a create found already there. Usually our own earlier attempt was applied although its answer was
    lost (a timeout, then a retry): such a member holds exactly what we sent and counts as created, and as tagged
    when the re-read shows it carrying every tag sent (else the caller adds them: adding a tag twice changes
    nothing). Anyone else is handled as an existing member; an archived one is left archived."""
    try:
        current = _reread(store, list_id, {email for email, _ in exists}, sent_at)
    except MailchimpRequestError as exc:
        for email, _ in exists:
            results[email] = MemberResult(email, Outcome.FAILED, str(exc))
        return []
    appeared = []
    for email, member in exists:
        now = current.get(email)
        if now is None:  # gone again (deleted or permanently deleted) meanwhile: nothing to write to
            results[email] = MemberResult(email, Outcome.FAILED, "Mailchimp said this member exists but it could not be "
                                                                 "read back; run the export again")
        elif now.status == "archived":
            results[email] = MemberResult(email, Outcome.REFUSED, ARCHIVED)
        elif now.status == status and unchanged(member.merge_fields, now.merge_fields):
            results[email] = MemberResult(email, Outcome.CREATED,
                                          tagged=_carries({t.casefold() for t in now.tags}, tags_of(member)))
        else:
            appeared.append((email, member, now))
    return appeared


def _reread(store: MemberStore, list_id: str, wanted: set[str], since: datetime) -> dict[str, ExistingMember]:
    """The wanted members as Mailchimp holds them now: one listing of what changed since `since` (stopping once all
    are found) instead of one call per member; the few not listed (archived ones are not) are read one by one."""
    found: dict[str, ExistingMember] = {}
    if len(wanted) > SINGLE_READS:
        for m in store.iter_members(list_id, fields=("email_address", "status", "merge_fields", "tags"), status=None,
                                    since_last_changed=since):
            if m.email in wanted:
                found[m.email] = m
                if len(found) == len(wanted):
                    break
    for email in sorted(wanted - found.keys()):
        member = store.get_member(list_id, email)
        if member is not None:
            found[email] = member
    return found


def _update(store: MemberStore, list_id: str, known: list[tuple[str, Member, ExistingMember]],
            existing_as_of: datetime | None, results: dict[str, MemberResult], tags_of: TagsOf,
            joined: JoinedListings | None) -> None:
    """Step 2: skip what would not change, refresh statuses right before writing, write with the current status."""
    to_write = []
    for email, member, existing in known:
        if existing.status == "cleaned":
            results[email] = MemberResult(email, Outcome.REFUSED, CLEANED)
        elif existing.status == "archived":
            results[email] = MemberResult(email, Outcome.REFUSED, ARCHIVED)
        elif unchanged(member.merge_fields, existing.merge_fields):
            results[email] = MemberResult(email, Outcome.UNCHANGED)
        else:
            to_write.append((email, member, existing))
    if not to_write:
        return
    try:
        current = _statuses_now(store, list_id, {email: ex.status for email, _, ex in to_write}, existing_as_of, joined)
    except MailchimpRequestError as exc:
        for email, _, _ in to_write:
            results[email] = MemberResult(email, Outcome.FAILED, str(exc))
        return
    writable = []
    for email, member, existing in to_write:
        status = current.get(email, existing.status)
        if status == "cleaned":
            results[email] = MemberResult(email, Outcome.REFUSED, CLEANED)
        elif status == "archived":
            results[email] = MemberResult(email, Outcome.REFUSED, ARCHIVED)
        else:
            writable.append((email, member, status))
    for chunk in chunks(writable):
        tags = [tags_of(m) for _, m, _ in chunk]
        answer = _write(store, list_id, [_payload(e, m, status, t) for (e, m, status), t in zip(chunk, tags)], True,
                        chunk, results)
        if answer is None:
            continue
        for (email, _, _), sent in zip(chunk, tags):
            error = answer.errors.get(email)
            tagged = _carries(answer.tags.get(email), sent)
            if email in answer.updated:
                results[email] = MemberResult(email, Outcome.UPDATED, tagged=tagged)
            elif email in answer.created:  # deleted between the read and the write, re-created with its old status
                results[email] = MemberResult(email, Outcome.CREATED, tagged=tagged)
            else:
                results[email] = _refused(email, error) if error else _unmentioned(email)


def _statuses_now(store: MemberStore, list_id: str, read: dict[str, str], since: datetime | None,
                  joined: JoinedListings | None = None) -> dict[str, str]:
    """Current statuses of the members at hand whose status moved since the audience was read.

    A write carries a status, so one read earlier would undo whatever happened during the run: an unsubscribe, a
    bounce (cleaned), an archiving, a confirmation or a re-subscription. Members read as subscribed (most of an
    audience) are checked with three listings that stay short however much the run writes: unsubscribed since the
    read (by unsubscribe time, which an export never moves), cleaned and archived changed since the read (an export
    never writes either); the first two run at once, archived after them, all ended before the write
    (`_listed_moves`). Moving a
    subscribed contact to pending or transactional takes an API call and is not watched. Members read with another
    status are read one by one (STATUS_READS at most per call); beyond that, with listings of every status changed
    since the read, which grow with what the run itself writes.
    """
    since = since - CLOCK_MARGIN if since is not None else None
    moved: dict[str, str] = {}
    if "subscribed" in read.values():
        subscribed = {email: status for email, status in read.items() if status == "subscribed"}
        moved.update(_listed_moves(store, list_id, subscribed, [("unsubscribed", {"unsubscribed_since": since}),
                                                               ("cleaned", {"since_last_changed": since}),
                                                               ("archived", {"since_last_changed": since})], joined))
    others = {email: status for email, status in read.items() if status != "subscribed"}
    if len(others) <= STATUS_READS:
        for email, status in sorted(others.items()):
            member = store.get_member(list_id, email)
            if member is not None and member.status != status:
                moved[email] = member.status
    else:
        # not shared (`joined`): these listings grow with what the run writes, and a shared one is held whole
        moved.update(_listed_moves(store, list_id, others, [(s, {"since_last_changed": since}) for s in ALL_STATUSES]))
    return moved


def _listed_moves(store: MemberStore, list_id: str, read: dict[str, str],
                  listings: list[tuple[str, dict[str, datetime | None]]],
                  joined: JoinedListings | None = None) -> dict[str, str]:
    """The members of `read` each listing shows with another status than the one read.

    The listings are independent GETs, so those of statuses other than archived run at once (each on its own
    connection, within the connection cap), and the archived one after they have all ended: an admin can archive a
    contact in any status, so a contact archived while the others were listed (after one had seen it unsubscribed, or
    before one would have) is seen by that last listing, as when they ran one after the other. A chunk waits for about
    two listings' latency before its write instead of three. Every listing has ended before this returns, so none
    overlaps the write; results are merged in listing order (a member listed twice gets the later listing's status)
    and the first error in that order is raised. With `joined`, a listing another upsert is about to make of the
    same audience, status and time is joined (joined_listings.py): it too begins after this one asked.
    """
    def statuses(status: str, window: dict[str, datetime | None]) -> Iterator[tuple[str, str]]:
        return ((m.email, m.status)
                for m in store.iter_members(list_id, fields=("email_address", "status"), status=status, **window))

    def moves(status: str, window: dict[str, datetime | None]) -> list[tuple[str, str]]:
        listed = (statuses(status, window) if joined is None else  # a listing of its own is read page by page
                  joined.take((list_id, status, tuple(sorted(window.items()))), lambda: list(statuses(status, window))))
        return [(email, now) for email, now in listed if email in read and read[email] != now]

    first = [listing for listing in listings if listing[0] != "archived"]
    last = [listing for listing in listings if listing[0] == "archived"]
    found = []
    for together in (first, last):
        if len(together) == 1:
            found.append(moves(*together[0]))
        elif together:
            # each task in a copy of this context: the run's telemetry fields (and the write guard) follow the
            # listing's first page (later pages are read by the client's own pool)
            with ThreadPoolExecutor(max_workers=len(together), thread_name_prefix="mailchimp-status") as pool:
                pending = [pool.submit(contextvars.copy_context().run, moves, status, window)
                           for status, window in together]
            found += [future.result() for future in pending]  # the pool's exit waited for every listing
    moved: dict[str, str] = {}
    for listed in found:
        moved.update(listed)
    return moved


def _write(store: MemberStore, list_id: str, payloads: list[dict[str, Any]], update_existing: bool,
           chunk: Iterable[tuple], results: dict[str, MemberResult]) -> BatchAnswer | None:
    """One batch call; a batch Mailchimp refuses (or the caller's write guard stops) fails only its own members.

    MailchimpUnavailable (retries exhausted) and credential errors propagate: the caller retries the whole chunk
    later (the queue does), instead of writing members off during a passing outage.
    """
    try:
        return store.batch_subscribe(list_id, payloads, update_existing=update_existing)
    except (MailchimpRequestError, WritesStopped) as exc:
        for email, *_ in chunk:
            results[email] = MemberResult(email, Outcome.FAILED, str(exc))
        return None


def _payload(email: str, member: Member, status: str, tags: Sequence[str] = ()) -> dict[str, Any]:
    doc: dict[str, Any] = {"email_address": email, "status": status}
    merge_fields = values_to_send(member.merge_fields)
    if merge_fields:
        doc["merge_fields"] = merge_fields
    if tags:
        doc["tags"] = list(tags)  # names; Mailchimp matches them ignoring case and creates a missing one
    return doc


def _carries(shown: set[str] | None, sent: Sequence[str]) -> bool:
    """Whether the member, as Mailchimp's answer (or a re-read) shows it, carries every tag sent (ignoring case);
    False when no tag was sent: then nothing was tagged by the write."""
    return bool(sent) and shown is not None and all(t.casefold() in shown for t in sent)


def _refused(email: str, error: dict[str, Any]) -> MemberResult:
    reason = redact(str(error.get("error") or "Mailchimp refused this member"))
    detail = error.get("field_message")
    if detail:
        reason = f"{reason} ({redact(str(detail))})"
    return MemberResult(email, Outcome.REFUSED, reason, error.get("field") or None)


def _unmentioned(email: str) -> MemberResult:
    return MemberResult(email, Outcome.FAILED,
                        "Mailchimp's batch answer did not mention this member; run the export again")
