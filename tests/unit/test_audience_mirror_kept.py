"""A refresh that finds nothing changed keeps the stored version (shared/audience_mirror.py, `_keep`), with in-memory
stand-ins for the work container and Mailchimp (tests/unit/test_audience_mirror.py): what the local Mailchimp cannot
show (a tag deleted), contacts whose values hold tabs and line breaks, several parts, storage failing, and the
retention sweep going by the manifest's asOf. tests/integration/test_audience_mirror.py has the real ones."""
from __future__ import annotations

import json
import logging
from datetime import UTC, datetime, timedelta
from typing import Iterator, Sequence

import pytest

from shared import audience_mirror
from shared.audience_mirror import MANIFEST, AudienceMirror, destination_prefix, sweep_mirrors
from shared.mailchimp.upsert import ALL_STATUSES
from shared.members import ExistingMember, contact_line, member_line
from tests.unit.test_audience_mirror import Audience, Store, mirror_blobs

FOLDER = f"{destination_prefix('d1')}list1/"
ODD = {"FNAME": "tab\there", "LNAME": "break\nthere\rand\u2028\u2029\x85\x0b\x0c\x1c", "NOTE": "\tsubscribed\t"}


class Changing(Audience):
    """The stand-in audience with `odd@x.com`, whose values hold tabs and every character a line could be split at,
    and `changed`: the contacts Mailchimp lists as changed since the last refresh (none: nothing changed)."""

    def __init__(self, tags: dict[str, list[str]]) -> None:
        super().__init__(tags)
        self.contacts["odd@x.com"] = ExistingMember("odd@x.com", "subscribed", ODD, ())
        self.changed: list[ExistingMember] = []

    def iter_members(self, list_id: str, *, fields: Sequence[str] = (), status: str | None = None,
                     since_last_changed: datetime | None = None) -> Iterator[ExistingMember]:
        return iter(self.changed if since_last_changed and status is None else [])

    def count_members(self, list_id: str, status: str | None = None,
                      since_last_changed: datetime | None = None) -> int:
        return len(self.changed) if since_last_changed else super().count_members(list_id, status)

    def change(self, email: str, **merge_fields: str) -> None:
        self.contacts[email] = ExistingMember(email, "subscribed", merge_fields, ())
        self.changed = [self._member(email)]


def manifest(store: Store) -> dict:
    return json.loads(store[FOLDER + MANIFEST])


