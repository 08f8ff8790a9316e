"""An audience (list): its members, merge fields and tags, and Mailchimp's rules for changing them.

One lock per audience guards everything in it; callers hold `audience.lock` around any use. Members are slotted
records keyed by subscriber hash (dict order = creation order, which is the stable paging order), merge values a
tuple aligned with the merge fields, tags a tuple of segment ids: a million members stay small.

A listing filtered by time (since_last_changed, unsubscribed_since) reads only the members changed last
(`changed_since`): looking at every member under the lock took about 75 ms a million, time Mailchimp's modelled
latency already stands for and that held up every other call to the audience.

Tag names are case-insensitive, as in Mailchimp ("VIP" and "vip" are one tag, which keeps the spelling it was
created with): `segments_by_name` is keyed by the casefolded name, so a lookup stays O(1).
"""
from __future__ import annotations

import hashlib
import itertools
import threading
from dataclasses import dataclass
from typing import Any, Callable, Iterator, Sequence

from . import refusals
from .addresses import looks_fake
from .merge_fields import MergeField, MergeValueError
from .problems import invalid

STATUSES = ("subscribed", "unsubscribed", "cleaned", "pending", "transactional")
ARCHIVED = "archived"


class Member:
    __slots__ = ("id", "email", "status", "archived", "unsubscribed_by", "merge", "tags",
                 "created", "opted", "changed", "unsubscribed_at", "seq")

    def __init__(self, member_id: str, email: str, now: float) -> None:
        self.id = member_id
        self.email = email  # as first written (trimmed); identity is the hash of its lower-cased form
        self.status: str | None = None
        self.archived = False
        self.unsubscribed_by: str | None = None  # "admin" or "self": only "self" is a compliance state
        self.merge: tuple[Any, ...] = ()
        self.tags: tuple[int, ...] = ()
        self.created = self.opted = self.changed = now
        self.unsubscribed_at: float | None = None
        self.seq = 0  # place in creation order (the audience's `members` order), given when it joins the audience

    @property
    def shown_status(self) -> str:
        return ARCHIVED if self.archived else self.status  # type: ignore[return-value]

    def in_compliance_state(self) -> bool:
        """Statuses only the member (or Mailchimp) can leave: an API write may not change them."""
        return self.status == "cleaned" or (self.status == "unsubscribed" and self.unsubscribed_by == "self")


class Segment:
    """A static segment, which Mailchimp's UI calls a tag."""

    __slots__ = ("id", "name", "key", "created", "updated", "members", "added")

    def __init__(self, segment_id: int, name: str, now: float) -> None:
        self.id = segment_id
        self.name = name  # as created: the spelling Mailchimp keeps
        self.key = tag_key(name)
        self.created = self.updated = now
        self.members: dict[str, Member] = {}
        self.added: dict[str, float] = {}  # member id -> when the tag was added (a member's tag `date_added`)


def tag_key(name: str) -> str:
    """Mailchimp compares tag names ignoring case."""
    return name.casefold()


@dataclass
class MemberWrite:
    """One member as a write call sends it. `status` overwrites; `status_if_new` only applies to new members."""

    email: str
    status: str | None = None
    status_if_new: str | None = None
    merge_fields: dict[str, Any] | None = None
    tags: list[str] | None = None


def subscriber_id(email: str) -> str:
    return hashlib.md5(email.strip().lower().encode("utf-8")).hexdigest()


