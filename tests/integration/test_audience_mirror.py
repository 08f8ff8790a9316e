"""The audience mirror (shared/audience_mirror.py) on real storage (Azurite) and the real local Mailchimp.

A run reads the whole audience once, keeps it in the work container, and later runs read only what changed since:
counted by the local Mailchimp itself (/__admin/stats: requests per route, members returned in pages). Changes made
by hand between runs are seen (an unsubscribe is never undone, an archive stays, merge values and tags by hand), a
contact deleted for good, a mirror too old or a damaged one make the run read in full and still succeed, a refresh
that finds nothing changed keeps the stored version (only its manifest is written again) and hands planning the very
lines a new version would, and a Hypothesis property checks that for any sequence of changes the mirror lists what a
full read lists.

The export tests run the real ExportService (tests/integration/export_driver.py) with a mirror whose clock margin is
0: the local Mailchimp shares this machine's clock, and a margin of minutes would make every test's changes (all made
within seconds) count as changed again.
"""
from __future__ import annotations

import dataclasses
import gzip
import json
import logging
import threading
import time
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any, Callable

import pytest
import requests
from azure.storage.blob import BlobServiceClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from shared.adapters.storage import BlobFolder
from shared.audience_mirror import (DESTINATION_MARKS, MANIFEST, MIRRORS_PREFIX, AudienceMirror, destination_prefix,
                                    _part_digest, note_mirrors_deleted)
from shared.emails import subscriber_hash
from shared.mailchimp.client import MailchimpClient
from shared.members import ExistingMember
from shared.runs import Run
from tests.contacts import decoded
from tests.integration.export_driver import DEMO_AUDIENCE, TAKEN, ExportDriver, minutes_after
from tests.integration.test_mailchimp_client import KEY, LIST, make_client, put_member
from tests.services import LocalMailchimp

MEMBERS_ROUTE = "GET /lists/{list_id}/members"  # listings and counts of contacts
DAY = timedelta(hours=24)
SEGMENT = "Mirrored"


def mirror(driver: ExportDriver, max_age: timedelta = DAY) -> AudienceMirror:
    return AudienceMirror(driver.raw.work, max_age, margin=timedelta(0))


@pytest.fixture(scope="module")
def driver(storage, mailchimp_server) -> ExportDriver:
    driver = ExportDriver(storage, mailchimp_server)
    driver.service = dataclasses.replace(driver.service, mirror=mirror(driver))
    return driver


def next_second() -> None:
    """Wait for the next whole second: Mailchimp's times are whole seconds, so a change made in the second a read
    starts is read again by the next one (harmless, but a test counting what a run reads wants none)."""
    time.sleep(1.01 - time.time() % 1)


def next_day(mailchimp: LocalMailchimp) -> None:
    """Mailchimp's times (members' and tags') a day back, as if the last refresh were that long ago: the next refresh
    then lists only the changes made after this (within the same second, Mailchimp's whole-second times would list
    everything again and hide what the mirror does with the others, tags above all). Only right after a refresh:
    a change it has not read would be moved before it."""
    mailchimp.admin("POST", f"lists/{LIST}/age", json={"seconds": 86400})


def contact(i: int) -> str:
    return f"c{i:05d}@contoso.com"


def fill_audience(driver: ExportDriver, contacts: int) -> None:
    """`contacts` subscribed contacts with FNAME/LNAME, through batch subscribe (500 a call)."""
    for start in range(0, contacts, 500):
        members = [{"email_address": contact(i), "status": "subscribed",
                    "merge_fields": {"FNAME": f"First{i}", "LNAME": f"Last{i}"}}
                   for i in range(start, min(start + 500, contacts))]
        driver.api("POST", f"/lists/{DEMO_AUDIENCE}", json={"members": members, "update_existing": False})


def rows(people: range) -> list[tuple[str, str, str]]:
    return [(contact(i), f"First{i}", f"Last{i}") for i in people]


class Snapshots:
    """A segment whose snapshot comes again a few minutes later each time (a new snapshot a run can be started for)."""

    def __init__(self, driver: ExportDriver, segment: str) -> None:
        self.driver, self.segment, self.minutes = driver, segment, 0

    def write(self, people: list[tuple[str, str, str]]) -> None:
        self.driver.write_snapshot(self.segment, minutes_after(TAKEN, self.minutes), people)
        self.minutes += 5


def export(driver: ExportDriver, destination: str) -> tuple[Run, dict[str, Any]]:
    """A real run, and what the local Mailchimp counted while it went."""
    driver.mailchimp.admin("POST", "stats/reset")
    run = driver.export(destination)
    assert run.status in ("succeeded", "completed_with_errors"), (run.status, run.message)
    return run, driver.mailchimp.stats()


def manifest(driver: ExportDriver, destination: str) -> dict[str, Any]:
    return json.loads(driver.raw.work.read_bytes(f"{destination_prefix(destination)}{DEMO_AUDIENCE}/{MANIFEST}"))


def mirror_blobs(driver: ExportDriver, destination: str) -> list[str]:
    return list(driver.raw.work.list_names(destination_prefix(destination)))


def by_hand(driver: ExportDriver, method: str, email: str, path: str = "", **body: Any) -> None:
    driver.api(method, f"/lists/{DEMO_AUDIENCE}/members/{subscriber_hash(email)}{path}", **body)


