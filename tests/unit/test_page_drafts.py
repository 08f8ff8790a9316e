"""What the admin page needs of the domain: a destination saved before its mapping and segments (a draft, so OAuth has
an id to come back to), refused for export until configured; and cancelling one run by its id."""
from __future__ import annotations

import pytest

from shared.destinations import InvalidDestination, editable, new_destination, updated_destination
from shared.exports import Refused
from tests.unit.export_fakes import drain, make, write_snapshot

CONNECTION = {"displayName": "Newsletter", "consent": {"accepted": True}, "audienceId": "a1b2c3d4e5"}


def test_a_destination_may_be_created_without_mapping_and_segments_as_a_draft():
    d = new_destination(CONNECTION, "admin@contoso").destination
    assert d.is_draft and d.segments == () and d.mapping.email == ""
    shown = d.public()
    assert shown["draft"] is True and shown["mapping"] is None and shown["segments"] == []
    doc = editable(d)  # what a PATCH is merged into: without the missing parts, which would be refused as empty
    assert "mapping" not in doc and "segments" not in doc
    assert {key: doc[key] for key in ("displayName", "audienceId", "consent")} == {
        "displayName": "Newsletter", "audienceId": "a1b2c3d4e5", "consent": {"accepted": True}}


def test_a_draft_still_checks_what_it_is_sent():
    with pytest.raises(InvalidDestination) as caught:
        new_destination({**CONNECTION, "segments": [], "mapping": {"mergeFields": {}}}, "x")
    assert {p["field"] for p in caught.value.problems} == {"segments", "mapping.email"}
    with pytest.raises(InvalidDestination) as caught:
        new_destination({**CONNECTION, "consent": {"accepted": False}}, "x")
    assert {p["field"] for p in caught.value.problems} == {"consent.accepted"}


def test_a_draft_stays_one_until_both_are_patched_in_and_then_needs_both():
    draft = new_destination(CONNECTION, "x").destination
    renamed = updated_destination(draft, {"displayName": "Renamed"}, "x").destination
    assert renamed.is_draft and renamed.display_name == "Renamed"
    half = updated_destination(draft, {"mapping": {"email": "Email"}}, "x").destination
    assert half.is_draft and half.mapping.email == "Email"
    done = updated_destination(half, {"segments": ["HighValueCustomers"]}, "x").destination
    assert not done.is_draft and done.public()["draft"] is False
    for patch, field in (({"segments": None}, "segments"), ({"mapping": None}, "mapping")):
        with pytest.raises(InvalidDestination) as caught:
            updated_destination(done, patch, "x")
        assert {p["field"] for p in caught.value.problems} == {field}


def test_a_draft_is_refused_for_export_and_left_out_by_the_triggers(tmp_path):
    write_snapshot(tmp_path, "Vip", "2026/11/28/1700", ["a@x.com"])
    service, _ = make(tmp_path, [])
    with pytest.raises(Refused) as caught:
        service.start("d1", "http")
    assert caught.value.status == 409 and "configure the mapping and segments first" in caught.value.message
    assert service.follow("d1", "schedule") is None and service.on_schedule() == []
    assert service.plan_queue.msgs == []


def test_cancelling_a_running_export_by_id_sends_nothing_more_and_ends_it_cancelled(tmp_path):
    people = [f"p{i}@x.com" for i in range(6)]
    write_snapshot(tmp_path, "Vip", "2026/11/28/1700", people)
    service, client = make(tmp_path, ["Vip"], chunk_size=2)
    run = service.start("d1", "http")
    service.plan(service.plan_queue.msgs.pop(0)["runId"])
    first = service.chunk_queue.msgs.pop(0)
    service.process_chunk(run.id, first["chunk"], "a1")  # 2 members sent before the cancel
    cancelled = service.cancel_run(run.id, "cancelled by ops@contoso")
    assert cancelled.status == "cancelling" and service.destinations.active == run.id  # held until counted
    again = service.cancel_run(run.id, "cancelled by someone else")
    assert again.status == "cancelling" and again.message == "cancelled by ops@contoso"
    drain(service)
    result = service.runs.get(run.id)
    assert result.status == "cancelled" and client.writes == 2 and service.destinations.active is None
    assert (result.counts["created"], result.counts["failed"], result.counts["read"]) == (2, 4, 6)
    assert service.cancel_run(run.id, "late").status == "cancelled"


def test_cancelling_a_queued_export_settles_it_without_sending(tmp_path):
    write_snapshot(tmp_path, "Vip", "2026/11/28/1700", ["a@x.com", "b@x.com"])
    service, client = make(tmp_path, ["Vip"], chunk_size=2)
    run = service.start("d1", "http")
    assert service.cancel_run(run.id, "cancelled by ops").status == "cancelling"
    drain(service)
    result = service.runs.get(run.id)
    assert result.status == "cancelled" and client.writes == 0 and result.total_chunks == 0


def test_a_finished_run_is_returned_unchanged_and_an_unknown_one_is_none(tmp_path):
    write_snapshot(tmp_path, "Vip", "2026/11/28/1700", ["a@x.com"])
    service, _ = make(tmp_path, ["Vip"])
    run = service.start("d1", "http")
    drain(service)
    assert service.cancel_run(run.id, "too late").status == "succeeded"
    assert service.runs.get(run.id).message is None
    assert service.cancel_run("nope", "x") is None
