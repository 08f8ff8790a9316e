"""ExportService stopped between two steps, or run by two workers at once, on in-memory ports (tests/unit/export_fakes.py).

Expectations are computed here from the rows written; the equation is written out rather than taken from shared.runs.
"""
from __future__ import annotations

import dataclasses
import threading
from pathlib import Path

import pytest

from shared.destinations import Claim
from shared.exports import Refused, chunk_blob
from shared.mailchimp.errors import MailchimpAuthError
from shared.segment_rows import rows_at_most
from tests.unit.export_fakes import drain, make, write_snapshot

EQUATION = ("invalid", "duplicates", "created", "updated", "unchanged", "refused", "failed")


def accounted(counts: dict[str, int]) -> bool:
    return counts["read"] == sum(counts[key] for key in EQUATION)


def snapshot(root: Path, stamp: str, parts: list[tuple[str, list[str]]]) -> None:
    folder = Path(root, "Vip", stamp)
    folder.mkdir(parents=True, exist_ok=True)
    for i, (header, emails) in enumerate(parts):
        (folder / f"part-{i}.csv").write_text(header + "\r\n" + "".join(f"{e},N\r\n" for e in emails))
    (folder / "_SUCCESS").write_text("")


def test_a_second_plan_delivery_while_the_first_plans_waits_and_then_changes_nothing(tmp_path):
    people = [f"p{i}@x.com" for i in range(6)]
    write_snapshot(tmp_path, "Vip", "2026/11/28/1700", people)
    service, client = make(tmp_path, ["Vip"], chunk_size=2)
    run = service.start("d1", "http")
    service.plan_queue.msgs.clear()
    reading, go_on = threading.Event(), threading.Event()
    real_read = client.iter_audience

    def slow_read(list_id, fields=None):
        reading.set()
        go_on.wait(10)
        yield from real_read(list_id, fields)

    client.iter_audience = slow_read
    first = threading.Thread(target=service.plan, args=(run.id,))
    first.start()
    assert reading.wait(10)
    second = threading.Thread(target=service.plan, args=(run.id,))  # the same message, delivered again
    second.start()
    second.join(0.5)
    assert second.is_alive()  # it waits for the first planner instead of planning alongside
    go_on.set()
    first.join(10)
    second.join(10)
    client.iter_audience = real_read
    chunks_sent = list(service.chunk_queue.msgs)
    drain(service)
    result = service.runs.get(run.id)
    assert sorted(m["chunk"] for m in chunks_sent) == [0, 1, 2]  # one plan, sent once
    assert sorted(client.aud) == people and client.writes == 6
    assert (result.status, result.counts["created"]) == ("succeeded", 6) and accounted(result.counts)


def test_a_plan_delivered_again_after_chunks_were_counted_sends_the_same_chunks(tmp_path):
    people = [f"p{i}@x.com" for i in range(6)]
    write_snapshot(tmp_path, "Vip", "2026/11/28/1700", people)
    service, client = make(tmp_path, ["Vip"], chunk_size=2)
    run = service.start("d1", "http")
    service.plan(service.plan_queue.msgs.pop(0)["runId"])
    blobs = {n: service.work.blobs[chunk_blob(run.id, n)] for n in range(3)}
    for _ in range(2):
        message = service.chunk_queue.msgs.pop(0)
        service.process_chunk(run.id, message["chunk"], "a1")
    service.plan(run.id)  # redelivered after chunks 0 and 1 were counted
    drain(service)
    result = service.runs.get(run.id)
    assert {n: service.work.blobs.get(chunk_blob(run.id, n), blobs[n]) for n in range(3)} == blobs
    assert sorted(client.aud) == people and client.writes == 6
    assert (result.counts["created"], result.counts["unchanged"]) == (6, 0) and accounted(result.counts)