def listing(driver: ExportDriver, destination: str, with_mirror: AudienceMirror) -> dict[str, ExistingMember]:
    with make_client(driver.mailchimp) as client:
        return {m.email: m for m in decoded(with_mirror.members(destination, DEMO_AUDIENCE, client))}


def lines_of(driver: ExportDriver, destination: str, with_mirror: AudienceMirror) -> list[Any]:
    """What a read hands planning, as it hands it: a refreshed mirror's stored lines."""
    with make_client(driver.mailchimp) as client:
        return list(with_mirror.members(destination, DEMO_AUDIENCE, client))


def stored_parts(driver: ExportDriver, destination: str) -> dict[str, bytes]:
    """The parts of every stored version of the destination's mirror, by blob name."""
    return {name: driver.raw.work.read_bytes(name) for name in mirror_blobs(driver, destination)
            if name.endswith(".jsonl.gz")}


def with_mirror_of(driver: ExportDriver, chosen: AudienceMirror | None):
    """The driver's service with another mirror (None: every run reads the audience whole), for one block."""
    class Swap:
        def __enter__(self) -> None:
            self.saved = driver.service
            driver.service = dataclasses.replace(driver.service, mirror=chosen)

        def __exit__(self, *exc: object) -> None:
            driver.service = self.saved

    return Swap()


def preview(driver: ExportDriver, destination: str) -> Run:
    run_id = driver.service.start(destination, "http", dry_run=True).id
    driver.deliver_all()
    run = driver.run(run_id)
    assert run.status == "previewed", run.message
    return run


@dataclasses.dataclass
class Mirrored:
    destination: str
    snapshots: Snapshots
    tag: str  # the segment's tag


@pytest.fixture
def mirrored(driver: ExportDriver) -> Mirrored:
    """A fresh audience of 3,000 contacts and a destination exporting 200 of them, exported once (a full read, which
    writes the mirror) and once more (which reads what the first run changed)."""
    driver.reset_mailchimp()
    driver.reset_queues()
    fill_audience(driver, 3000)
    snapshots = Snapshots(driver, f"{SEGMENT}{uuid.uuid4().hex[:6]}")
    snapshots.write(rows(range(200)))
    destination = driver.create_destination(segments=[snapshots.segment], tagPrefix="Mirror: ")
    next_second()
    run, _ = export(driver, destination)
    snapshots.write(rows(range(200)))
    export(driver, destination)
    return Mirrored(destination, snapshots, run.segments[0].tag)


# --- what a run reads --------------------------------------------------------------------------------------------

def test_the_first_run_reads_the_audience_in_full_and_later_runs_only_what_changed(driver: ExportDriver) -> None:
    driver.reset_mailchimp()
    driver.reset_queues()
    fill_audience(driver, 30_000)
    snapshots = Snapshots(driver, f"{SEGMENT}{uuid.uuid4().hex[:6]}")
    people = rows(range(300)) + [(f"new{i}@contoso.com", "New", f"Person{i}") for i in range(50)]
    snapshots.write(people)
    destination = driver.create_destination(segments=[snapshots.segment], tagPrefix="Mirror: ")
    next_second()

    first, full = export(driver, destination)
    assert (first.counts["created"], first.counts["unchanged"], first.counts["tagged"]) == (50, 300, 350)
    assert full["members_read"] >= 30_000  # the whole audience: 30 pages and the archived contacts
    written = manifest(driver, destination)
    assert written["asOf"] == written["fullReadAt"] and written["counts"]["subscribed"] == 30_000

    # The first run created 50 contacts and tagged 350: the second run reads those changes and the tag's members.
    next_second()
    snapshots.write(people)
    second, changes = export(driver, destination)
    assert (second.counts["unchanged"], second.counts["tagged"], second.counts["created"]) == (350, 350, 0)
    assert 400 <= changes["members_read"] < 500
    assert manifest(driver, destination)["fullReadAt"] == written["fullReadAt"]  # no full read since

    # Nothing changed since: the third run costs a few calls, none returning a member. It keeps the version, and
    # quickly: a row memo is named to the second, and one written in the same second as the one before may leave it.
    next_second()
    snapshots.write(people)
    third, quiet = export(driver, destination)
    assert third.counts == second.counts
    assert quiet["members_read"] < 10  # a count call returns one contact (it asks for a page of one)
    calls = quiet["by_route"][MEMBERS_ROUTE]
    assert calls <= 9 and full["by_route"][MEMBERS_ROUTE] >= 3 * calls  # a count of changes, two listings and six
    # counts of statuses, against 30 pages and the archived contacts' count, page and count (33)
    assert len(mirror_blobs(driver, destination)) == 1 + 2 + 1  # the manifest, the one version's parts (no older one) and
    # the row memo


