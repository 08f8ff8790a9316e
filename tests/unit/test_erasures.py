"""shared/erasures.py: requests and drop files are checked without repeating addresses; processing is idempotent,
treats Mailchimp's 404 as done, raises what Mailchimp could not answer, and scrubs the work files by hash.

The Mailchimp side here is a small stand-in of the client's one call; tests/e2e/test_erasures.py runs the real
client against the local Mailchimp."""
from __future__ import annotations

import json
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from datetime import datetime, timedelta

import pytest

from shared.audience_mirror import ERASURES_MARK, MIRRORS_PREFIX
from shared.destinations import Destination, FieldMapping
from shared.emails import subscriber_hash
from shared.erasures import (ALREADY_GONE, DELETED, DONE, FAILED, QUEUED, REFUSED, REJECTED, RUNNING, STRANDED_AFTER,
                             UNREACHABLE, WITH_ERRORS, Erasure, ErasureService, InvalidErasure, Outcome, Target,
                             not_a_request, parse_drop_file, parse_request, rejected_name, scrubbed)
from shared.mailchimp.errors import MailchimpRequestError, MailchimpUnavailable
from shared.members import ExistingMember, Member, RowRef, encode_members
from shared.runs import Run
from tests.unit.export_fakes import Q, Work

ANN, BO = "ann@contoso.com", "bo@contoso.com"


def test_a_request_names_the_positions_that_are_not_addresses_never_the_values() -> None:
    assert parse_request({"emails": [ANN, " Bo@Contoso.com "]}) == [ANN, " Bo@Contoso.com "]
    with pytest.raises(InvalidErasure) as caught:
        parse_request({"emails": [ANN, "secret-person@@contoso.com", 7], "also": 1})
    fields = [p["field"] for p in caught.value.problems]
    assert fields == ["also", "emails[1]", "emails[2]"]
    assert "secret-person" not in str(caught.value)
    for body in ({}, {"emails": []}, {"emails": "ann@contoso.com"}, []):
        with pytest.raises(InvalidErasure):
            parse_request(body)
    with pytest.raises(InvalidErasure, match="at most 1,000 addresses"):
        parse_request({"emails": [ANN] * 1001})


def test_a_drop_file_is_json_lines_or_csv_with_an_email_column_in_any_case_and_errors_name_the_line() -> None:
    assert parse_drop_file("a.jsonl", f'{{"email": "{ANN}"}}\n\n{{"email": "{BO}", "x": 1}}\n'.encode()).emails == [ANN, BO]
    clean = parse_drop_file("a.csv", f"\ufeffId,EMAIL\r\n1,{ANN}\r\n\r\n2,{BO}\r\n".encode())
    assert (clean.emails, clean.problems, clean.bad_lines, clean.message("x")) == ([ANN, BO], [], b"", None)
    with pytest.raises(InvalidErasure) as caught:  # nothing usable at all: refused whole, every line named
        parse_drop_file("a.jsonl", b'not json\n{"mail": "x"}\n{"email": "hidden@@x.com"}\n')
    assert [p["field"] for p in caught.value.problems] == ["line 1", "line 2", "line 3"]
    assert "hidden" not in str(caught.value)
    with pytest.raises(InvalidErasure, match="no email column"):
        parse_drop_file("a.csv", f"Address\r\n{ANN}\r\n".encode())
    with pytest.raises(InvalidErasure, match=r"\.jsonl"):
        parse_drop_file("a.txt", ANN.encode())
    with pytest.raises(InvalidErasure, match="holds no address"):
        parse_drop_file("a.csv", b"email\r\n")


