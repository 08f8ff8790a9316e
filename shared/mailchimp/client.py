"""The Mailchimp Marketing API calls an export needs, each one paged, batched and status-safe."""
from __future__ import annotations

import itertools
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from datetime import datetime, timezone
from typing import Any, Callable, Iterable, Iterator, Sequence

from shared.emails import normalize_email, subscriber_hash
from shared.members import ExistingMember, Member, MemberResult

from .batching import MAX_BATCH, chunks
from .credentials import Credentials
from .errors import MailchimpNotFound, MailchimpRequestError, MailchimpUnavailable
from .joined_listings import JoinedListings
from .models import Audience, MergeField, Tag
from .redact import redact
from .retry import RetryPolicy
from .transport import Gate, Transport
from .upsert import BatchAnswer, TagsOf, no_tags, upsert

MAX_PAGE = 1000
PAGES_AHEAD = 8  # member pages read in parallel when listing a large audience (within the connection cap)


class EnsuredTags(dict[str, int]):
    """Tag name -> id, and which of them this call created (not those another run created meanwhile)."""

    def __init__(self) -> None:
        super().__init__()
        self.created: set[str] = set()


class MailchimpClient:
    def __init__(self, credentials: Credentials, *, max_connections: int = 10, gate: Gate | None = None,
                 retry: RetryPolicy | None = None, timeout: tuple[float, float] = (5.0, 60.0)) -> None:
        self._http = Transport(credentials, max_connections=max_connections, gate=gate,
                               retry=retry or RetryPolicy(), timeout=timeout)
        self._joined = JoinedListings()  # status listings the upserts through this client share

    def __enter__(self) -> "MailchimpClient":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._http.close()

    @property
    def account(self) -> str:
        """The Mailchimp user this client talks as (Credentials.account): two clients with the same account and
        audience reach the same contacts."""
        return self._http.account

    def ping(self) -> None:
        """Cheapest call that proves the credentials work (raises MailchimpAuthError when they do not)."""
        self._http.call("GET", "/", params={"fields": "account_id"})

    def get_audience(self, list_id: str) -> Audience:
        doc = self._http.call("GET", "/lists/{list_id}", path={"list_id": list_id},
                              params={"fields": "id,name,double_optin,stats.member_count,stats.total_contacts",
                                      "include_total_contacts": "true"})
        return Audience.from_json(doc)

    def list_merge_fields(self, list_id: str) -> list[MergeField]:
        pages = self._pages("/lists/{list_id}/merge-fields", list_id, "merge_fields",
                            ("tag", "name", "type", "required", "merge_id"), {})
        return [MergeField.from_json(doc) for doc in pages]

    def create_merge_field(self, list_id: str, tag: str, name: str, type: str) -> MergeField:
        doc = self._http.call("POST", "/lists/{list_id}/merge-fields", path={"list_id": list_id},
                              body={"tag": tag, "name": name, "type": type})
        return MergeField.from_json(doc)

    def list_tags(self, list_id: str) -> dict[str, int]:
        """Tags are static segments in the API; the name is what users see in Mailchimp."""
        return {tag.name: tag.id for tag in self.list_tag_details(list_id)}

    def list_tag_details(self, list_id: str) -> list[Tag]:
        """Every tag with when it last changed (its `updated_at`) and its `member_count`."""
        pages = self._pages("/lists/{list_id}/segments", list_id, "segments",
                            ("id", "name", "updated_at", "member_count"), {"type": "static"})
        return [Tag.from_json(doc) for doc in pages]

    def iter_tag_members(self, list_id: str, tag_id: int) -> Iterator[str]:
        """The addresses (normalized) of every contact carrying the tag, whatever its status: the segment listing
        shows unsubscribed, cleaned and transactional contacts only when asked to."""
        shown = {"include_unsubscribed": "true", "include_cleaned": "true", "include_transactional": "true"}
        for doc in self._pages("/lists/{list_id}/segments/{segment_id}/members", list_id, "members",
                               ("email_address",), shown, path={"segment_id": str(tag_id)}):
            yield normalize_email(doc["email_address"])

    def create_tag(self, list_id: str, name: str) -> int:
        doc = self._http.call("POST", "/lists/{list_id}/segments", path={"list_id": list_id},
                              body={"name": name, "static_segment": []})
        return int(doc["id"])

    def ensure_tags(self, list_id: str, names: Iterable[str],
                    before_creating: Callable[[list[str]], None] | None = None) -> "EnsuredTags":
        """Tag name -> id, creating the missing ones. Mailchimp's tag names are case-insensitive ("VIP" is "vip"),
        so an existing tag in another case is that tag, never a second one. A tag another run created meanwhile is
        picked up instead of failing. `before_creating` is told the names about to be created, before any is."""
        names = list(dict.fromkeys(names))
        existing = _by_folded_name(self.list_tags(list_id))
        missing = [name for name in names if name.casefold() not in existing]
        if missing and before_creating is not None:
            before_creating(missing)
        ids = EnsuredTags()
        for name in names:
            key = name.casefold()
            if key not in existing:
                try:
                    existing[key] = self.create_tag(list_id, name)
                    ids.created.add(name)
                except MailchimpRequestError:
                    existing = _by_folded_name(self.list_tags(list_id))
                    if key not in existing:
                        raise
            ids[name] = existing[key]
        return ids

    def iter_members(self, list_id: str, *, fields: Sequence[str] = ("email_address", "status", "merge_fields"),
                     status: str | None = None, since_last_changed: datetime | None = None,
                     unsubscribed_since: datetime | None = None, page_size: int = 1000) -> Iterator[ExistingMember]:
        """Pages by offset; addresses come back normalized so they match the export's own keys."""
        params = {"status": status, "since_last_changed": _instant(since_last_changed),
                  "unsubscribed_since": _instant(unsubscribed_since)}
        wanted = tuple(dict.fromkeys(("email_address", *fields)))
        for doc in self._pages("/lists/{list_id}/members", list_id, "members", wanted, params, page_size):
            yield _existing(doc)

    def iter_audience(self, list_id: str, fields: Sequence[str] = ("email_address", "status", "merge_fields", "tags"),
                      ) -> Iterator[ExistingMember]:
        """Every contact, archived ones included: a listing without a status filter may leave archived contacts out
        (unconfirmed for Mailchimp; the local Mailchimp does), and an export must know them to leave them archived.

        Archived contacts are read first and completely: paging by offset skips a contact when one before it leaves
        the list during the read (unarchived, deleted), and a skipped archived contact would look new and be
        re-created. So the read is repeated until the list's size did not change while it was read. A contact
        listed by both reads comes twice, the archived read last.
        """
        archived = self._complete_listing(list_id, "archived")
        yield from self.iter_members(list_id, fields=fields)
        yield from archived

    def _complete_listing(self, list_id: str, status: str, attempts: int = 5) -> list[ExistingMember]:
        for _ in range(attempts):
            before = self.count_members(list_id, status)
            found = list(self.iter_members(list_id, fields=("email_address", "status"), status=status))
            if len({m.email for m in found}) == before == self.count_members(list_id, status):
                return found
        raise MailchimpUnavailable(f"the audience's {status} contacts kept changing while they were read; try again later")

    def count_members(self, list_id: str, status: str | None = None, since_last_changed: datetime | None = None) -> int:
        """How many contacts iter_members would list with these filters (one call, no member listed)."""
        params = {"status": status, "since_last_changed": _instant(since_last_changed), "count": 1,
                  "fields": "total_items"}
        doc = self._http.call("GET", "/lists/{list_id}/members", path={"list_id": list_id},
                              params={k: v for k, v in params.items() if v is not None})
        return int(doc.get("total_items", 0))

    def get_member(self, list_id: str, email: str) -> ExistingMember | None:
        """None when the address is not (or no longer) in the audience."""
        try:
            doc = self._http.call("GET", "/lists/{list_id}/members/{subscriber_hash}",
                                  path={"list_id": list_id, "subscriber_hash": subscriber_hash(email)},
                                  params={"fields": "email_address,status,merge_fields,tags"})
        except MailchimpNotFound:
            return None
        return _existing(doc)

    def upsert_members(self, list_id: str, members: Sequence[Member], *, status_for_new: str,
                       existing_as_of: datetime | None, tags_of: TagsOf = no_tags) -> list[MemberResult]:
        """Creates and updates members without ever changing an existing member's status (see upsert.py); each
        member written carries `tags_of(member)` (tag names) in the same call."""
        return upsert(self, list_id, members, status_for_new, existing_as_of, tags_of, self._joined)

    def batch_subscribe(self, list_id: str, members: Sequence[dict[str, Any]], *,
                        update_existing: bool) -> BatchAnswer:
        """Raw batch subscribe (at most 500 members); prefer upsert_members, which decides update_existing safely."""
        if len(members) > MAX_BATCH:
            raise ValueError(f"batch_subscribe takes at most {MAX_BATCH} members per call")
        doc = self._http.call("POST", "/lists/{list_id}", path={"list_id": list_id},
                              body={"members": list(members), "update_existing": update_existing})
        answer = BatchAnswer(errors={normalize_email(e.get("email_address", "")): e for e in doc.get("errors") or []})
        for key, written in (("new_members", answer.created), ("updated_members", answer.updated)):
            for m in doc.get(key) or []:  # one pass per member of the answer (500 full member objects)
                email = normalize_email(m["email_address"])
                written.add(email)
                if isinstance(m.get("tags"), list):
                    answer.tags[email] = {str(t.get("name", "")).casefold() for t in m["tags"]}
        return answer

    def tag_members(self, list_id: str, tag_id: int, emails: Sequence[str]) -> dict[str, str]:
        """Returns address -> reason for the members NOT tagged; an empty dict means all were tagged."""
        return self._change_tag(list_id, tag_id, emails, "members_to_add")

    def untag_members(self, list_id: str, tag_id: int, emails: Sequence[str]) -> dict[str, str]:
        """Takes the tag off these members; returns address -> reason for those Mailchimp did not untag."""
        return self._change_tag(list_id, tag_id, emails, "members_to_remove")

    def _change_tag(self, list_id: str, tag_id: int, emails: Sequence[str], direction: str) -> dict[str, str]:
        """Batches of 500. A batch Mailchimp refuses is reported per member; MailchimpUnavailable propagates so
        the caller (the export's queue) tries the whole step again later."""
        unique = list(dict.fromkeys(normalize_email(e) for e in emails))
        missed: dict[str, str] = {}
        for chunk in chunks(unique):
            try:
                doc = self._http.call("POST", "/lists/{list_id}/segments/{segment_id}",
                                      path={"list_id": list_id, "segment_id": str(tag_id)},
                                      body={direction: list(chunk)})
            except MailchimpRequestError as exc:
                missed.update(dict.fromkeys(chunk, str(exc)))
                continue
            for error in doc.get("errors") or []:
                reason = redact(str(error.get("error") or "Mailchimp did not change this member's tag"))
                for email in error.get("email_addresses") or []:
                    missed[normalize_email(email)] = reason
        return missed

    def archive_member(self, list_id: str, email: str) -> None:
        """Idempotent: a member already gone or already archived counts as archived (delivery is at-least-once).

        Mailchimp answers 405 for archiving a pending, cleaned or already archived contact; only the last is done.
        """
        try:
            self._http.call("DELETE", "/lists/{list_id}/members/{subscriber_hash}",
                            path={"list_id": list_id, "subscriber_hash": subscriber_hash(email)})
        except MailchimpNotFound:
            return
        except MailchimpRequestError as error:
            if error.status == 405 and (current := self.get_member(list_id, email)) is not None and current.status == "archived":
                return
            raise

    def delete_member_permanently(self, list_id: str, member_hash: str) -> bool:
        """Erase a contact for good ("Delete all personally identifiable information related to a list member, and
        remove them from a list. This will make it impossible to re-import the list member",
        POST /lists/{list_id}/members/{subscriber_hash}/actions/delete-permanent, 204). True when it was deleted, False
        when Mailchimp knows no such contact (404): already gone, which is what was asked. Takes the hash, so an erasure
        needs no address once it is recorded."""
        try:
            self._http.call("POST", "/lists/{list_id}/members/{subscriber_hash}/actions/delete-permanent",
                            path={"list_id": list_id, "subscriber_hash": member_hash})
        except MailchimpNotFound:
            return False
        return True

    def _pages(self, template: str, list_id: str, key: str, fields: Sequence[str], params: dict[str, Any],
               page_size: int = MAX_PAGE, path: dict[str, str] | None = None) -> Iterator[dict[str, Any]]:
        if not 1 <= page_size <= MAX_PAGE:
            raise ValueError(f"page_size must be between 1 and {MAX_PAGE}")
        query = {k: v for k, v in params.items() if v is not None}
        query["count"] = page_size
        query["fields"] = ",".join([f"{key}.{f}" for f in fields] + ["total_items"])
        path = {"list_id": list_id, **(path or {})}
        first = self._http.call("GET", template, path=path, params={**query, "offset": 0})
        items = first.get(key) or []
        yield from items
        total = int(first.get("total_items", len(items)))
        if len(items) < page_size or len(items) >= total:
            return
        # The rest is fetched a few pages ahead in parallel (reading a large audience page by page would take
        # minutes at Mailchimp's latency); the window bounds memory, the connection cap bounds the load.
        fetch = lambda offset: self._http.call("GET", template, path=path,  # noqa: E731
                                               params={**query, "offset": offset}).get(key) or []
        with ThreadPoolExecutor(max_workers=PAGES_AHEAD) as pool:
            pending: deque[Future] = deque()
            offsets = iter(range(len(items), total, page_size))
            for offset in itertools.islice(offsets, PAGES_AHEAD):
                pending.append(pool.submit(fetch, offset))
            while pending:
                page = pending.popleft().result()
                for offset in itertools.islice(offsets, 1):
                    pending.append(pool.submit(fetch, offset))
                yield from page


def _by_folded_name(tags: dict[str, int]) -> dict[str, int]:
    return {name.casefold(): tag_id for name, tag_id in tags.items()}


def _existing(doc: dict[str, Any]) -> ExistingMember:
    return ExistingMember(normalize_email(doc["email_address"]), str(doc.get("status", "")),
                          dict(doc.get("merge_fields") or {}), tuple(t["name"] for t in doc.get("tags") or ()))


def _instant(moment: datetime | None) -> str | None:
    if moment is None:
        return None
    if moment.tzinfo is None:
        raise ValueError("Mailchimp time filters need a timezone-aware datetime (use datetime.now(timezone.utc))")
    return moment.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S+00:00")