def test_a_refresh_that_finds_nothing_changed_keeps_the_version_and_hands_planning_the_same_lines(
        driver: ExportDriver, mirrored, caplog: pytest.LogCaptureFixture) -> None:
    destination = mirrored.destination
    by_hand(driver, "PATCH", contact(2500), json={"merge_fields": {"FNAME": "ByHand"}})
    next_second()  # the change a second before the refresh that reads it: the next one will not read it again
    merged = lines_of(driver, destination, mirror(driver))  # a new version, written with the change
    before, parts = manifest(driver, destination), stored_parts(driver, destination)

    with caplog.at_level(logging.INFO, logger="shared.audience_mirror"):
        kept = lines_of(driver, destination, mirror(driver))

    assert kept == merged  # the same lines to the byte, in the same order: planning digests them (the row memo)
    assert len(kept) == 3000 and all(isinstance(line, str) and line.endswith("\n") for line in kept)
    assert [(record.audienceVersionKept, record.audienceChanges) for record in caplog.records
            if hasattr(record, "audienceVersionKept")] == [(True, 0)]  # its log line says so
    after = manifest(driver, destination)
    assert stored_parts(driver, destination) == parts  # no part written, none deleted
    assert datetime.fromisoformat(after["asOf"]) > datetime.fromisoformat(before["asOf"])
    assert {**after, "asOf": before["asOf"]} == before  # the same version, fullReadAt, counts, tags and erasures mark


def test_a_runs_refresh_goes_on_while_the_run_waits_for_mailchimp_before_planning(driver: ExportDriver, mirrored,
                                                                                  monkeypatch) -> None:
    """The mirror's refresh (half a second of calls to Mailchimp at any size) starts once the run's checks of
    Mailchimp passed, beside the reads and calls that come before the rows (here: the run's tags, which wait for it),
    and is made once."""
    refreshes: list[str] = []
    refreshing = threading.Event()
    real_refresh, real_tags = AudienceMirror._refresh, MailchimpClient.ensure_tags

    def refresh(self: AudienceMirror, *args: Any, **kwargs: Any) -> Any:
        refreshes.append(threading.current_thread().name)
        refreshing.set()
        return real_refresh(self, *args, **kwargs)

    under_way: list[bool] = []

    def ensure_tags(self: MailchimpClient, *args: Any, **kwargs: Any) -> Any:
        under_way.append(refreshing.wait(10))
        return real_tags(self, *args, **kwargs)

    monkeypatch.setattr(AudienceMirror, "_refresh", refresh)
    monkeypatch.setattr(MailchimpClient, "ensure_tags", ensure_tags)
    mirrored.snapshots.write(rows(range(200)))
    run, _ = export(driver, mirrored.destination)
    assert under_way == [True] and len(refreshes) == 1 and refreshes[0] != threading.current_thread().name
    assert (run.counts["unchanged"], run.counts["tagged"]) == (200, 200)


@pytest.mark.parametrize("change", ["merge value", "tag"])
def test_a_refresh_that_finds_a_change_writes_a_new_version(driver: ExportDriver, mirrored, change: str) -> None:
    """A tag added by hand moves no `last_changed` in the local Mailchimp: the tag, read again, is the only change."""
    destination = mirrored.destination
    next_day(driver.mailchimp)
    before = manifest(driver, destination)
    if change == "tag":
        by_hand(driver, "POST", contact(2500), "/tags", json={"tags": [{"name": "Picked by hand", "status": "active"}]})
    else:
        by_hand(driver, "PATCH", contact(2500), json={"merge_fields": {"FNAME": "ByHand"}})
    next_second()  # a version is named to the second: one of the same second as the one before may leave it

    seen = listing(driver, destination, mirror(driver))

    assert (seen[contact(2500)].tags, seen[contact(2500)].merge_fields["FNAME"]) == (
        (("Picked by hand",), "First2500") if change == "tag" else ((), "ByHand"))
    after = manifest(driver, destination)
    assert after["version"] != before["version"] and after["fullReadAt"] == before["fullReadAt"]
    assert {name.split("/")[-2] for name in stored_parts(driver, destination)} == {after["version"]}  # the old one gone


def test_changes_by_hand_between_runs_are_seen_and_planned_as_a_full_read_plans_them(driver: ExportDriver,
                                                                                   mirrored) -> None:
    destination, snapshots = mirrored.destination, mirrored.snapshots
    unsubscribed, archived, renamed, untagged, tagged = (contact(i) for i in range(5))
    by_hand(driver, "PATCH", unsubscribed, json={"status": "unsubscribed"})  # an admin's: a write could undo it
    by_hand(driver, "DELETE", archived)
    by_hand(driver, "PATCH", renamed, json={"merge_fields": {"FNAME": "ByHand"}})
    tag = mirrored.tag
    by_hand(driver, "POST", untagged, "/tags", json={"tags": [{"name": tag, "status": "inactive"}]})
    by_hand(driver, "POST", tagged, "/tags", json={"tags": [{"name": "Picked by hand", "status": "active"}]})
    snapshots.write(rows(range(200)))
    before = manifest(driver, destination)

    seen = listing(driver, destination, mirror(driver))
    assert manifest(driver, destination)["fullReadAt"] == before["fullReadAt"]  # read through the mirror
    assert seen[unsubscribed].status == "unsubscribed" and seen[archived].status == "archived"
    assert seen[renamed].merge_fields["FNAME"] == "ByHand"
    assert tag not in seen[untagged].tags and set(seen[tagged].tags) == {tag, "Picked by hand"}

    with with_mirror_of(driver, mirror(driver)):
        through_mirror = preview(driver, destination)
    with with_mirror_of(driver, None):
        in_full = preview(driver, destination)
    assert through_mirror.counts == in_full.counts
    assert through_mirror.details["preview"] == in_full.details["preview"]
    assert (in_full.counts["updated"], in_full.counts["refused"], in_full.counts["tagged"]) == (1, 1, 199)

    run, _ = export(driver, destination)
    assert run.counts == in_full.counts
    now = {m["email_address"]: m for m in driver.members()}
    assert now[unsubscribed]["status"] == "unsubscribed"  # never subscribed again
    assert now[archived]["status"] == "archived"  # refused, left archived
    assert now[renamed]["merge_fields"]["FNAME"] == "First2"  # the segment's value again
    assert tag in {t["name"] for t in now[untagged]["tags"]}  # its tag back