def test_one_bad_line_does_not_cost_the_valid_addresses_and_the_bad_lines_are_kept_as_written() -> None:
    mixed = parse_drop_file("a.jsonl", f'{{"email": "{ANN}"}}\nnot json\n{{"mail": "x"}}\n{{"email": "hidden@@x.com"}}\n'
                                       f'{{"email": "{BO}"}}'.encode())
    assert mixed.emails == [ANN, BO] and [p["field"] for p in mixed.problems] == ["line 2", "line 3", "line 4"]
    assert mixed.bad_lines == b'not json\n{"mail": "x"}\n{"email": "hidden@@x.com"}\n'
    message = mixed.message("a.rejected.jsonl")
    assert "3 line(s)" in message and "line 4" in message and "a.rejected.jsonl" in message and "hidden" not in message
    csv_file = parse_drop_file("a.csv", f'Id,Email\r\n1,{ANN}\r\n2,nope\r\n3,"two\r\nlines@x.com"\r\n4,{BO}'.encode())
    assert csv_file.emails == [ANN, BO] and [p["field"] for p in csv_file.problems] == ["line 3", "line 5"]
    assert csv_file.bad_lines == b'Id,Email\r\n2,nope\r\n3,"two\r\nlines@x.com"\r\n'  # the header, then the rows as typed
    assert rejected_name("platform/bad.csv") == "platform/bad.rejected.csv" and rejected_name("b.jsonl") == "b.rejected.jsonl"
    assert not_a_request(rejected_name("platform/bad.csv")) and not_a_request("x/B.Rejected.JSONL")


def test_work_files_lose_exactly_the_entries_naming_an_erased_address_in_any_spelling() -> None:
    erased = {subscriber_hash(ANN)}
    chunk = encode_members([Member(ANN, {}, ["vip"], RowRef("VIP", "p", 1), ExistingMember(ANN, "subscribed")),
                            Member(BO, {}, ["vip"], RowRef("VIP", "p", 2))])
    assert [json.loads(line)["email"] for line in scrubbed("runs/r/chunks/000000.jsonl", chunk, erased).splitlines()] == [BO]
    report = (json.dumps({"email": " ANN@Contoso.com ", "reason": "x"}) + "\n" + json.dumps({"email": None}) + "\nnot json\n").encode()
    assert scrubbed("runs/r/errors/plan-0000.jsonl", report, erased) == b'{"email": null}\nnot json\n'
    results = json.dumps([{"email": ANN, "outcome": "created"}, {"email": BO, "outcome": "created"}]).encode()
    assert [r["email"] for r in json.loads(scrubbed("runs/r/chunks/000000.results.json", results, erased))] == [BO]
    assert scrubbed("runs/r/chunks/000001.jsonl", chunk, {subscriber_hash("zed@contoso.com")}) is None
    assert scrubbed("runs/r/plan.lock", b"", erased) is None


# --- the service, with in-memory boundaries ------------------------------------------------------------------------

class Records:
    def __init__(self):
        self.items: dict[str, Erasure] = {}

    def create(self, erasure):
        if erasure.id in self.items:
            return False
        self.items[erasure.id] = erasure
        return True

    def get(self, erasure_id):
        found = self.items.get(erasure_id)
        return None if found is None else replace(found, outcomes={h: dict(o) for h, o in found.outcomes.items()})

    def list(self, top):
        return sorted(self.items.values(), key=lambda e: e.created_at, reverse=True)[:top]

    def add_targets(self, erasure_id, targets):
        e = self.items[erasure_id]
        e.targets = tuple(dict.fromkeys((*e.targets, *targets)))

    def record(self, erasure_id, member_hash, target, outcome):
        self.items[erasure_id].outcomes.setdefault(member_hash, {})[target.key] = outcome

    def note_queued(self, erasure_id):
        self.items[erasure_id].work_queued = True

    def list_unqueued(self):
        return [replace(e, hashes=()) for e in self.items.values() if e.status == QUEUED and not e.work_queued]

    def set_status(self, erasure_id, status, message=None, files_scrubbed=None):
        e = self.items[erasure_id]
        e.status, e.message = status, message
        e.files_scrubbed = e.files_scrubbed if files_scrubbed is None else files_scrubbed