@pytest.fixture
def several_parts(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(audience_mirror, "PART_CONTACTS", 2)  # a part every 2 contacts: several parts


def test_a_line_counts_once_for_its_status_however_its_values_hold_tabs_and_line_breaks():
    line = contact_line("odd@x.com", "subscribed", ODD, ["\tpending\t", "tab\ttag"])
    assert line.count("\t") == 2 and line.count("\n") == 1 and line.endswith("\n")
    assert {status: line.count(f"\t{status}\t") for status in ALL_STATUSES} == {
        status: int(status == "subscribed") for status in ALL_STATUSES}


@pytest.mark.usefixtures("several_parts")
def test_nothing_changed_keeps_the_version_and_yields_the_lines_a_new_version_would():
    store = Store()
    mirror = AudienceMirror(store, timedelta(hours=24))
    audience = Changing({"Kept": ["a@x.com", "odd@x.com"]})
    assert len(list(mirror.members("d1", "list1", audience))) == 4  # read in full, the mirror written
    audience.change("b@x.com", FNAME="Changed")
    merged = list(mirror.members("d1", "list1", audience))  # merged into a new version: 3 parts (22, 21, 21 buckets)
    written = manifest(store)
    parts = {name: data for name, data in store.items() if name.startswith(FOLDER + written["version"])}
    assert written["parts"] == 3 and len(parts) == 3
    audience.changed = []

    kept = list(mirror.members("d1", "list1", audience))

    assert kept == merged  # to the byte, in bucket order, across the parts
    assert member_line(audience._member("odd@x.com")) in kept and member_line(audience._member("b@x.com")) in kept
    assert {name: data for name, data in store.items() if name.startswith(FOLDER + written["version"])} == parts
    assert {**manifest(store), "asOf": written["asOf"]} == written and manifest(store)["asOf"] > written["asOf"]


def test_a_tag_deleted_in_mailchimp_is_a_change_though_no_tag_is_read_again():
    store = Store()
    mirror = AudienceMirror(store, timedelta(hours=24))
    audience = Changing({"Kept": ["a@x.com"], "Deleted": ["b@x.com"]})
    list(mirror.members("d1", "list1", audience))
    version = manifest(store)["version"]
    audience.tags = [tag for tag in audience.tags if tag.name != "Deleted"]
    del audience.carried["Deleted"]

    lines = {line.split("\t", 1)[0]: line for line in mirror.members("d1", "list1", audience)}

    assert "Deleted" not in lines["b@x.com"] and '"Kept"' in lines["a@x.com"]
    assert manifest(store)["version"] != version


@pytest.mark.usefixtures("several_parts")
@pytest.mark.parametrize("changed", [False, True])
def test_a_second_part_damaged_is_found_before_a_contact_is_yielded(caplog: pytest.LogCaptureFixture, changed: bool):
    """The first part is whole: yielding its contacts before the second part is checked would leave no way back;
    whether the stored version would be kept or merged with a change."""
    store = Store()
    mirror = AudienceMirror(store, timedelta(hours=24))
    audience = Changing({})
    list(mirror.members("d1", "list1", audience))
    second = next(name for name in store if name.endswith("part-01.jsonl.gz"))
    store[second] = store[second][:-8] + bytes([store[second][-8] ^ 1]) + store[second][-7:]  # its CRC wrong
    if changed:
        audience.change("b@x.com", FNAME="Changed")
    with caplog.at_level(logging.WARNING, logger="shared.audience_mirror"):
        listed = list(mirror.members("d1", "list1", audience))
    assert all(isinstance(member, ExistingMember) for member in listed) and len(listed) == 4  # read in full
    assert "unusable: part 1 is not as it was written (its digest differs)" in caplog.text
    assert manifest(store)["fullReadAt"] == manifest(store)["asOf"]  # written anew by the full read


def test_a_manifest_that_cannot_be_written_leaves_the_run_its_contacts(caplog: pytest.LogCaptureFixture):
    class ManifestUnwritable(Store):
        armed = False

        def write_bytes(self, name: str, data: bytes) -> None:
            if self.armed and name.endswith(MANIFEST):
                raise OSError("storage did not answer")
            super().write_bytes(name, data)

    store = ManifestUnwritable()
    mirror = AudienceMirror(store, timedelta(hours=24))
    audience = Changing({})
    list(mirror.members("d1", "list1", audience))
    written = dict(store)
    store.armed = True
    with caplog.at_level(logging.WARNING, logger="shared.audience_mirror"):
        assert len(list(mirror.members("d1", "list1", audience))) == 4
    assert "kept without its new asOf (OSError)" in caplog.text and dict(store) == written


def test_the_retention_sweep_goes_by_the_manifest_s_asof_once_the_version_is_old():
    store = Store()
    audience = Changing({})
    mirror = AudienceMirror(store, timedelta(hours=24))
    list(mirror.members("d1", "list1", audience))
    now = datetime.now(UTC)
    later = now + timedelta(days=30)
    assert sweep_mirrors(store, now - timedelta(days=1)) == 0  # its version is recent
    store[FOLDER + MANIFEST] = json.dumps({**manifest(store), "asOf": later.isoformat()}).encode()
    assert sweep_mirrors(store, later) == 0 and mirror_blobs(store)  # the version is older, the manifest's asOf not
    store[FOLDER + MANIFEST] = b"{not json"
    assert sweep_mirrors(store, later) == 1 and mirror_blobs(store) == []  # a manifest that cannot be read keeps none


def test_a_kept_version_deletes_older_versions_a_failed_deletion_left():
    """Older versions are deleted after a switch; one a storage error left behind goes at the next refresh, kept or
    not, rather than outliving the retention sweep, which a mirror kept fresh never meets."""
    store = Store()
    mirror = AudienceMirror(store, timedelta(hours=24))
    audience = Changing({"Kept": ["a@x.com"]})
    list(mirror.members("d1", "list1", audience))
    version = manifest(store)["version"]
    left = f"{FOLDER}v20200101T000000Z-00000000/part-00.jsonl.gz"
    store.write_bytes(left, b"a version a failed deletion left")

    list(mirror.members("d1", "list1", audience))  # nothing changed: the version kept

    assert manifest(store)["version"] == version and left not in store
    assert any(name.startswith(f"{FOLDER}{version}/") for name in store)


def _stored_parts(store: Store) -> list[str]:
    version = manifest(store)["version"]
    return sorted(name for name in store if name.startswith(FOLDER + version))


@pytest.mark.usefixtures("several_parts")
def test_every_manifest_records_the_digest_of_each_part_as_stored():
    """Written by a full read, a merge and a kept version alike: a kept version is checked by these alone."""
    store = Store()
    mirror = AudienceMirror(store, timedelta(hours=24))
    audience = Changing({"Kept": ["a@x.com"]})
    for change in (None, None, "b@x.com", None):  # read in full, kept, merged, kept
        if change:
            audience.change(change, FNAME="Changed")
        list(mirror.members("d1", "list1", audience))
        audience.changed = []
        written = manifest(store)
        assert written["parts"] >= 2
        assert written["digests"] == [audience_mirror._part_digest(store[name]) for name in _stored_parts(store)]


@pytest.mark.usefixtures("several_parts")
@pytest.mark.parametrize("digests", ["none", "one too few", "one too many", None, 5, "a string"])
def test_a_manifest_without_a_digest_for_each_part_is_read_in_full(digests, caplog: pytest.LogCaptureFixture):
    store = Store()
    mirror = AudienceMirror(store, timedelta(hours=24))
    audience = Changing({})
    list(mirror.members("d1", "list1", audience))
    doc = manifest(store)
    if digests == "none":
        del doc["digests"]
    else:
        doc["digests"] = (doc["digests"][:-1] if digests == "one too few" else doc["digests"] + ["0"]
                          if digests == "one too many" else "x" * doc["parts"] if digests == "a string" else digests)
    store[FOLDER + MANIFEST] = json.dumps(doc).encode()
    with caplog.at_level(logging.WARNING, logger="shared.audience_mirror"):
        listed = list(mirror.members("d1", "list1", audience))
    assert len(listed) == 4 and all(isinstance(member, ExistingMember) for member in listed)  # read in full
    assert "audience mirror of audience list1 of destination d1 unusable: " in caplog.text


@pytest.mark.usefixtures("several_parts")
@pytest.mark.parametrize("changed", [False, True])
def test_the_stored_parts_are_fetched_while_mailchimp_is_asked_what_changed(changed: bool):
    """A refresh's Mailchimp calls and the download of the stored version overlap: its parts never change, and the
    calls are most of a refresh's wait before planning (kept or merged, the lines are the same as before)."""
    import threading

    fetched = threading.Event()

    class Fetching(Store):
        def read_bytes(self, name: str) -> bytes:
            if name.endswith(".jsonl.gz"):
                fetched.set()
            return super().read_bytes(name)

    class Asking(Changing):
        refreshing = False
        overlapped: list[bool] = []

        def list_tag_details(self, list_id: str):
            if self.refreshing:
                self.overlapped.append(fetched.wait(timeout=10))  # set only by a download running meanwhile
            return super().list_tag_details(list_id)

    store = Fetching()
    mirror = AudienceMirror(store, timedelta(hours=24))
    audience = Asking({"Kept": ["a@x.com"]})
    full = list(mirror.members("d1", "list1", audience))
    fetched.clear()
    audience.refreshing = True
    if changed:
        audience.change("b@x.com", FNAME="Changed")
    refreshed = list(mirror.members("d1", "list1", audience))
    assert audience.overlapped == [True]
    expected = {member_line(audience._member(member.email)) for member in full}
    assert set(refreshed) == expected and all(isinstance(line, str) for line in refreshed)



def test_an_error_from_mailchimp_does_not_wait_for_the_stored_parts():
    """The parts are fetched beside Mailchimp's calls; when Mailchimp answers with an error, the run hears of it at
    once, not after a download (or storage's timeouts) it no longer needs."""
    import threading
    import time

    release = threading.Event()

    class Slow(Store):
        def read_bytes(self, name: str) -> bytes:
            if name.endswith(".jsonl.gz"):
                release.wait(timeout=30)
            return super().read_bytes(name)

    class Refusing(Changing):
        refusing = False

        def list_tag_details(self, list_id: str):
            if self.refusing:
                raise RuntimeError("Mailchimp said no")
            return super().list_tag_details(list_id)

    store = Slow()
    mirror = AudienceMirror(store, timedelta(hours=24))
    audience = Refusing({})
    list(mirror.members("d1", "list1", audience))
    audience.refusing = True
    started = time.monotonic()
    try:
        with pytest.raises(RuntimeError, match="Mailchimp said no"):
            list(mirror.members("d1", "list1", audience))
        assert time.monotonic() - started < 10
    finally:
        release.set()


def test_a_merge_drops_each_stored_part_once_decompressed():
    half = audience_mirror.BUCKETS // 2  # buckets a part holds, of two
    parts = [audience_mirror.gzip.compress(b"a\t1\n\n" + b"\n" * (half - 1)),
             audience_mirror.gzip.compress(b"c\t3\n\n" + b"\n" * (half - 1))]
    buckets = audience_mirror._dropping(parts)
    assert next(buckets) == ["a\t1\n"] and parts[0] == b"" and parts[1] != b""
    assert list(buckets) == [[]] * (half - 1) + [["c\t3\n"]] + [[]] * (half - 1) and parts == [b"", b""]


def test_a_refresh_asks_mailchimp_what_changed_in_the_run_s_telemetry_context():
    """The count of what changed since is asked in a thread beside the tag listing: that call still carries the run's
    log fields and span (its Mailchimp dependency belongs to the run), as the calls made in the planning thread do."""
    from shared import telemetry

    seen: list[dict] = []

    class Counting(Changing):
        def count_members(self, list_id: str, status: str | None = None,
                          since_last_changed: datetime | None = None) -> int:
            if since_last_changed is not None:
                seen.append(dict(telemetry.current_fields()))
            return super().count_members(list_id, status, since_last_changed)

    mirror = AudienceMirror(Store(), timedelta(hours=24))
    audience = Counting({"Kept": ["a@x.com"]})
    list(mirror.members("d1", "list1", audience))
    with telemetry.run_context(run_id="r1", destination_id="d1"):
        list(mirror.members("d1", "list1", audience))
    assert seen == [{"runId": "r1", "destinationId": "d1"}]