@pytest.mark.parametrize("changed", [False, True], ids=["nothing-else-changed", "another-contact-changed"])
def test_a_contact_deleted_for_good_in_mailchimp_makes_the_run_read_in_full(driver: ExportDriver, mirrored,
                                                                          changed: bool,
                                                                          caplog: pytest.LogCaptureFixture) -> None:
    """Whether the refresh would have kept the stored version (nothing else changed) or merged a new one."""
    destination, snapshots = mirrored.destination, mirrored.snapshots
    next_day(driver.mailchimp)
    before = manifest(driver, destination)
    if changed:
        by_hand(driver, "PATCH", contact(2499), json={"merge_fields": {"FNAME": "ByHand"}})
    by_hand(driver, "POST", contact(2500), "/actions/delete-permanent")  # no listing shows it any more
    snapshots.write(rows(range(200)))
    with caplog.at_level(logging.INFO, logger="shared.audience_mirror"):
        _, stats = export(driver, destination)
    assert "the mirror's counts differ from Mailchimp's (subscribed 3,000 here, 2,999 in Mailchimp)" in caplog.text
    assert stats["members_read"] >= 2999
    after = manifest(driver, destination)
    assert after["fullReadAt"] > before["fullReadAt"] and after["counts"]["subscribed"] == 2999
    assert contact(2500) not in listing(driver, destination, mirror(driver))


def test_a_mirror_last_read_in_full_longer_ago_than_the_setting_is_read_in_full_again(
        driver: ExportDriver, mirrored, caplog: pytest.LogCaptureFixture) -> None:
    destination, snapshots = mirrored.destination, mirrored.snapshots
    with with_mirror_of(driver, mirror(driver, max_age=timedelta(hours=6))):
        name = f"{destination_prefix(destination)}{DEMO_AUDIENCE}/{MANIFEST}"
        aged = manifest(driver, destination)
        aged["fullReadAt"] = (datetime.fromisoformat(aged["fullReadAt"]) - timedelta(hours=5)).isoformat()
        driver.raw.work.write_bytes(name, json.dumps(aged).encode())
        snapshots.write(rows(range(200)))
        _, stats = export(driver, destination)
        assert stats["members_read"] < 3000  # five hours: still read through the mirror

        aged = manifest(driver, destination)
        aged["fullReadAt"] = (datetime.fromisoformat(aged["fullReadAt"]) - timedelta(hours=7)).isoformat()
        driver.raw.work.write_bytes(name, json.dumps(aged).encode())
        snapshots.write(rows(range(200)))
        with caplog.at_level(logging.INFO, logger="shared.audience_mirror"):
            _, stats = export(driver, destination)
    assert "more than AUDIENCE_MIRROR_MAX_AGE_HOURS (6)" in caplog.text
    assert stats["members_read"] >= 3000
    assert datetime.fromisoformat(manifest(driver, destination)["fullReadAt"]) > datetime.now(UTC) - timedelta(minutes=5)


def test_with_the_default_setting_a_daily_refresh_reads_changes_and_a_week_on_reads_in_full(
        driver: ExportDriver, mirrored, caplog: pytest.LogCaptureFixture) -> None:
    """The maximum age the app's own mirror gets from the default settings: a daily refresh comes a little more than
    24 h after the last full read, and must still read only what changed; once that is more than a week old, in full.
    (Without the app's clock margin: the test's contacts were all changed minutes ago.)"""
    destination, snapshots = mirrored.destination, mirrored.snapshots
    name = f"{destination_prefix(destination)}{DEMO_AUDIENCE}/{MANIFEST}"

    def last_read_in_full(ago: timedelta) -> None:
        aged = manifest(driver, destination)
        aged["fullReadAt"] = (datetime.now(UTC) - ago).isoformat()
        driver.raw.work.write_bytes(name, json.dumps(aged).encode())

    default_age = driver.app.exports.mirror._max_age  # as start-up made it from the default settings
    with with_mirror_of(driver, mirror(driver, max_age=default_age)):
        last_read_in_full(timedelta(hours=25))
        snapshots.write(rows(range(200)))
        _, stats = export(driver, destination)
        assert stats["members_read"] < 3000  # read through the mirror

        last_read_in_full(timedelta(days=7, hours=1))
        snapshots.write(rows(range(200)))
        with caplog.at_level(logging.INFO, logger="shared.audience_mirror"):
            _, stats = export(driver, destination)
    assert stats["members_read"] >= 3000
    assert "more than AUDIENCE_MIRROR_MAX_AGE_HOURS (168)" in caplog.text