def test_outcomes_recorded_by_a_planning_attempt_that_crashed_are_replaced_by_the_next(tmp_path):
    # Attempt 1 finds two members needing nothing and records them, then dies before the freeze; by attempt 2 they
    # changed in Mailchimp and need an update: they must not be counted twice.
    people = [f"p{i}@x.com" for i in range(4)]
    write_snapshot(tmp_path, "Vip", "2026/11/28/1700", people)
    audience = {e: ["subscribed", {"FNAME": "N"}, ["Vip"]] for e in people[:2]}
    service, client = make(tmp_path, ["Vip"], audience=audience, chunk_size=2)
    run = service.start("d1", "http")
    service.plan_queue.msgs.clear()
    real_update = service.runs.update

    def dies_at_the_freeze(run_id, change):
        if getattr(change, "__name__", "") == "freeze":
            raise RuntimeError("host killed")
        return real_update(run_id, change)

    service.runs.update = dies_at_the_freeze
    with pytest.raises(RuntimeError):
        service.plan(run.id)
    service.runs.update = real_update
    # Before the freeze only members certainly new may go out (streamed while the rows are read): people[2:].
    assert [m["chunk"] for m in service.chunk_queue.msgs] == [0]
    drain(service)  # ... and be created; planning again must count them once, not plan them again
    assert sorted(e for e in client.aud if e in people[2:]) == people[2:]
    for email in people[:2]:
        client.aud[email][1] = {"FNAME": "Changed"}
    service.plan(run.id)
    drain(service)
    counts = service.runs.get(run.id).counts
    assert (counts["read"], counts["created"], counts["updated"], counts["unchanged"]) == (4, 2, 2, 0)
    assert accounted(counts)


def test_a_partition_whose_header_differs_in_case_keeps_its_members_tagged(tmp_path):
    groups = [[f"g{p}m{i}@x.com" for i in range(5)] for p in range(10)]
    snapshot(tmp_path, "2026/11/28/1700", [("Email,FirstName", g) for g in groups])
    service, client = make(tmp_path, ["Vip"], chunk_size=50)
    service.start("d1", "http")
    drain(service)
    snapshot(tmp_path, "2026/11/28/1800", [("Email,FirstName", g) for g in groups[:9]] + [("email,firstname", groups[9])])
    run = service.start("d1", "http")
    drain(service)
    result = service.runs.get(run.id)
    assert (result.counts["invalid"], result.counts["untagged"], result.counts["untagHeld"]) == (0, 0, 0)
    assert all(client.aud[e][2] == ["Vip"] for g in groups for e in g)


def test_a_tag_made_by_hand_under_a_name_the_destination_once_owned_is_only_added_to(tmp_path):
    people = [f"p{i}@x.com" for i in range(10)]
    snapshot(tmp_path, "2026/11/28/1700", [("Email,FirstName", people)])
    service, client = make(tmp_path, ["Vip"], chunk_size=50)
    service.start("d1", "http")
    drain(service)
    # A marketer deletes the connector's tag and makes a "vip" tag by hand (another id) for these people and one more.
    del client.tags["Vip"]
    client.tags["vip"] = 99
    for email in people:
        client.aud[email][2][:] = ["vip"]
    client.aud["outsider@x.com"] = ["subscribed", {}, ["vip"]]
    run = service.start("d1", "http")
    drain(service)
    assert service.runs.get(run.id).counts["untagged"] == 0
    assert client.aud["outsider@x.com"][2] == ["vip"]


def test_confirming_held_untags_confirms_only_the_held_run_and_its_snapshots(tmp_path):
    people = [f"p{i}@x.com" for i in range(10)]
    snapshot(tmp_path, "2026/11/28/1700", [("Email,FirstName", people)])
    service, client = make(tmp_path, ["Vip"], chunk_size=50)
    with pytest.raises(Refused, match="no held-back untags to confirm"):
        service.start("d1", "http", confirm_untag=True)
    service.start("d1", "http")
    drain(service)
    snapshot(tmp_path, "2026/11/28/1800", [("Email,FirstName", people[:7])])  # 3 of 10 leave: held back (30 % > 20 %)
    held = service.start("d1", "http")
    drain(service)
    assert service.runs.get(held.id).counts["untagHeld"] == 3
    snapshot(tmp_path, "2026/11/28/1900", [("Email,FirstName", people[:1])])  # a worse snapshot lands meanwhile
    with pytest.raises(Refused, match="other snapshots"):
        service.start("d1", "http", confirm_untag=True)
    assert all(client.aud[e][2] == ["Vip"] for e in people)