class Ledger:
    def __init__(self):
        self.erased: dict[str, str] = {}

    def note(self, hashes, erased_at):
        self.erased.update(dict.fromkeys(hashes, erased_at))

    def erased_on(self, hashes):
        return {h: self.erased[h] for h in hashes if h in self.erased}

    def all(self):
        return dict(self.erased)


class Client:
    """Mailchimp as far as an erasure sees it: audiences of hashes per account; `answers` forces an error per hash."""

    def __init__(self, account, audiences, answers, calls):
        self.account, self._audiences, self._answers, self._calls = account, audiences, answers, calls

    def delete_member_permanently(self, list_id, member_hash):
        self._calls.append((self.account, list_id, member_hash))
        if member_hash in self._answers:
            raise self._answers[member_hash]
        members = self._audiences.setdefault((self.account, list_id), set())
        if member_hash not in members:
            return False
        members.discard(member_hash)
        return True


class Connections:
    def __init__(self, accounts):
        self.accounts, self.audiences, self.answers, self.calls = accounts, {}, {}, []

    def call(self, destination, action):
        return action(Client(self.accounts[destination.id], self.audiences, self.answers, self.calls))


def destination(id_: str, audience: str, created: str = "2026-01-01") -> Destination:
    return Destination(id=id_, display_name=id_, audience_id=audience, mapping=FieldMapping("Email"), segments=("S",),
                       consent_accepted=True, consent_by="x", consent_at="x", status_for_new=None, tag_prefix="",
                       credential_kind="api_key", created_at=created, updated_at=created)


class Destinations:
    def __init__(self, *items):
        self.items = list(items)

    def list(self):
        return list(self.items)


@pytest.fixture
def world():
    work = Work()
    connections = Connections({"d1": "acct-a", "d2": "acct-b", "d3": "acct-a"})
    destinations = Destinations(destination("d1", "aud1"), destination("d2", "aud2", "2026-01-02"),
                                destination("d3", "aud1", "2026-01-03"),  # the same account and audience as d1
                                replace(destination("d4", "aud4"), credential_kind="none"))
    records, ledger, queue = Records(), Ledger(), Q()
    service = ErasureService(records=records, ledger=ledger, queue=queue, work=work, destinations=destinations,
                             connections=connections, drops=Drops(), runs=Runs(), workers=2)
    return service, records, ledger, queue, work, connections


class Runs:
    def __init__(self, *items):
        self.items = list(items)

    def list_all(self):
        return list(self.items)


def run(id_: str, destination_id: str, audience: str | None, dry: bool = False) -> Run:
    details = {**({"audienceId": audience} if audience else {}), **({"dryRun": True} if dry else {})}
    return Run(id=id_, destination_id=destination_id, trigger="manual", status="succeeded", created_at=id_, segments=[],
               details=details)


class Drops(Work):
    def delete(self, name):
        self.blobs.pop(name, None)


class CleanedUpWhileListed(Work):
    """A run's folder cleaned up (retention, its destination deleted) just after the scrub listed its files."""

    def list_names(self, prefix=""):
        names = super().list_names(prefix)
        self.delete_prefix("runs/gone/")
        return names


def test_the_scrub_brings_back_no_file_deleted_after_it_was_listed(world) -> None:
    service, records, ledger, queue, _, connections = world
    work = CleanedUpWhileListed()
    service._work = work
    connections.audiences = {("acct-a", "aud1"): {subscriber_hash(ANN)}}
    report = (json.dumps({"email": ANN, "reason": "x"}) + "\n" + json.dumps({"email": BO, "reason": "y"}) + "\n").encode()
    work.blobs["runs/gone/errors/plan-0000.jsonl"] = report
    work.blobs["runs/kept/errors/plan-0000.jsonl"] = report

    erasure, _ = service.request([ANN], "00000000-0000-0000-0000-00000000ad4a")
    done = service.process(erasure.id)

    assert done.status == DONE and done.files_scrubbed == 1
    assert [n for n in work.blobs if n.startswith("runs/")] == ["runs/kept/errors/plan-0000.jsonl"]  # the other stays deleted
    assert ANN.encode() not in work.blobs["runs/kept/errors/plan-0000.jsonl"]