def _garbage_manifest(driver: ExportDriver, folder: str, written: dict[str, Any]) -> None:
    driver.raw.work.write_bytes(folder + MANIFEST, b"{not json")


def _other_format(driver: ExportDriver, folder: str, written: dict[str, Any]) -> None:
    driver.raw.work.write_bytes(folder + MANIFEST, json.dumps({**written, "format": 99}).encode())


def _rewrite_part(driver: ExportDriver, folder: str, written: dict[str, Any], how: Callable[[bytes], bytes]) -> None:
    """The (one) stored part replaced by `how(its bytes)`."""
    name = f"{folder}{written['version']}/part-00.jsonl.gz"
    driver.raw.work.write_bytes(name, how(driver.raw.work.read_bytes(name)))


def _garbage_part(driver: ExportDriver, folder: str, written: dict[str, Any]) -> None:
    _rewrite_part(driver, folder, written, lambda data: b"\x1f\x8b not gzip")


def _crc_wrong(driver: ExportDriver, folder: str, written: dict[str, Any]) -> None:
    """Every contact can be read: only the end of the part shows the damage."""
    _rewrite_part(driver, folder, written, lambda data: data[:-8] + bytes([data[-8] ^ 1]) + data[-7:])


def _last_bucket_cut(driver: ExportDriver, folder: str, written: dict[str, Any]) -> None:
    _rewrite_part(driver, folder, written, lambda data: gzip.compress(gzip.decompress(data)[:-1]))


def _contact_dropped(driver: ExportDriver, folder: str, written: dict[str, Any]) -> None:
    _rewrite_part(driver, folder, written, lambda data: gzip.compress(gzip.decompress(data).split(b"\n", 1)[1]))


def _part_gone(driver: ExportDriver, folder: str, written: dict[str, Any]) -> None:
    driver.raw.work.delete_prefix(f"{folder}{written['version']}/")


def _counts_lie(driver: ExportDriver, folder: str, written: dict[str, Any]) -> None:
    counts = {**written["counts"], "subscribed": written["counts"]["subscribed"] + 1}
    driver.raw.work.write_bytes(folder + MANIFEST, json.dumps({**written, "counts": counts}).encode())


def _digest_too(damage: Callable[[ExportDriver, str, dict[str, Any]], None]) -> Callable[[ExportDriver, str, dict[str, Any]], None]:
    """`damage`, with the manifest's digest of the part made to match the damaged bytes (a part written wrong, not
    damaged since): the checks past the digest find it."""
    def damaged_as_written(driver: ExportDriver, folder: str, written: dict[str, Any]) -> None:
        damage(driver, folder, written)
        data = driver.raw.work.read_bytes(f"{folder}{written['version']}/part-00.jsonl.gz")
        driver.raw.work.write_bytes(folder + MANIFEST, json.dumps({**written, "digests": [_part_digest(data)]}).encode())
    damaged_as_written.__name__ = f"{damage.__name__}_digest_too"
    return damaged_as_written


# `changed`: whether a contact changed since the mirror was written. Either way the refresh checks each stored part
# by its digest (downloaded while Mailchimp is asked what changed) before planning gets a contact; a part damaged
# but matching its digest is then found as the refresh merges the parts (a kept version's counts are the manifest's,
# compared with Mailchimp's).
NOT_AS_WRITTEN = "unusable: part 0 is not as it was written (its digest differs)"


@pytest.mark.parametrize("damage, says, changed", [
    (_garbage_manifest, "unusable: its manifest cannot be read (JSONDecodeError)", False),
    (_other_format, "unusable: its manifest is not of format 2", False),
    (_part_gone, "unusable: a part cannot be read (ResourceNotFoundError)", True),
    (_part_gone, "unusable: a part cannot be read (ResourceNotFoundError)", False),
    (_counts_lie, "unusable: its parts do not hold the contacts its manifest counts", True),
    (_counts_lie, "read in full (the mirror's counts differ from Mailchimp's (subscribed", False),
    *[(damage, NOT_AS_WRITTEN, changed) for damage in (_garbage_part, _crc_wrong, _last_bucket_cut, _contact_dropped)
      for changed in (False, True)],
    (_digest_too(_garbage_part), "unusable: a part cannot be read (BadGzipFile)", True),
    (_digest_too(_crc_wrong), "unusable: a part cannot be read (BadGzipFile)", True),
    (_digest_too(_last_bucket_cut), "unusable: a part holds 63 buckets instead of 64", True),
    (_digest_too(_contact_dropped), "unusable: its parts do not hold the contacts its manifest counts", True),
])
def test_a_damaged_mirror_is_read_again_in_full_and_the_run_succeeds(driver: ExportDriver, mirrored, damage, says,
                                                                     changed: bool,
                                                                     caplog: pytest.LogCaptureFixture) -> None:
    destination, snapshots = mirrored.destination, mirrored.snapshots
    folder = f"{destination_prefix(destination)}{DEMO_AUDIENCE}/"
    next_day(driver.mailchimp)
    if changed:
        by_hand(driver, "PATCH", contact(2500), json={"merge_fields": {"FNAME": "ByHand"}})
    damage(driver, folder, manifest(driver, destination))
    snapshots.write(rows(range(200)))
    with caplog.at_level(logging.INFO, logger="shared.audience_mirror"):
        run, stats = export(driver, destination)
    assert run.status == "succeeded" and run.counts["unchanged"] == 200
    assert f"audience {DEMO_AUDIENCE} of destination {destination} {says}" in caplog.text
    assert stats["members_read"] >= 3000
    assert manifest(driver, destination)["format"] == 2  # written anew: the next run reads through it again
    snapshots.write(rows(range(200)))
    _, stats = export(driver, destination)
    assert stats["members_read"] < 3000