def test_an_export_over_the_profile_cap_stops_reading_there_and_sends_nothing(tmp_path):
    write_snapshot(tmp_path, "Vip", "2026/11/28/1700", [f"p{i}@x.com" for i in range(6)])
    write_snapshot(tmp_path, "Later", "2026/11/28/1700", [f"q{i}@x.com" for i in range(3)])
    service, client = make(tmp_path, ["Vip", "Later"], MAX_PROFILES_PER_EXPORT="5")
    opened, audience_read = [], []
    real_open, real_audience = service.segments.open_binary, client.iter_audience
    service.segments.open_binary = lambda name: opened.append(name) or real_open(name)

    def audience(*args, **kwargs):
        audience_read.append(1)  # runs once the audience is iterated
        yield from real_audience(*args, **kwargs)

    client.iter_audience = audience
    run = service.start("d1", "http")
    opened.clear()
    drain(service)
    result = service.runs.get(run.id)
    assert result.status == "failed" and "more than 5 profiles, over the limit of 5" in result.message
    assert "nothing was sent" in result.message
    # Each header is read once before the rows; the rows stopped at Vip's 6th, so Later's rows were never opened.
    assert [name.split("/")[0] for name in opened] == ["Vip", "Later", "Vip"]
    assert audience_read == []  # nor was the audience read
    assert client.writes == 0 and client.aud == {} and service.chunk_queue.msgs == []


def test_an_export_over_the_profile_cap_fails_even_when_every_member_needs_nothing(tmp_path):
    people = [f"p{i}@x.com" for i in range(6)]
    write_snapshot(tmp_path, "Vip", "2026/11/28/1700", people)
    service, client = make(tmp_path, ["Vip"], audience={e: ["subscribed", {"FNAME": "N"}, ["Vip"]] for e in people})
    service.destinations.owned.add("#1")
    client.tags["Vip"] = 1
    service.start("d1", "http")
    drain(service)
    service.settings = type(service.settings)(**{**service.settings.__dict__, "max_profiles_per_export": 5})
    run = service.start("d1", "http")
    drain(service)
    result = service.runs.get(run.id)
    assert result.status == "failed" and "more than 5 profiles" in result.message


def test_the_last_chunks_of_a_run_leave_its_clean_up_to_the_worker_already_at_it(tmp_path):
    """Chunks delivered while the worker that settled the run is still deleting its chunk files return at once (their
    threads free) and delete nothing: at a million rows each of them deleting the same files held storage up for a
    minute. Each asks again later, which finds it done."""
    write_snapshot(tmp_path, "Vip", "2026/11/28/1700", [f"p{i}@x.com" for i in range(8)])
    service, _ = make(tmp_path, ["Vip"], chunk_size=2)
    run = service.start("d1", "http")
    service.plan(service.plan_queue.msgs.pop(0)["runId"])
    messages = list(service.chunk_queue.msgs)
    assert len(messages) == 4
    for m in messages[:-1]:
        service.process_chunk(run.id, m["chunk"], "a1")
    deleting, go_on, deletes = threading.Event(), threading.Event(), []
    real_delete = service.work.delete_prefix

    def slow_delete(prefix):
        deletes.append(prefix)
        deleting.set()
        go_on.wait(10)
        real_delete(prefix)

    service.work.delete_prefix = slow_delete
    settler = threading.Thread(target=service.process_chunk, args=(run.id, messages[-1]["chunk"], "a1"))
    settler.start()
    assert deleting.wait(10)
    again = [threading.Thread(target=service.process_chunk, args=(run.id, m["chunk"], "a2")) for m in messages]
    for thread in again:
        thread.start()
    for thread in again:  # while the settler is still deleting
        thread.join(5)
        assert not thread.is_alive(), "a chunk delivered again waits for the clean-up"
    go_on.set()
    settler.join(10)
    assert not settler.is_alive()
    assert deletes == [f"runs/{run.id}/chunks/"]  # once, by the worker that settled the run
    assert service.work.list_names(f"runs/{run.id}/chunks/") == []
    assert service.runs.get(run.id).details.get("cleanedUp")
    assert service.plan_queue.delayed == [{"runId": run.id}] * len(again)
    drain(service)  # the later asks find it done
    assert deletes == [f"runs/{run.id}/chunks/"]


