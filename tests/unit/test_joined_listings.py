"""Status listings shared by concurrent upserts (shared/mailchimp/joined_listings.py): a caller gets a listing begun
after it asked and ended before it returns, as its own would be, and callers asking together share one."""
from __future__ import annotations

import itertools
import random
import threading
import time
from datetime import datetime, timezone

import pytest

from shared.mailchimp import MailchimpAuthError
from shared.mailchimp.joined_listings import JoinedListings
from shared.mailchimp.upsert import BatchAnswer, upsert
from shared.members import ExistingMember, Member, Outcome, RowRef


class Clock:
    """A counter every event takes a number from: "began after it asked" compares numbers, not times."""

    def __init__(self) -> None:
        self._numbers = itertools.count()
        self._lock = threading.Lock()

    def tick(self) -> int:
        with self._lock:
            return next(self._numbers)


def test_callers_asking_while_a_listing_is_under_way_share_the_next_one() -> None:
    joined, clock = JoinedListings(), Clock()
    first_began, release = threading.Event(), threading.Event()
    fetches: list[tuple[int, int]] = []  # (began, ended)

    def fetch() -> int:
        began = clock.tick()
        if not fetches and not first_began.is_set():
            first_began.set()
            release.wait(5)
        fetches.append((began, clock.tick()))
        return len(fetches)

    results: dict[str, tuple[int, int, int]] = {}  # caller -> (asked, result, returned)

    def caller(name: str) -> None:
        asked = clock.tick()
        result = joined.take("key", fetch)
        results[name] = (asked, result, clock.tick())

    leader = threading.Thread(target=caller, args=("leader",))
    leader.start()
    assert first_began.wait(5)
    others = [threading.Thread(target=caller, args=(f"c{n}",)) for n in range(5)]
    for thread in others:
        thread.start()
    time.sleep(0.2)  # they have all asked by now, while the first listing is held up
    release.set()
    for thread in [leader, *others]:
        thread.join(5)
    assert len(fetches) == 2  # six callers, two listings
    assert results["leader"][1] == 1
    second_began = fetches[1][0]
    for name in (f"c{n}" for n in range(5)):
        asked, result, returned = results[name]
        assert result == 2 and asked < second_began and fetches[1][1] < returned


def test_listings_of_other_keys_are_not_joined_and_run_at_once() -> None:
    joined = JoinedListings()
    together = threading.Barrier(2, timeout=5)  # broken if the two listings ran one after the other

    def fetch(status: str) -> str:
        together.wait()
        return status

    found: dict[str, str] = {}
    threads = [threading.Thread(target=lambda s=s: found.update({s: joined.take(("list", s), lambda: fetch(s))}))
               for s in ("unsubscribed", "cleaned")]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(5)
    assert found == {"unsubscribed": "unsubscribed", "cleaned": "cleaned"}


def test_an_error_reaches_every_caller_of_that_listing_and_the_next_listing_is_made_afresh() -> None:
    joined = JoinedListings()
    began, release = threading.Event(), threading.Event()
    calls = itertools.count()

    def failing() -> str:
        n = next(calls)
        if n == 0:
            began.set()
            release.wait(5)
            return "first"
        if n == 1:
            raise RuntimeError("Mailchimp refused the listing")
        return "fresh"

    outcomes: list[str] = []

    def caller() -> None:
        try:
            outcomes.append(joined.take("key", failing))
        except RuntimeError as error:
            outcomes.append(str(error))

    first = threading.Thread(target=caller)
    first.start()
    assert began.wait(5)
    waiting = [threading.Thread(target=caller) for _ in range(3)]
    for thread in waiting:
        thread.start()
    time.sleep(0.2)
    release.set()
    for thread in [first, *waiting]:
        thread.join(5)
    assert sorted(outcomes) == ["Mailchimp refused the listing"] * 3 + ["first"]
    assert joined.take("key", failing) == "fresh"