def test_with_the_setting_at_0_there_is_no_mirror(storage, mailchimp_server):
    assert ExportDriver(storage, mailchimp_server).app.exports.mirror is not None
    assert ExportDriver(storage, mailchimp_server, AUDIENCE_MIRROR_MAX_AGE_HOURS="0").app.exports.mirror is None


# --- personal data ---------------------------------------------------------------------------------------------

def test_deleting_a_destination_deletes_its_mirror(driver: ExportDriver, mirrored) -> None:
    destination = mirrored.destination
    other = driver.create_destination(segments=[mirrored.snapshots.segment], tagPrefix="Other: ")
    listing(driver, other, mirror(driver))
    assert mirror_blobs(driver, destination) and mirror_blobs(driver, other)
    driver.app.destinations.delete(destination)
    assert mirror_blobs(driver, destination) == [] and mirror_blobs(driver, other)


def test_an_erasure_deletes_every_mirror(driver: ExportDriver, mirrored) -> None:
    destination = mirrored.destination
    assert mirror_blobs(driver, destination)
    erasure, _ = driver.app.erasures.request([contact(7)], "tester")
    driver.app.erasures.process(erasure.id)
    assert list(driver.raw.work.list_names(MIRRORS_PREFIX)) == []
    assert contact(7) not in listing(driver, destination, mirror(driver))  # read in full: Mailchimp forgot them


class DeletingWhileListed:
    """The real client, but once the audience listing has begun, `meanwhile` runs (say, an erasure processed)."""

    def __init__(self, client: Any, meanwhile: Any) -> None:
        self._client, self._meanwhile = client, meanwhile

    def __getattr__(self, name: str) -> Any:
        return getattr(self._client, name)

    def iter_audience(self, list_id: str) -> Any:
        for n, member in enumerate(self._client.iter_audience(list_id)):
            yield member
            if n == 0:
                self._meanwhile()


def read_in_full_while(driver: ExportDriver, destination: str, meanwhile: Any) -> list[str]:
    """What a run of `destination` (no mirror yet) lists while `meanwhile` happens part-way through its full read."""
    with make_client(driver.mailchimp) as client:
        return [m.email for m in mirror(driver).members(destination, DEMO_AUDIENCE, DeletingWhileListed(client, meanwhile))]


def test_an_erasure_while_a_run_reads_the_audience_leaves_no_mirror_holding_the_person(driver: ExportDriver,
                                                                                       mirrored) -> None:
    """The run read the person before Mailchimp forgot them; its mirror, written after the erasure deleted every
    mirror, would have stored them again (shared/audience_mirror.py: the deletions mark)."""
    reader = driver.create_destination(segments=[mirrored.snapshots.segment], tagPrefix="Reader: ")

    def erase() -> None:
        erasure, _ = driver.app.erasures.request([contact(7)], "tester")
        driver.app.erasures.process(erasure.id)

    listed = read_in_full_while(driver, reader, erase)
    assert contact(7) in listed  # read before the erasure: the race this test is about did happen
    assert list(driver.raw.work.list_names(MIRRORS_PREFIX)) == []
    assert contact(7) not in listing(driver, reader, mirror(driver))  # the next read is whole, and Mailchimp forgot


def test_deleting_a_destination_while_its_run_reads_the_audience_leaves_no_mirror_of_it(driver: ExportDriver,
                                                                                          mirrored) -> None:
    doomed = driver.create_destination(segments=[mirrored.snapshots.segment], tagPrefix="Doomed: ")
    assert read_in_full_while(driver, doomed, lambda: driver.app.destinations.delete(doomed))
    assert mirror_blobs(driver, doomed) == []
    assert mirror_blobs(driver, mirrored.destination)  # another destination's mirror is left as it was


class DeletingWhileRefreshed(DeletingWhileListed):
    """Or as a refresh asks for the tags, its first call (the destination deleted: its deletions mark changes first)."""

    def list_tag_details(self, list_id: str) -> Any:
        self._meanwhile()
        return self._client.list_tag_details(list_id)


def test_a_refresh_that_finds_nothing_changed_rewrites_no_manifest_when_a_deletions_mark_moved_during_it(
        driver: ExportDriver, mirrored, caplog: pytest.LogCaptureFixture) -> None:
    destination = mirrored.destination
    next_day(driver.mailchimp)
    stored = {name: driver.raw.work.read_bytes(name) for name in mirror_blobs(driver, destination)}
    with make_client(driver.mailchimp) as client, caplog.at_level(logging.INFO, logger="shared.audience_mirror"):
        deleting = DeletingWhileRefreshed(client, lambda: note_mirrors_deleted(driver.raw.work, destination))
        listed = decoded(mirror(driver).members(destination, DEMO_AUDIENCE, deleting))
    assert len(listed) == 3000 and "nothing changed: its version kept" in caplog.text  # the run has its contacts
    assert "not kept: mirrors were deleted" in caplog.text
    # The manifest as it was (its asOf too), and the parts left to the deletion that moved the mark.
    assert {name: driver.raw.work.read_bytes(name) for name in mirror_blobs(driver, destination)} == stored