def planned_in_two_chunks(tmp_path, invalid: tuple[str, ...] = ()):
    """A run of four people (and the `invalid` rows, reported) planned in two chunks, their messages taken off the
    queue: (service, run, messages)."""
    write_snapshot(tmp_path, "Vip", "2026/11/28/1700", [f"p{i}@x.com" for i in range(4)] + list(invalid))
    service, _ = make(tmp_path, ["Vip"], chunk_size=2)
    run = service.start("d1", "http")
    service.plan(service.plan_queue.msgs.pop(0)["runId"])
    messages = list(service.chunk_queue.msgs)
    service.chunk_queue.msgs.clear()
    return service, run, messages


def test_a_clean_up_whose_holder_died_is_taken_over_when_asked_again(tmp_path):
    """The lease of a worker that died while cleaning up outlives it for a few seconds; its own message, delivered
    again meanwhile, finds the lease taken. Asked again later, the clean-up is done: the chunk files (people's
    addresses) do not wait for the retention period."""
    service, run, messages = planned_in_two_chunks(tmp_path)
    dead_holder = service.work.locks.setdefault(f"runs/{run.id}/cleanup.lock", threading.Lock())
    dead_holder.acquire()  # its lease has not run out yet
    for m in messages:
        service.process_chunk(run.id, m["chunk"], "a1")
    assert service.runs.get(run.id).finished_at and service.work.list_names(f"runs/{run.id}/chunks/")
    assert service.plan_queue.delayed == [{"runId": run.id}]
    dead_holder.release()  # the lease ran out
    drain(service)
    assert service.work.list_names(f"runs/{run.id}/chunks/") == []
    assert service.runs.get(run.id).details.get("cleanedUp")


def test_a_late_clean_up_of_a_deleted_destinations_run_leaves_nothing_of_it_in_storage(tmp_path):
    """With its destination deleted, a run's clean-up deletes the run's whole folder, the blob of its own lock with it.
    A worker that read the run just before and takes the lock just after makes that blob again (a lease needs one);
    finding the run cleaned up, it deletes the folder again, so nothing of the deleted destination's run is left."""
    service, run, messages = planned_in_two_chunks(tmp_path)
    service.process_chunk(run.id, messages[0]["chunk"], "a1")
    service.destinations.d = None  # deleted meanwhile
    service.process_chunk(run.id, messages[1]["chunk"], "a1")  # settles the run and cleans up
    ended = service.runs.get(run.id, counts=False)
    assert ended.details.get("cleanedUp") and service.work.list_names(f"runs/{run.id}/") == []
    read_before = dataclasses.replace(ended, details={k: v for k, v in ended.details.items() if k != "cleanedUp"})
    service._clean_up(read_before)  # the late worker, its lock taken after the folder went
    assert service.work.list_names(f"runs/{run.id}/") == []


def test_a_deleted_destinations_run_whose_clean_up_was_asked_again_twice_leaves_nothing_in_storage(tmp_path):
    """The clean-up lock busy, two deliveries of the last chunk each ask again later (a plan message 30 s on). The first
    cleans up, the run's whole folder with it (its destination was deleted); the second takes the plan lock, which
    makes its blob again, and finds the run cleaned up: it clears that blob too."""
    service, run, messages = planned_in_two_chunks(tmp_path)
    service.process_chunk(run.id, messages[0]["chunk"], "a1")
    service.destinations.d = None  # deleted meanwhile
    holder = service.work.locks.setdefault(f"runs/{run.id}/cleanup.lock", threading.Lock())
    holder.acquire()
    service.process_chunk(run.id, messages[1]["chunk"], "a1")  # settles the run; the clean-up is busy
    service.process_chunk(run.id, messages[1]["chunk"], "a2")  # delivered again: the same
    assert service.plan_queue.delayed == [{"runId": run.id}] * 2
    holder.release()
    drain(service)
    assert service.runs.get(run.id).details.get("cleanedUp")
    assert service.work.list_names(f"runs/{run.id}/") == []