def test_an_erasure_deletes_from_each_audience_once_scrubs_the_work_files_and_keeps_only_hashes(world) -> None:
    service, records, ledger, queue, work, connections = world
    ann, bo = subscriber_hash(ANN), subscriber_hash(BO)
    connections.audiences = {("acct-a", "aud1"): {ann, bo}, ("acct-b", "aud2"): {bo}}
    kept = encode_members([Member(ANN, {}, ["s"], RowRef("S", "p", 1))])
    work.blobs["runs/r/retry/000000.jsonl"] = kept
    work.blobs["runs/r/chunks/000000.jsonl"] = kept  # counted from: its worker refuses her, and it goes with the run
    work.blobs["runs/r/errors/plan-0000.jsonl"] = (json.dumps({"email": BO, "reason": "x"}) + "\n").encode()

    erasure, created = service.request([" Ann@Contoso.com", ANN], "00000000-0000-0000-0000-00000000ad4a")

    assert created and erasure.hashes == (ann,) and queue.msgs == [{"erasureId": erasure.id}]
    assert ledger.all() == {ann: erasure.created_at}
    done = service.process(erasure.id)
    assert done.status == DONE and done.files_scrubbed == 1
    assert sorted(connections.calls) == [("acct-a", "aud1", ann), ("acct-b", "aud2", ann)]  # d3 is d1's audience
    assert [t.destination_ids for t in done.targets] == [("d1", "d3"), ("d2",)]
    assert [done.outcome(ann, t).outcome for t in done.targets] == [DELETED, ALREADY_GONE]
    assert connections.audiences[("acct-a", "aud1")] == {bo}
    assert work.blobs["runs/r/retry/000000.jsonl"] == b"" and BO.encode() in work.blobs["runs/r/errors/plan-0000.jsonl"]
    assert work.blobs["runs/r/chunks/000000.jsonl"] == kept
    shown = json.dumps(done.public())
    assert "contoso" not in shown and ann in shown
    assert done.public()["requestedBy"] == "00000000-0000-0000-0000-00000000ad4a"  # an object id: it names nobody
    assert done.public()["audiences"][0] == {"audienceId": "aud1", "destinationIds": ["d1", "d3"], DELETED: 1,
                                             ALREADY_GONE: 0, REFUSED: 0, UNREACHABLE: 0, "pending": 0}
    assert service.process(erasure.id).status == DONE and len(connections.calls) == 2  # finished: nothing again


def test_mailchimp_unavailable_is_raised_and_the_redelivery_asks_only_what_is_not_recorded(world) -> None:
    service, records, _, _, _, connections = world
    ann, bo = subscriber_hash(ANN), subscriber_hash(BO)
    erasure, _ = service.request([ANN, BO], "x")
    connections.answers[bo] = MailchimpUnavailable("busy", status=503)
    with pytest.raises(MailchimpUnavailable):
        service.process(erasure.id)
    asked = len(connections.calls)
    del connections.answers[bo]
    assert service.process(erasure.id).status == DONE
    assert len(connections.calls) - asked == 3 and connections.calls.count(("acct-a", "aud1", ann)) == 1


def test_a_refusal_keeps_mailchimps_reason_and_ends_completed_with_errors(world) -> None:
    service, _, _, _, _, connections = world
    connections.answers[subscriber_hash(ANN)] = MailchimpRequestError("refused", status=400, title="Bad", detail="Nope")
    erasure, _ = service.request([ANN], "x")
    done = service.process(erasure.id)
    assert done.status == WITH_ERRORS and "refused 2 deletion(s)" in done.message
    assert {done.outcome(subscriber_hash(ANN), t).reason for t in done.targets} == {"Nope"}