def test_planning_takes_the_deletions_marks_before_it_reads_the_destination(driver: ExportDriver, mirrored) -> None:
    """A deletion after the run read the destination (and got its client) must find the run holding the marks from
    before it, however long the rows take to read before the audience (shared/audience_mirror.py)."""
    steps: list[tuple[str, Any]] = []
    saved = driver.service

    class Mirror:
        def __getattr__(self, name: str) -> Any:
            return getattr(saved.mirror, name)

        def marks(self, destination_id: str) -> Any:
            taken = saved.mirror.marks(destination_id)
            steps.append(("marks", taken))
            return taken

        def members(self, *args: Any, **kwargs: Any) -> Any:
            steps.append(("members", args[4] if len(args) > 4 else kwargs.get("marks")))
            return saved.mirror.members(*args, **kwargs)

    class Destinations:
        def __getattr__(self, name: str) -> Any:
            return getattr(saved.destinations, name)

        def get(self, destination_id: str) -> Any:
            steps.append(("destination", destination_id))
            return saved.destinations.get(destination_id)

    mirrored.snapshots.write(rows(range(200)))
    run_id = driver.start(mirrored.destination)
    driver.service = dataclasses.replace(saved, mirror=Mirror(), destinations=Destinations())
    try:
        driver.deliver_one(driver.plan_queue)
    finally:
        driver.service = saved
    driver.deliver_all()
    # The module's driver keeps its erasure ledger, so a row an earlier test erased is refused: with errors, then.
    assert driver.run(run_id).status in ("succeeded", "completed_with_errors")
    kinds = [kind for kind, _ in steps]
    assert kinds.index("marks") < kinds.index("destination") < kinds.index("members"), kinds
    taken = next(value for kind, value in steps if kind == "marks")
    assert next(value for kind, value in steps if kind == "members") is taken  # those very marks, not taken again


def test_deleting_a_destination_changes_the_deletions_mark_before_it_deletes_the_mirrors(driver: ExportDriver, mirrored,
                                                                                          monkeypatch) -> None:
    """In that order (see the erasure's own test in tests/unit/test_erasures.py)."""
    files, done = driver.app.destinations._run_files, []

    class Recording:
        def __getattr__(self, name: str) -> Any:
            return getattr(files, name)

        def write_bytes(self, name: str, data: bytes) -> None:
            done.append(("write", name))
            files.write_bytes(name, data)

        def delete_prefix(self, prefix: str) -> None:
            done.append(("delete", prefix))
            files.delete_prefix(prefix)

    monkeypatch.setattr(driver.app.destinations, "_run_files", Recording())
    driver.app.destinations.delete(mirrored.destination)
    mark = f"{DESTINATION_MARKS}{mirrored.destination}.json"
    assert done.index(("write", mark)) < done.index(("delete", destination_prefix(mirrored.destination)))


def test_the_retention_sweep_deletes_mirrors_no_run_wrote_for_the_personal_data_period(driver: ExportDriver,
                                                                                        mirrored) -> None:
    destination = mirrored.destination
    assert driver.app.retention.sweep().mirrors == 0 and mirror_blobs(driver, destination)
    later = datetime.now(UTC) + timedelta(days=driver.settings.retention_personal_days, minutes=1)
    assert driver.app.retention.sweep(later).mirrors >= 1
    assert mirror_blobs(driver, destination) == []


def backdate(driver: ExportDriver, destination: str, days: int) -> None:
    """The destination's mirror as a run `days` ago would have left it: its version named for then (the parts moved
    there), its asOf and fullReadAt then."""
    folder = f"{destination_prefix(destination)}{DEMO_AUDIENCE}/"
    written = manifest(driver, destination)
    as_of, full_read_at = (datetime.fromisoformat(written[key]) - timedelta(days=days)
                           for key in ("asOf", "fullReadAt"))
    version = f"v{as_of.strftime('%Y%m%dT%H%M%SZ')}-{uuid.uuid4().hex[:8]}"
    for name, data in stored_parts(driver, destination).items():
        if name.startswith(f"{folder}{written['version']}/"):  # not an older version's parts, of the same names,
            # which an earlier refresh may have left for a later run to delete
            driver.raw.work.write_bytes(f"{folder}{version}/{name.rsplit('/', 1)[1]}", data)
    driver.raw.work.delete_prefix(f"{folder}{written['version']}/")
    driver.raw.work.write_bytes(folder + MANIFEST, json.dumps({**written, "version": version, "asOf": as_of.isoformat(),
                                                               "fullReadAt": full_read_at.isoformat()}).encode())


