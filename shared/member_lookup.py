"""Reading only the contacts a small run needs, when no audience mirror can be refreshed.

Why: without a usable mirror (a destination's first run, a mirror older than AUDIENCE_MIRROR_MAX_AGE_HOURS, one that
cannot be read, or no mirror at all) a run reads the whole audience: a listing call per 1,000 contacts, 1,000 calls
for a million, even when its segments hold 200 rows. Planning needs less than that (shared/planning.py, `existing`):
- each row's contact, to send only differences and never write an unsubscribed, cleaned or archived one as new:
  GET /lists/{id}/members/{subscriber_hash}, 404 when the address is not in the audience ("Get information about a
  specific list member, including a currently subscribed, unsubscribed, or bounced member",
  ../shared/mailchimp/marketing-api-3.0.55.openapi.json). Archived contacts are answered too, with status
  "archived": the 3.0.55 description's status enum predates it, Mailchimp's member reference since says "Possible
  values: subscribed, unsubscribed, cleaned, pending, transactional, or archived" (get-member-info, as quoted by the
  mailchimp-api crate's Member), and the local Mailchimp answers so;
- every contact carrying a tag the run keeps in step, to find those who left its segment (untagged) and to weigh
  the mass-untag guard against everyone carrying it: the tag's member listing (GET /lists/{id}/segments/{id}/members,
  unsubscribed, cleaned and transactional ones included: MailchimpClient.iter_tag_members). It gives addresses
  only, so those of them who are in no row are read one by one as well, for every tag they carry and their status:
  an archived one, should the listing show it, is never untagged (planning passes over archived contacts).
Every contact is read with the fields the full read gives it (an archived one also with the merge fields and tags the
full read leaves out: planning looks at its status alone, refusing it and never untagging it), so planning decides
as it would after a full read: the audience's other contacts carry no tag of the run's and are in no row, and
planning passes over such contacts.

Threshold (`budget`): the lookups, with the tags' listing calls, must take fewer calls than the full read would, by
NEXT_READ_CALLS at least. The full read makes a page per 1,000 subscribed contacts (get_audience counts them for
free; contacts of other statuses are listed too, uncounted: the full read makes at least this many) and three calls
for the archived ones; it also writes the mirror, through which the next run reads the audience in about
NEXT_READ_CALLS calls, while after a lookup the next run looks up again: a lookup must save at least that. Calls are
what Mailchimp's 10 connections per user are spent on, shared with every other run's chunk workers on the account,
and a lookup holds its connection for less time than a page of 1,000 does (120 ms against 170 ms at the local
Mailchimp's realistic latency), so fewer calls is also less time whatever the latency: lookups run LOOKUP_WORKERS at
a time, pages 8 at a time. So a 50-row segment is looked up in an audience of about 57,000 subscribed contacts or
more, 200 rows in one of 207,000, and 1,000,000 contacts allow about 990 lookups; an audience of up to 7,000 is read
in full unless the run needs none of its contacts. The figures come in the order they cost: the rows (read once more,
stopping past the budget), then the tags' members (stopping once past it); past it, nothing is looked up and the run
reads in full.
A partial read leaves the mirror as it was (shared/audience_mirror.py): the next run too small for its budget looks
up again, a larger one reads in full or refreshes as before.

Plain module: Mailchimp is reached through the protocol below (MailchimpClient in the app).
"""
from __future__ import annotations

import logging
import math
from collections.abc import Callable, Collection, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Protocol

from shared.members import ExistingMember

log = logging.getLogger(__name__)

PAGE = 1000  # contacts a listing call returns at most (MailchimpClient's MAX_PAGE)
NEXT_READ_CALLS = 10  # a run's read through a mirror when nothing changed (README, "ten calls when nothing did")
LOOKUP_WORKERS = 10  # Mailchimp's connections per user; the client's gate keeps the account's cap across runs