def test_the_same_drop_file_twice_is_one_request_and_a_poisoned_one_says_what_was_not_done(world) -> None:
    service, records, _, queue, _, _ = world
    first, created = service.request([ANN], "storage:a.csv", "storage", erasure_id="f1")
    again, created_again = service.request([ANN], "storage:a.csv", "storage", erasure_id="f1")
    assert created and not created_again and again.id == first.id and len(queue.msgs) == 1
    service.gave_up("f1")
    assert records.get("f1").status == FAILED and "request the erasure again" in records.get("f1").message


def test_a_request_cut_short_before_its_work_was_queued_is_noted_and_queued_by_its_redelivery(world) -> None:
    service, records, ledger, queue, _, _ = world
    note = ledger.note
    ledger.note = lambda hashes, at: (_ for _ in ()).throw(OSError("storage down"))  # after the record was written
    with pytest.raises(OSError):
        service.request([ANN], "storage:a.csv", "storage", erasure_id="f1")
    assert records.get("f1").status == QUEUED and not queue.msgs and not ledger.erased
    ledger.note = note
    again, created = service.request([ANN], "storage:a.csv", "storage", erasure_id="f1")
    assert not created and again.id == "f1" and queue.msgs == [{"erasureId": "f1"}]
    assert ledger.all() == {subscriber_hash(ANN): records.get("f1").created_at} and records.get("f1").work_queued
    service.request([ANN], "storage:a.csv", "storage", erasure_id="f1")  # queued now: nothing more
    assert len(queue.msgs) == 1


def test_a_request_whose_work_could_not_be_queued_is_queued_by_its_redelivery(world) -> None:
    service, records, _, queue, _, _ = world
    send = queue.send
    queue.send = lambda message, delay_seconds=0: (_ for _ in ()).throw(OSError("queue down"))
    with pytest.raises(OSError):
        service.request([ANN], "storage:a.csv", "storage", erasure_id="f1")
    assert not records.get("f1").work_queued  # not marked queued before it was
    queue.send = send
    service.request([ANN], "storage:a.csv", "storage", erasure_id="f1")
    assert queue.msgs == [{"erasureId": "f1"}] and records.get("f1").work_queued


def test_a_drop_event_delivered_twice_at_once_queues_the_work_once(world) -> None:
    service, _, ledger, queue, _, _ = world
    note, inside, release = ledger.note, threading.Event(), threading.Event()

    def slow_note(hashes, at):
        inside.set()
        release.wait(5)
        note(hashes, at)

    ledger.note = slow_note
    with ThreadPoolExecutor(2) as pool:
        first = pool.submit(service.request, [ANN], "storage:a.csv", "storage", erasure_id="f1")
        assert inside.wait(5)
        second = pool.submit(service.request, [ANN], "storage:a.csv", "storage", erasure_id="f1")
        time.sleep(0.2)  # the second delivery is waiting for the first
        release.set()
        assert first.result()[1] and not second.result()[1]
    assert queue.msgs == [{"erasureId": "f1"}]