class Audience:
    def __init__(self, audience_id: str, account_id: str, name: str, double_optin: bool, now: float,
                 new_segment_id: Callable[[], int]) -> None:
        self.id = audience_id
        self.account_id = account_id
        self.name = name
        self.double_optin = double_optin
        self.created = now
        self.lock = threading.Lock()
        self.members: dict[str, Member] = {}
        self.forgotten: set[str] = set()  # hashes of permanently deleted addresses
        self.segments: dict[int, Segment] = {}
        self.segments_by_name: dict[str, Segment] = {}  # keyed by tag_key(name)
        self.merge_fields: list[MergeField] = []
        self.counts = dict.fromkeys((*STATUSES, ARCHIVED), 0)
        self._merge_index: dict[str, int] = {}
        self._new_segment_id = new_segment_id
        self._version = 0  # bumped by every member change; paging views are cached per version
        self._views: dict[Any, tuple[int, list[Member]]] = {}
        self._seq = itertools.count()
        # Members in the order of their last change. A call's changes carry the time it arrived, so concurrent calls
        # can stamp them out of order: `_disorder` is how far a change's time ever fell behind the latest given.
        self._changes: dict[str, Member] = {}
        self._latest = float("-inf")
        self._disorder = 0.0

    # merge fields

    def add_merge_field(self, name: str, type_: str, tag: str | None = None, **attributes: Any) -> MergeField:
        merge_id = len(self.merge_fields) + 1
        tag = tag or f"MMERGE{merge_id}"
        if tag in self._merge_index:
            raise invalid("tag", f"A merge field with tag {tag} already exists in this audience; choose another tag")
        attributes.setdefault("display_order", merge_id + 1)  # EMAIL is 1
        merge_field = MergeField(merge_id, tag, name, type_, **attributes)
        self._merge_index[tag] = len(self.merge_fields)
        self.merge_fields.append(merge_field)
        return merge_field

    def merge_dict(self, values: tuple[Any, ...]) -> dict[str, Any]:
        """Every merge field appears, empty ones as "" (fields added after the member was written included)."""
        tags = self._merge_index.keys()
        if len(values) < len(tags):
            values = values + ("",) * (len(tags) - len(values))
        return dict(zip(tags, values))

    def _merge_values(self, given: dict[str, Any] | None, base: tuple[Any, ...], skip_required: bool) -> tuple:
        values = list(base) + [""] * (len(self.merge_fields) - len(base))
        for tag, value in (given or {}).items():
            index = self._merge_index.get(tag)
            if index is None:
                continue  # unknown merge tags are ignored, as Mailchimp does
            try:
                values[index] = self.merge_fields[index].coerce(value)
            except MergeValueError as exc:
                raise refusals.merge(tag, str(exc)) from None
        if not skip_required:
            for index, merge_field in enumerate(self.merge_fields):
                if merge_field.required and values[index] == "":
                    raise refusals.merge(merge_field.tag, "Please enter a value")
        return tuple(values)

    # member writes

    def write(self, sent: MemberWrite, now: float, *, update_existing: bool = True, skip_required: bool = False,
              sync_tags: bool = False) -> tuple[bool, Member]:
        """Create or update one member; returns (created, member) or raises Refused.

        The status sent overwrites an existing member's status (Mailchimp's trap), except that members in a
        compliance state keep theirs. Archived members are re-created: same id and paging position.

        Tags sent with the member (`members[].tags`, names) are applied only once the write is accepted: a refused
        member (compliance state, bad merge value, fake address, an existing member without update_existing) gets
        none. They apply to new members and, with update_existing, to existing ones ("Per-member tags in batch
        subscribe apply to new members, and since 2022 to existing ones with update_existing: true": REFERENCE.md
        §4, Mailchimp developer release notes, "added ability to sync tags for existing members"). They are added,
        never replacing the member's other tags, unless `sync_tags` ("Whether this batch operation will replace all
        existing tags with tags in request": Mailchimp's batch-subscribe reference and OpenAPI 3.0.55,
        `sync_tags`). Strict where Mailchimp does not say: with sync_tags, a member sent without `tags` is synced
        to no tags (all taken off), so a client relying on its tags being kept is caught here.
        """
        email = sent.email.strip()
        key = email.lower()
        if looks_fake(key):
            raise refusals.fake(email)
        member_id = hashlib.md5(key.encode("utf-8")).hexdigest()
        if member_id in self.forgotten:
            raise refusals.forgotten(email)
        member = self.members.get(member_id)
        present = member is not None and not member.archived
        if present and not update_existing:
            raise refusals.exists(email)
        current = member.status if member is not None else None
        target = sent.status or (current if present else sent.status_if_new or current)
        if member is not None and target != current and member.in_compliance_state():
            raise refusals.compliance(email)
        merge = self._merge_values(sent.merge_fields, member.merge if member else (), skip_required)
        if member is None:
            member = self._join(Member(member_id, email, now))
        if not present or target != current:
            self._set_status(member, target, now)  # type: ignore[arg-type]
        if not present or target != current or merge != member.merge:
            member.merge = merge
            self._touch(member, now)
        if sent.tags is not None or sync_tags:
            self.retag(member, sent.tags or [], now, sync=sync_tags)
        return not present, member

    def put_state(self, email: str, status: str, now: float, *, unsubscribed_by: str, archived: bool,
                  merge_fields: dict[str, Any] | None) -> Member:
        """Admin shortcut: put a member in any state without Mailchimp's write rules (merge values still checked)."""
        member_id = subscriber_id(email)
        self.forgotten.discard(member_id)
        member = self.members.get(member_id)
        merge = self._merge_values(merge_fields, member.merge if member else (), skip_required=True)
        if member is None:
            member = self._join(Member(member_id, email.strip(), now))
        self._set_status(member, status, now)
        member.unsubscribed_by = unsubscribed_by if status == "unsubscribed" else None
        if archived:
            self.archive(member, now)
        member.merge = merge
        self._touch(member, now)
        return member

    def archive(self, member: Member, now: float) -> None:
        """Archiving also drops the member's tags (a local simplification; see README)."""
        self._untag_all(member, now)
        self.counts[member.shown_status] -= 1
        member.archived = True
        self.counts[ARCHIVED] += 1
        self._touch(member, now)

    def forget(self, member: Member, now: float) -> None:
        """Permanent deletion: only the hash is kept, so the address can never be re-imported."""
        self._untag_all(member, now)
        self.counts[member.shown_status] -= 1
        del self.members[member.id]
        del self._changes[member.id]
        self.forgotten.add(member.id)
        self._version += 1

    def _set_status(self, member: Member, status: str, now: float) -> None:
        """A status set through the API is the admin's doing: an admin unsubscribe is no compliance state."""
        if member.status is not None:
            self.counts[member.shown_status] -= 1
        if status != member.status:
            member.unsubscribed_by = "admin" if status == "unsubscribed" else None
            if status == "unsubscribed":
                member.unsubscribed_at = now
            elif status == "subscribed":
                member.opted = now
        member.status = status
        member.archived = False
        self.counts[status] += 1

    def _join(self, member: Member) -> Member:
        member.seq = next(self._seq)
        self.members[member.id] = member
        return member

    def _touch(self, member: Member, now: float) -> None:
        """Every change of `changed` (and of `unsubscribed_at`, always set with it) goes through here."""
        member.changed = now
        self._changed_last(member)

    def set_times(self, member: Member, changed: float, unsubscribed_at: float | None) -> None:
        """The admin's way to give a member any times (a contact changed or unsubscribed long ago)."""
        member.changed, member.unsubscribed_at = changed, unsubscribed_at
        self._changed_last(member)

    def _changed_last(self, member: Member) -> None:
        self._version += 1
        self._changes.pop(member.id, None)
        self._changes[member.id] = member
        self._note_times(member)

    def _note_times(self, member: Member) -> None:
        """Keep `changed_since`'s bound true for a member put last in `_changes`, whatever its times."""
        self._disorder = max(self._disorder, self._latest - member.changed,
                             (member.unsubscribed_at or member.changed) - member.changed)
        self._latest = max(self._latest, member.changed, member.unsubscribed_at or member.changed)

    def move_back(self, seconds: float) -> None:
        """Every member's times and every tag's, `seconds` into the past (the admin's time shift). Moving them all by
        the same amount keeps `changed_since`'s order and bound true."""
        for member in self.members.values():
            member.created -= seconds
            member.opted -= seconds
            member.changed -= seconds
            if member.unsubscribed_at is not None:
                member.unsubscribed_at -= seconds
        for segment in self.segments.values():
            segment.created -= seconds
            segment.updated -= seconds
            segment.added = {member_id: at - seconds for member_id, at in segment.added.items()}
        self._version += 1  # a listing's cached page of before is stale

    def loaded(self) -> None:
        """Once a saved audience's members are in `members` (creation order): order them by change time."""
        for member in self.members.values():
            member.seq = next(self._seq)
        self._changes = {}
        for member in sorted(self.members.values(), key=lambda m: m.changed):
            self._changes[member.id] = member
            self._note_times(member)

    def changed_since(self, earliest: float) -> list[Member]:
        """Every member whose `changed` or `unsubscribed_at` may be `earliest` or later (and some whose times are not:
        the caller filters), in creation order. Read from the latest change back to the first member changed more
        than `_disorder` before `earliest`: every member changed before that one has both times earlier than
        `earliest` (each was at most the latest time given then, which that member's own time trails by at most
        `_disorder`). Moving every member's times back by the same amount (the admin's time shift) keeps this so."""
        bound, most = earliest - self._disorder, len(self._changes) // 8
        found = []
        for member in reversed(self._changes.values()):
            if member.changed < bound:
                break
            found.append(member)
            if len(found) > most:  # a wide window: every member, already in order, costs less than a sort
                return list(self.members.values())
        found.sort(key=lambda m: m.seq)
        return found

    # tags

    def segment(self, segment_id: str | int) -> Segment | None:
        try:
            return self.segments.get(int(segment_id))
        except ValueError:
            return None

    def segment_named(self, name: str) -> Segment | None:
        """The tag of that name, ignoring case."""
        return self.segments_by_name.get(tag_key(name))

    def create_segment(self, name: str, now: float) -> Segment:
        """A name taken in any case ("vip" when "VIP" exists) is refused like the same name."""
        taken = self.segment_named(name)
        if taken is not None:
            raise invalid("name", f"A tag (static segment) named {taken.name!r} already exists in this audience "
                                  "(tag names ignore case); use its id, or choose another name")
        segment = Segment(self._new_segment_id(), name, now)
        self.segments[segment.id] = segment
        self.segments_by_name[segment.key] = segment
        return segment

    def retag(self, member: Member, names: Sequence[str], now: float, *, sync: bool = False,
              active: bool = True) -> None:
        """Add (or with active=False remove) tags by name, ignoring case; sync=True also removes tags not named.

        A name matching an existing tag in another case uses that tag, whose name keeps its first spelling (tag
        names are case-insensitive in Mailchimp: REFERENCE.md §4, spree_chimpy PR 15); a name matching none creates
        the tag ("If you pass a tag name that doesn't exist and set its status to active, Mailchimp will create the
        tag": POST /lists/{list_id}/members/{subscriber_hash}/tags; batch subscribe's `members[].tags` likewise,
        Mailchimp's "Add member to list" reference: "tags ... The tags that are associated with a member")."""
        by_name = self.segments_by_name
        if sync:
            keep = {name.casefold() for name in names}  # tag_key, inlined: this runs for every member written
            for segment_id in member.tags:
                segment = self.segments[segment_id]
                if segment.key not in keep:
                    self.untag(member, segment, now)
        for name in names:
            segment = by_name.get(name.casefold())
            if active:
                self.tag(member, segment or self.create_segment(name, now), now)
            elif segment is not None:
                self.untag(member, segment, now)

    def tag(self, member: Member, segment: Segment, now: float) -> bool:
        if member.id in segment.members:
            return False
        segment.members[member.id] = member
        segment.added[member.id] = now
        segment.updated = now
        member.tags += (segment.id,)
        self._version += 1
        return True

    def untag(self, member: Member, segment: Segment, now: float) -> bool:
        if segment.members.pop(member.id, None) is None:
            return False
        segment.added.pop(member.id, None)
        segment.updated = now
        member.tags = tuple(t for t in member.tags if t != segment.id)
        self._version += 1
        return True

    def _untag_all(self, member: Member, now: float) -> None:
        for segment_id in member.tags:
            self.untag(member, self.segments[segment_id], now)

    # reads

    def find(self, email_or_hash: str) -> Member | None:
        """Mailchimp accepts the address itself in place of its hash in member paths."""
        key = email_or_hash if "@" not in email_or_hash else subscriber_id(email_or_hash)
        return self.members.get(key.lower())

    def view(self, key: Any, source: Callable[[], Iterator[Member]]) -> list[Member]:
        """The members `source` yields, cached until the next member change, so paging a filter is O(page)."""
        cached = self._views.get(key)
        if cached is not None and cached[0] == self._version:
            return cached[1]
        members = list(source())
        if len(self._views) > 32:
            self._views.clear()
        self._views[key] = (self._version, members)
        return members


def require_status(value: Any, field: str, allowed: Sequence[str] = STATUSES) -> str:
    if value not in allowed:
        raise invalid(field, f"Send one of {', '.join(allowed)} (got {value!r})")
    return value