class LookupReader(Protocol):
    """What a lookup asks Mailchimp (MailchimpClient)."""

    def get_member(self, list_id: str, email: str) -> ExistingMember | None: ...
    def iter_tag_members(self, list_id: str, tag_id: int) -> Iterator[str]: ...


@dataclass(frozen=True)
class Needed:
    """What a run needs of its audience: its rows' addresses and the contacts carrying the tags it keeps in step."""

    emails: Callable[[int], set[str] | None]  # the rows' addresses when the rows are at most that many, else None
    tag_ids: Collection[int]  # of the tags the run takes off members who left their segment
    subscribed: int  # the audience's subscribed contacts (get_audience's member_count)


def _pages(contacts: int) -> int:
    """Listing calls for that many contacts (an empty listing is one call too)."""
    return max(1, math.ceil(contacts / PAGE))


def budget(subscribed: int, mirror_kept: bool = True) -> int:
    """The most calls a lookup may take in an audience of that many subscribed contacts (see the module's docstring):
    the calls a full read makes at least (a page per 1,000 of them, two counts and a page of archived contacts) less
    what its mirror saves the next run (nothing when no mirror is kept: AUDIENCE_MIRROR_MAX_AGE_HOURS=0)."""
    return _pages(subscribed) + 3 - (NEXT_READ_CALLS if mirror_kept else 0)


def look_up(client: LookupReader, list_id: str, needed: Needed, where: str,
            mirror_kept: bool = True) -> list[ExistingMember] | None:
    """The contacts planning needs (see the module's docstring), as the full read gives them; None, having looked
    nothing up, when that would take more calls than the budget allows, or when a row's address has a letter outside
    ASCII: Mailchimp's subscriber hash is of the address in lower case, and whether it lowers such letters as this
    app does (shared/emails.py) is not documented, so a contact could be missed by its hash where a full read, which
    matches addresses as Mailchimp lists them, finds it. `where` names the audience in the log."""
    most = budget(needed.subscribed, mirror_kept)
    emails = needed.emails(max(most, 0))
    if emails is not None and not all(email.isascii() for email in emails):
        log.info("%s: a row's address is not all ASCII; reading the audience in full", where)
        return None
    tag_ids = list(needed.tag_ids)
    leavers: set[str] = set()  # carriers of a tag who are in no row

    def within(pages: int) -> bool:
        """Whether the lookups so far and `pages` listing calls of the tags are within the budget."""
        if emails is not None and len(emails) + len(leavers) + pages <= most:
            return True
        if most > 0:
            log.info("%s: too many rows and members of the tags kept in step to look up within %d call(s) (a full "
                     "read's less what its mirror saves the next run)", where, most)
        else:  # a budget below one call: a negative count would read as nonsense
            log.info("%s: the audience is small enough that reading it in full costs no more calls than looking up",
                     where)
        return False

    if not within(len(tag_ids)):  # a tag's listing is one call at least
        return None
    tag_pages = 0
    for index, tag_id in enumerate(tag_ids):
        carried = 0
        for email in client.iter_tag_members(list_id, tag_id):
            carried += 1
            if email not in emails:
                leavers.add(email)
            if not within(tag_pages + _pages(carried) + len(tag_ids) - index - 1):
                return None
        tag_pages += _pages(carried)
    with ThreadPoolExecutor(max_workers=LOOKUP_WORKERS) as pool:
        contacts = [member for member in pool.map(lambda email: client.get_member(list_id, email),
                                                  sorted(emails | leavers)) if member is not None]
    log.info("%s read in part: %d contact(s) looked up for %d row address(es) and %d member(s) of %d tag(s) who "
             "are in no row (%d call(s) with the tags' listings, within a budget of %d); %d found",
             where, len(emails) + len(leavers), len(emails), len(leavers), len(needed.tag_ids),
             len(emails) + len(leavers) + tag_pages, most, len(contacts),
             extra={"audienceRead": "lookup", "audienceContacts": len(contacts)})
    return contacts