def test_an_http_request_cut_short_before_its_work_was_queued_is_queued_by_the_sweep_once_it_is_stranded(world) -> None:
    service, records, ledger, queue, work, _ = world
    send = queue.send
    queue.send = lambda message, delay_seconds=0: (_ for _ in ()).throw(OSError("the process died"))
    with pytest.raises(OSError):
        service.request([ANN], "Ada")
    queue.send = send
    [stuck] = records.items.values()
    made = datetime.fromisoformat(stuck.created_at)
    assert service.queue_stranded(made + STRANDED_AFTER - timedelta(seconds=1)) == []  # may still be running
    assert not queue.msgs and not stuck.work_queued
    assert service.queue_stranded(made + STRANDED_AFTER) == [stuck.id]
    assert queue.msgs == [{"erasureId": stuck.id}] and records.get(stuck.id).work_queued
    assert ledger.all() == {subscriber_hash(ANN): stuck.created_at}
    assert list(work.locks) == [f"erasure-locks/{stuck.id}.lock"]  # the lock a dropped file's redelivery takes
    assert service.queue_stranded(made + 2 * STRANDED_AFTER) == [] and len(queue.msgs) == 1
    # a listing taken before another sweep queued it: the record is read again, and skipped
    records.list_unqueued = lambda: [replace(stuck, work_queued=False, hashes=())]
    assert service.queue_stranded(made + 2 * STRANDED_AFTER) == [] and len(queue.msgs) == 1


def test_a_stranded_request_that_cannot_be_queued_now_does_not_hold_up_the_others(world, caplog) -> None:
    service, records, _, queue, _, _ = world
    send = queue.send
    queue.send = lambda message, delay_seconds=0: (_ for _ in ()).throw(OSError("the process died"))
    for address in (ANN, BO):
        with pytest.raises(OSError):
            service.request([address], "Ada")
    first, second = records.items.values()
    first.created_at = "not a time"
    queue.send = send
    later = datetime.fromisoformat(second.created_at) + STRANDED_AFTER
    assert service.queue_stranded(later) == [second.id] and queue.msgs == [{"erasureId": second.id}]
    assert f"erasure request {first.id} is stranded and could not be queued (ValueError)" in caplog.text


def test_the_sweep_leaves_requests_queued_normally_running_or_finished(world) -> None:
    service, records, _, queue, _, _ = world
    done, _ = service.request([ANN], "Ada")
    service.request([BO], "storage:a.csv", "storage", erasure_id="f1")
    records.set_status(done.id, DONE)
    records.items["f1"].work_queued = False
    records.items["f1"].status = RUNNING  # its worker has it: the message went out, whatever the flag says
    later = datetime.fromisoformat(done.created_at) + 2 * STRANDED_AFTER
    assert service.queue_stranded(later) == [] and len(queue.msgs) == 2


def test_outcome_targets_are_keyed_by_first_destination_and_audience() -> None:
    target = Target("aud1", ("d1", "d3"))
    e = Erasure("e", "t", "x", "http", ("h",), targets=(target,), outcomes={"h": {"d1/aud1": Outcome(DELETED)}})
    assert e.outcome("h", target).outcome == DELETED


def test_a_dropped_file_becomes_one_request_and_is_deleted_a_bad_one_is_kept_and_recorded_rejected(world) -> None:
    """A file with nothing usable stays as it is."""
    service, records, ledger, queue, _, _ = world
    drops = service._drops
    drops.blobs["platform/2026-11-28.csv"] = f"Email\r\n{ANN}\r\n".encode()
    erasure = service.on_dropped("platform/2026-11-28.csv")
    assert erasure.requested_by == "storage:platform/2026-11-28.csv" and erasure.source == "storage"
    assert erasure.hashes == (subscriber_hash(ANN),) and not drops.blobs and len(queue.msgs) == 1
    assert service.on_dropped("platform/2026-11-28.csv") is None  # the event delivered again: the file is gone
    drops.blobs["bad.jsonl"] = b'{"email": "hidden@@contoso.com"}\n'
    rejected = service.on_dropped("bad.jsonl")
    assert rejected.status == "rejected" and "line 1" in rejected.message and "hidden" not in rejected.message
    assert "bad.jsonl" in drops.blobs and len(queue.msgs) == 1


def test_markers_and_manifests_beside_a_request_are_not_requests() -> None:
    for name in ("platform/_SUCCESS", "platform/model.json", "x/Erasures.manifest.cdm.json", "x/.hidden.csv"):
        assert not_a_request(name), name
    for name in ("platform/one.jsonl", "platform/two.csv", "platform/requests.json", "platform/model.jsonl"):
        assert not not_a_request(name), name