def test_the_retention_sweep_keeps_a_mirror_whose_old_version_a_refresh_found_unchanged(driver: ExportDriver,
                                                                                        mirrored) -> None:
    """Such a refresh keeps the version, named for the day it was written, and moves only the manifest's asOf."""
    days = driver.settings.retention_personal_days + 1
    confirmed, aged = mirrored.destination, driver.create_destination(segments=[mirrored.snapshots.segment],
                                                                      tagPrefix="Aged: ")
    listing(driver, aged, mirror(driver))  # its own mirror, read in full
    for destination in (confirmed, aged):
        backdate(driver, destination, days)
    driver.mailchimp.admin("POST", f"lists/{LIST}/age", json={"seconds": (days + 1) * 86400})  # nothing changed since
    version = manifest(driver, confirmed)["version"]
    listing(driver, confirmed, mirror(driver, max_age=timedelta(days=days + 1)))
    assert manifest(driver, confirmed)["version"] == version  # kept: its name as old as it was

    assert driver.app.retention.sweep().mirrors >= 1
    assert mirror_blobs(driver, aged) == []  # its manifest's asOf is as old as its version
    assert stored_parts(driver, confirmed) and manifest(driver, confirmed)["version"] == version


# --- the property: the mirror lists what a full read lists ----------------------------------------------------

POOL = [f"p{i:02d}@contoso.com" for i in range(10)]  # the contacts the changes are made to
# Contacts nobody changes, so that the changes and the members of the tags to read again (at most 8 + 3 x 10) stay
# fewer than the audience holds: the mirror is always refreshed, never read in full for being cheaper so.
BYSTANDERS = 40
TAGS = ("Alpha", "Beta", "Gamma")
OPERATIONS = ("create", "fields", "tag", "untag", "unsubscribe", "archive", "clean", "delete")


def change(mailchimp: LocalMailchimp, operation: str, email: str, n: int) -> bool:
    """One change made in Mailchimp as a person or another integration would; True when it deleted a contact for good.
    Changes Mailchimp refuses (archiving a pending contact, updating a deleted one...) are simply not made."""
    member = f"{mailchimp.api_root}/lists/{LIST}/members/{subscriber_hash(email)}"
    tag = TAGS[n % len(TAGS)]
    calls = {
        "create": ("PUT", member, {"email_address": email, "status_if_new": ("subscribed", "pending")[n % 2],
                                   "merge_fields": {"FNAME": f"N{n}"}}),
        "fields": ("PATCH", member, {"merge_fields": {"LNAME": f"L{n}"}}),
        "tag": ("POST", f"{member}/tags", {"tags": [{"name": tag, "status": "active"}]}),
        "untag": ("POST", f"{member}/tags", {"tags": [{"name": tag, "status": "inactive"}]}),
        "unsubscribe": ("PATCH", member, {"status": "unsubscribed"}),
        "archive": ("DELETE", member, None),
        "delete": ("POST", f"{member}/actions/delete-permanent", None),
    }
    if operation == "clean":
        put_member(mailchimp, email, "cleaned")
        return False
    method, url, body = calls[operation]
    answer = requests.request(method, url, json=body, auth=("tester", KEY), timeout=10)
    return operation == "delete" and answer.status_code == 204


@pytest.fixture(scope="module")
def store(storage) -> BlobFolder:
    work = BlobFolder(BlobServiceClient.from_connection_string(storage.connection_string)
                      .get_container_client("mirror-property"))
    work.ensure()
    return work


def folded(members) -> dict[str, tuple]:
    """A listing as planning folds it (the last read of an address wins), tags in any order."""
    return {m.email: (m.status, m.merge_fields, sorted(m.tags)) for m in members}


@settings(max_examples=10, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                                 HealthCheck.too_slow])
@given(rounds=st.lists(st.lists(st.tuples(st.sampled_from(OPERATIONS), st.sampled_from(POOL), st.integers(0, 5)),
                                max_size=8), min_size=1, max_size=3))
def test_for_any_changes_between_refreshes_the_mirror_lists_what_a_full_read_lists(mailchimp_server, store, rounds):
    mailchimp_server.reset()
    for i, email in enumerate(POOL[:8]):
        put_member(mailchimp_server, email, ("subscribed", "unsubscribed", "pending", "transactional")[i % 4],
                   merge_fields={"FNAME": f"F{i}"}, tags=[TAGS[i % 2]], archived=i == 7)
    bystanders = [{"email_address": f"b{i:02d}@contoso.com", "status": "subscribed"} for i in range(BYSTANDERS)]
    requests.post(f"{mailchimp_server.api_root}/lists/{LIST}", json={"members": bystanders, "update_existing": False},
                  auth=("tester", KEY), timeout=10).raise_for_status()
    audience = AudienceMirror(store, DAY, margin=timedelta(0))
    destination = uuid.uuid4().hex[:12]
    name = f"{destination_prefix(destination)}{LIST}/{MANIFEST}"
    with make_client(mailchimp_server) as client:
        assert folded(decoded(audience.members(destination, LIST, client))) == folded(client.iter_audience(LIST))
        for changes in rounds:
            full_read_at = json.loads(store.read_bytes(name))["fullReadAt"]
            next_day(mailchimp_server)
            deleted = [change(mailchimp_server, operation, email, n) for operation, email, n in changes]
            listed = decoded(audience.members(destination, LIST, client))
            assert len({m.email for m in listed}) == len(listed)  # one per address
            assert folded(listed) == folded(client.iter_audience(LIST))
            if not any(deleted):  # only a contact deleted for good makes a full read here
                assert json.loads(store.read_bytes(name))["fullReadAt"] == full_read_at