def test_a_late_clean_up_of_a_run_whose_destination_stays_keeps_its_error_report(tmp_path):
    """Only a deleted destination's run loses its whole folder: with the destination there, a late worker finding the
    run cleaned up deletes nothing (the report of rows not sent stays for GET .../errors)."""
    service, run, messages = planned_in_two_chunks(tmp_path, invalid=("not-an-address",))
    for m in messages:
        service.process_chunk(run.id, m["chunk"], "a1")
    ended = service.runs.get(run.id, counts=False)
    kept = service.work.list_names(f"runs/{run.id}/errors/")
    assert ended.details.get("cleanedUp") and kept
    read_before = dataclasses.replace(ended, details={k: v for k, v in ended.details.items() if k != "cleanedUp"})
    service._clean_up(read_before)
    service.plan(run.id)  # and a plan message that came late
    assert service.work.list_names(f"runs/{run.id}/errors/") == kept


def test_a_plan_message_for_a_run_the_retention_sweep_deleted_leaves_no_lock_behind(tmp_path):
    """The sweep deletes an old run's record and folder; a message for it still on its way (a delayed one) makes the
    plan lock's blob again on taking it, and finding no record, clears it: nothing of the run stays."""
    service, run, messages = planned_in_two_chunks(tmp_path)
    for m in messages:
        service.process_chunk(run.id, m["chunk"], "a1")
    service.work.delete_prefix(f"runs/{run.id}/")  # as the retention sweep does, folder first
    del service.runs.runs[run.id]
    service.plan(run.id)
    assert service.work.list_names(f"runs/{run.id}/") == []


def test_a_run_whose_record_cannot_be_created_gives_its_claim_and_snapshots_back_unless_it_landed(tmp_path):
    """A start whose run record fails to be written frees the destination with the claim's `previous`, so its snapshots
    do not read as exported by a run that never existed (the next trigger starts them). A create that failed on the
    way back but landed goes on as created (giving the snapshots back would let a trigger export them twice); when
    neither can be told, the claim is kept, as after a failed send. The create's own error is what is raised."""
    write_snapshot(tmp_path, "Vip", "2026/11/28/1700", ["p0@x.com"])
    service, _ = make(tmp_path, ["Vip"])
    released: list[tuple[str, object]] = []
    real_release, real_create, real_get = service.destinations.release, service.runs.create, service.runs.get
    service.destinations.claim = lambda i, run_id, covers, *args, **kwargs: Claim(
        "claimed", run_id, previous={segment: "2026-11-27T17:00Z" for segment in covers})
    service.destinations.release = lambda i, run_id, restore=None: released.append((run_id, restore)) or real_release(i, run_id)
    create_error = OSError("storage unreachable on create")

    def failing_create(run):
        raise create_error

    def landed_then_failed(run):
        real_create(run)
        raise TimeoutError("the answer was lost")

    def unreadable(run_id, counts=True):
        raise ConnectionError("storage unreachable on read")

    service.runs.create = failing_create
    with pytest.raises(OSError) as raised:
        service.follow("d1", "storage")
    assert raised.value is create_error and [restore for _, restore in released] == [{"Vip": "2026-11-27T17:00Z"}]

    released.clear()
    service.runs.get = unreadable
    with pytest.raises(OSError) as raised:
        service.follow("d1", "storage")
    assert raised.value is create_error and released == []  # unknown: the claim is kept

    service.runs.get = real_get
    service.runs.create = landed_then_failed
    service.plan_queue.msgs.clear()
    run = service.follow("d1", "storage")
    assert run is not None and released == [] and service.plan_queue.msgs == [{"runId": run.id}]


def test_one_segment_of_new_people_over_the_profile_cap_streams_nothing_and_fails(tmp_path):
    """The run that would stream (one segment, everyone new): its first full chunk asks for the line count, which shows
    more rows than MAX_PROFILES_PER_EXPORT, so nothing is streamed, and the run fails before anything is sent."""
    write_snapshot(tmp_path, "Vip", "2026/11/28/1700", [f"p{i}@x.com" for i in range(9)])
    service, client = make(tmp_path, ["Vip"], chunk_size=2, MAX_PROFILES_PER_EXPORT="8")
    run = service.start("d1", "http")
    drain(service)
    result = service.runs.get(run.id)
    assert result.status == "failed" and "more than 8 profiles" in result.message and "nothing was sent" in result.message
    assert client.writes == 0 and client.aud == {} and service.chunk_queue.msgs == []
    assert not result.details.get("streaming")