def test_a_file_with_a_bad_line_erases_the_valid_addresses_and_keeps_only_the_bad_lines(world) -> None:
    service, records, ledger, queue, _, connections = world
    drops = service._drops
    drops.blobs["platform/bad.csv"] = f"email\r\n{ANN}\r\nperson4@@fabrikam.com\r\n{BO}\r\n".encode()
    erasure = service.on_dropped("platform/bad.csv")
    assert erasure.hashes == (subscriber_hash(ANN), subscriber_hash(BO)) and len(queue.msgs) == 1
    assert set(ledger.all()) == {subscriber_hash(ANN), subscriber_hash(BO)}
    assert "line 3" in erasure.message and "platform/bad.rejected.csv" in erasure.message
    assert "person4" not in erasure.message
    # the file naming Ann and Bo is gone; only the line nobody could use is kept, under a name never read as a request
    assert drops.blobs == {"platform/bad.rejected.csv": b"email\r\nperson4@@fabrikam.com\r\n"}
    assert service.on_dropped("platform/bad.rejected.csv") is None and len(records.items) == 1
    done = service.process(erasure.id)
    assert done.status == WITH_ERRORS and "line 3" in done.message  # erased, and the unused line said to the end
    assert {done.outcome(subscriber_hash(ANN), t).outcome for t in done.targets} <= {DELETED, ALREADY_GONE}
    assert records.get(erasure.id).status != REJECTED


def test_a_redelivered_drop_event_after_a_crash_makes_no_second_request(world) -> None:
    service, records, _, queue, _, _ = world
    drops = service._drops
    data = f"email\r\n{ANN}\r\nnope\r\n".encode()
    drops.blobs["x.csv"] = data
    real_delete = drops.delete
    drops.delete = lambda name: (_ for _ in ()).throw(OSError("storage down"))
    with pytest.raises(OSError):
        service.on_dropped("x.csv")
    drops.delete = real_delete
    again = service.on_dropped("x.csv")
    assert len(records.items) == 1 and len(queue.msgs) == 1 and again.hashes == (subscriber_hash(ANN),)
    assert set(drops.blobs) == {"x.rejected.csv"}


def test_an_erasure_reaches_audiences_written_before_a_patch_and_says_what_deleted_destinations_left(world) -> None:
    service, records, _, _, _, connections = world
    ann = subscriber_hash(ANN)
    connections.audiences = {("acct-a", "old1"): {ann}, ("acct-a", "aud1"): {ann}, ("acct-b", "aud2"): {ann}}
    service._runs.items = [
        run("20260101T000000-1", "d1", "old1"),  # d1 pointed at old1 before a PATCH
        run("20260102T000000-1", "d1", "aud1"),
        run("20260102T000000-2", "d3", "aud1"),  # d3 shares d1's account and audience: asked once
        run("20260103T000000-1", "gone", "audX"),  # its destination was deleted, credentials and all
        run("20260103T000000-2", "gone", "audX"),
        run("20260104T000000-1", "d2", "preview-only", dry=True),  # a preview wrote nothing
        run("20260104T000000-2", "d2", None),  # planning never got as far as the audience
    ]
    erasure, _ = service.request([ANN], "oid")
    done = service.process(erasure.id)
    assert sorted(connections.calls) == [("acct-a", "aud1", ann), ("acct-a", "old1", ann), ("acct-b", "aud2", ann)]
    assert connections.audiences[("acct-a", "old1")] == set()
    by_audience = {t.audience_id: t for t in done.targets}
    assert set(by_audience) == {"aud1", "aud2", "old1", "audX"} and by_audience["aud1"].destination_ids == ("d1", "d3")
    gone = done.outcome(ann, by_audience["audX"])
    assert gone.outcome == UNREACHABLE and "audience audX" in gone.reason and "was deleted" in gone.reason
    assert "by hand" in gone.reason
    assert done.status == WITH_ERRORS and "by hand" in done.message  # never `done` with an audience missed
    assert done.public()["audiences"][-1][UNREACHABLE] == 1