@pytest.mark.parametrize("seed", range(20))
def test_under_any_timing_each_caller_gets_a_listing_begun_after_it_asked_and_ended_before_it_returned(seed: int) -> None:
    chance, joined, clock = random.Random(seed), JoinedListings(), Clock()
    made: list[tuple[int, int]] = []
    lock = threading.Lock()
    delays = [chance.uniform(0, 0.004) for _ in range(60)]

    def fetch() -> int:
        began = clock.tick()
        time.sleep(chance.uniform(0, 0.01))
        with lock:
            made.append((began, clock.tick()))
            return len(made) - 1

    seen: list[tuple[int, int, int]] = []

    def caller(n: int) -> None:
        time.sleep(delays[n])
        asked = clock.tick()
        listing = joined.take("key", fetch)
        returned = clock.tick()
        with lock:
            seen.append((asked, listing, returned))

    threads = [threading.Thread(target=caller, args=(n,)) for n in range(len(delays))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(10)
    assert len(seen) == len(delays)
    for asked, listing, returned in seen:
        began, ended = made[listing]
        assert asked < began and ended < returned
    spans = sorted(made)
    assert all(a[1] < b[0] for a, b in zip(spans, spans[1:]))  # one listing of a key at a time
    assert len(made) < len(delays)  # and callers did share them


READ_AT = datetime(2024, 5, 1, tzinfo=timezone.utc)


class CountingAudience:
    """Subscribed members, one of whom unsubscribed since the read; counts the listings made."""

    def __init__(self, emails: list[str], unsubscribed: str) -> None:
        self.members = {e: ExistingMember(e, "subscribed", {"FNAME": "Old"}) for e in emails}
        self.unsubscribed = unsubscribed
        self.listings = 0
        self.lock = threading.Lock()
        self.writes: list[list[dict]] = []

    def iter_members(self, list_id, *, fields, status=None, since_last_changed=None, unsubscribed_since=None):
        with self.lock:
            self.listings += 1
        time.sleep(0.05)  # long enough for the other upserts to ask meanwhile
        return iter([ExistingMember(self.unsubscribed, "unsubscribed", {})] if status == "unsubscribed" else [])

    def get_member(self, list_id, email):
        return self.members.get(email)

    def batch_subscribe(self, list_id, members, *, update_existing):
        with self.lock:
            self.writes.append(list(members))
        return BatchAnswer(updated={m["email_address"] for m in members})


def _updates(audience: CountingAudience, emails: list[str]) -> list[Member]:
    """These members with a new first name: each is written, after the status check."""
    return [Member(e, {"FNAME": "New"}, ["Seg"], RowRef("s", "p", 1), audience.members[e]) for e in emails]


def _send_at_once(audience, joined: JoinedListings, chunks: list[list[str]], read_at: list[datetime],
                  lists: list[str]) -> dict[int, object]:
    """Upsert each chunk in a thread of its own, all at once; each thread's results, or the error it raised."""
    outcomes: dict[int, object] = {}
    start = threading.Barrier(len(chunks), timeout=10)

    def send(number: int) -> None:
        members = _updates(audience, chunks[number])
        start.wait()
        try:
            outcomes[number] = upsert(audience, lists[number], members, "subscribed", read_at[number], joined=joined)
        except Exception as error:  # noqa: BLE001 - the test looks at it
            outcomes[number] = error

    threads = [threading.Thread(target=send, args=(n,)) for n in range(len(chunks))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(10)
    return outcomes


def test_upserts_through_one_store_share_their_listings_and_none_resubscribes_the_unsubscribed() -> None:
    emails = [f"p{n}@example.org" for n in range(40)]
    audience = CountingAudience(emails, unsubscribed="p7@example.org")
    chunks = [emails[n:n + 5] for n in range(0, 40, 5)]
    results = _send_at_once(audience, JoinedListings(), chunks, [READ_AT] * len(chunks), ["list"] * len(chunks))
    assert audience.listings < 3 * len(chunks)  # 8 upserts, fewer than 24 listings
    written = {m["email_address"]: m["status"] for batch in audience.writes for m in batch}
    assert written["p7@example.org"] == "unsubscribed"  # each upsert saw the unsubscribe, whoever listed it
    assert all(status == "subscribed" for email, status in written.items() if email != "p7@example.org")
    assert all(r.outcome is Outcome.UPDATED for chunk in results.values() for r in chunk)


class RecordingListings(JoinedListings):
    def __init__(self) -> None:
        super().__init__()
        self.keys: list[object] = []

    def take(self, key, fetch):
        self.keys.append(key)
        return super().take(key, fetch)


def test_upserts_of_another_read_time_or_audience_never_share_a_listing() -> None:
    """A listing answers "who moved in this audience since this time": another time or audience asks another question."""
    emails = [f"p{n}@example.org" for n in range(5)]
    audience = CountingAudience(emails, unsubscribed="p7@example.org")
    keys = []
    for list_id, read_at in (("list", READ_AT), ("list", READ_AT.replace(hour=12)), ("other", READ_AT)):
        joined = RecordingListings()
        upsert(audience, list_id, _updates(audience, emails), "subscribed", read_at, joined=joined)
        keys.append(set(joined.keys))
    assert all(len(k) == 3 for k in keys)  # unsubscribed, cleaned, archived
    assert not (keys[0] & keys[1]) and not (keys[0] & keys[2]) and not (keys[1] & keys[2])


def test_a_refusal_of_the_credentials_reaches_each_upsert_as_its_own_error_with_its_own_members() -> None:
    emails = [f"p{n}@example.org" for n in range(20)]
    audience = CountingAudience(emails, unsubscribed="p7@example.org")
    chunks = [emails[n:n + 5] for n in range(0, 20, 5)]

    def refused(list_id, **_):
        with audience.lock:
            audience.listings += 1
        time.sleep(0.05)
        raise MailchimpAuthError("Mailchimp refused the credentials (401)", status=401)

    audience.iter_members = refused
    outcomes = _send_at_once(audience, JoinedListings(), chunks, [READ_AT] * 4, ["list"] * 4)
    assert audience.listings < 2 * 4  # some upserts shared a refused listing (two each alone: archived never follows)
    errors = [outcomes[n] for n in range(4)]
    assert all(isinstance(error, MailchimpAuthError) for error in errors)
    assert len({id(error) for error in errors}) == 4  # each its own object ...
    for error, chunk in zip(errors, chunks):  # ... counting its own members, failed
        assert [r.email for r in error.results] == chunk
        assert all(r.outcome is Outcome.FAILED for r in error.results)