def test_a_streaming_run_says_so_before_its_first_chunk_goes_out(tmp_path):
    """`streaming` tells a consent withdrawal that chunks may be out while the run plans (cancelling.py): it must be
    on the run before the first streamed chunk's message is sent."""
    write_snapshot(tmp_path, "Vip", "2026/11/28/1700", [f"p{i}@x.com" for i in range(9)])
    service, client = make(tmp_path, ["Vip"], chunk_size=2)
    run = service.start("d1", "http")
    seen: list[bool] = []
    real_send = service.chunk_queue.send
    service.chunk_queue.send = lambda m, delay_seconds=0: (seen.append(bool(service.runs.get(run.id).details.get("streaming")))
                                                           or real_send(m, delay_seconds))
    service.plan(service.plan_queue.msgs.pop(0)["runId"])
    assert seen and all(seen)
    drain(service)
    assert service.runs.get(run.id).status == "succeeded" and len(client.aud) == 9


@pytest.mark.parametrize("audience", [{}, {"p0@x.com": ["subscribed", {"FNAME": "N"}, []]},
                                      {f"p{i}@x.com": ["pending", {"FNAME": "N"}, []] for i in range(9)}])
def test_into_an_empty_audience_the_rows_are_counted_beside_the_calls_before_planning(tmp_path, audience, monkeypatch):
    """Into an audience without a contact every row is new, so a run of one segment streams once its rows are proved
    within MAX_PROFILES_PER_EXPORT: that count starts on a thread of its own once the audience is read, is under way
    while the run still waits for Mailchimp (here: its tags), and is the one planning uses (counted once). Into an
    audience with contacts, subscribed or not (a double opt-in audience of pending ones has no subscribed member), the
    rows are counted when planning asks, if it asks."""
    import shared.exports.planner as planner

    write_snapshot(tmp_path, "Vip", "2026/11/28/1700", [f"p{i}@x.com" for i in range(9)])
    empty = not audience
    counts: list[int] = []
    monkeypatch.setattr(planner, "rows_at_most", lambda *args: counts.append(rows_at_most(*args)) or counts[-1])
    service, client = make(tmp_path, ["Vip"], audience=dict(audience), chunk_size=2)  # the fake fills it in
    main, counting = threading.get_ident(), threading.Event()
    real_open = service.segments.open_binary

    def open_binary(name):
        if threading.get_ident() != main and name.endswith(".csv"):
            counting.set()
        return real_open(name)

    service.segments.open_binary = open_binary
    real_tags = client.ensure_tags
    under_way: list[bool] = []
    client.ensure_tags = lambda *args, **kwargs: (under_way.append(counting.wait(10 if empty else 0.2))
                                                  or real_tags(*args, **kwargs))
    run = service.start("d1", "http")
    drain(service)
    assert under_way == [empty]
    result = service.runs.get(run.id)
    assert result.status == "succeeded" and len(client.aud) == 9
    assert bool(result.details.get("streaming")) == (len(audience) < 9) and len(counts) == (len(audience) < 9)


def test_an_export_asked_for_checks_mailchimp_beside_the_segments_listing_and_says_the_segments_problem_first(tmp_path):
    """The check that Mailchimp takes the credentials and knows the audience is a round trip the answer to a start
    waits for: it is made while the segments are listed. A segment without a snapshot is still the refusal given
    when Mailchimp refuses too, as when the check came after the listing."""
    write_snapshot(tmp_path, "Vip", "2026/11/28/1700", ["a@x.com"])
    service, client = make(tmp_path, ["Vip"])
    began = threading.Event()
    real_get, real_list = client.get_audience, service.segments.list_names
    client.get_audience = lambda list_id: began.set() or real_get(list_id)
    under_way: list[bool] = []
    service.segments.list_names = lambda prefix="": under_way.append(began.wait(10)) or real_list(prefix)
    assert service.start("d1", "http").status == "queued" and under_way[:1] == [True]

    service, client = make(tmp_path, ["Vip", "Gone"])

    def refused(list_id):
        raise MailchimpAuthError("Mailchimp refused the credentials")

    client.get_audience = refused
    with pytest.raises(Refused) as refusal:
        service.start("d1", "http")
    assert refusal.value.status == 409 and "'Gone' has no complete snapshot" in refusal.value.message