def test_a_disconnected_destination_that_wrote_to_an_audience_refuses_instead_of_being_skipped(world) -> None:
    service, _, _, _, _, connections = world
    service._runs.items = [run("20260101T000000-1", "d4", "aud4")]  # d4 has no credentials now
    erasure, _ = service.request([ANN], "oid")
    done = service.process(erasure.id)
    target = next(t for t in done.targets if t.audience_id == "aud4")
    assert done.outcome(subscriber_hash(ANN), target).outcome == REFUSED and done.status == WITH_ERRORS


def test_an_erasure_changes_the_mirrors_mark_after_mailchimp_forgot_and_before_it_deletes_the_mirrors(world) -> None:
    """In that order (shared/audience_mirror.py): a run that took the mark before it keeps no mirror, and one that
    took it after reads Mailchimp without the person. Marked before Mailchimp's deletions, a run starting between the
    two would read the person under the new mark and keep them; marked after the mirrors are deleted, a mirror
    written from an earlier read in between would be kept."""
    service, _, _, _, work, connections = world
    work.blobs["mirrors/d1/aud1/v1/part-00.jsonl.gz"] = b"contacts"
    done: list[tuple[str, str]] = []
    write, delete = work.write_bytes, work.delete_prefix
    work.write_bytes = lambda name, data: (done.append(("write", name)), write(name, data))[-1]
    work.delete_prefix = lambda prefix: (done.append(("delete", prefix)), delete(prefix))[-1]

    class Calls(list):
        def append(self, call) -> None:
            done.append(("mailchimp", "delete-permanent"))
            super().append(call)

    connections.calls = Calls()
    erasure, _ = service.request([ANN], "x")
    service.process(erasure.id)
    mark = done.index(("write", ERASURES_MARK))
    assert max(i for i, step in enumerate(done) if step[0] == "mailchimp") < mark < done.index(("delete", MIRRORS_PREFIX))
    assert work.list_names(MIRRORS_PREFIX) == []


def test_the_scrub_reads_a_file_again_that_was_written_meanwhile_and_gives_up_on_one_that_never_settles(world) -> None:
    """The fake's rewrite keeps the adapter's promise (tests/integration/test_work_blobs.py checks the adapter's): a
    write between the read and the write-back makes it read again; a file written under every attempt raises, and the
    erasure's message is delivered again (its Mailchimp deletions are recorded and not made twice)."""
    service, records, ledger, queue, work, connections = world
    connections.audiences = {("acct-a", "aud1"): {subscriber_hash(ANN)}}
    line = (json.dumps({"email": ANN, "reason": "x"}) + "\n").encode()
    work.blobs["runs/r/errors/plan-0000.jsonl"] = line
    real_rewrite = work.rewrite
    rewrites = []

    def written_meanwhile(name, change, attempts=5):
        def racing(data):
            if len(rewrites) < limit:
                rewrites.append(name)
                work.blobs[name] = data + line  # the run writes it again
            return change(data)
        return real_rewrite(name, racing, attempts)

    work.rewrite = written_meanwhile
    erasure, _ = service.request([ANN], "00000000-0000-0000-0000-00000000ad4a")
    limit = 99
    with pytest.raises(RuntimeError, match="changed under each of 5"):
        service.process(erasure.id)
    calls = list(connections.calls)
    limit = len(rewrites) + 1  # the redelivery: one more write meanwhile, then it settles
    done = service.process(erasure.id)
    assert done.status == DONE and done.files_scrubbed == 1 and ANN.encode() not in work.blobs["runs/r/errors/plan-0000.jsonl"]
    assert connections.calls == calls  # not deleted again
