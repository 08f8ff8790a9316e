from shared.members import MemberResult, Outcome
from shared.runs import Run, SegmentPart, accounted, chunk_counts, zero_counts


def make_run():
    return Run(id="r1", destination_id="d1", trigger="http", status="running", created_at="2026-11-28T10:00:00+00:00",
               started_at="2026-11-28T10:00:00+00:00",
               segments=[SegmentPart("A", "s1", "A/", "A"), SegmentPart("B", "s2", "B/", "B")])


def test_chunk_counts_attribute_members_to_their_first_segment_and_count_tags_only_for_delivered():
    results = [MemberResult("a@x.io", Outcome.CREATED), MemberResult("b@x.io", Outcome.REFUSED, "fake"),
               MemberResult("c@x.io", Outcome.UNCHANGED)]
    counts = chunk_counts(results, {"a@x.io": "A", "b@x.io": "A", "c@x.io": "B"}, tagged={"a@x.io", "b@x.io", "c@x.io"})
    assert counts["A"]["created"] == 1 and counts["A"]["refused"] == 1 and counts["A"]["tagged"] == 1
    assert counts["B"]["unchanged"] == 1 and counts["B"]["tagged"] == 1


def test_settle_gives_succeeded_only_without_problems():
    run = make_run()
    run.segment("A").counts.update(read=3, created=2, duplicates=1)
    run.settle()
    assert run.status == "succeeded" and run.finished_at
    assert accounted(run.counts) == run.counts["read"] == 3


def test_settle_with_refusals_is_completed_with_errors_and_all_failed_is_failed():
    run = make_run()
    run.add({"A": {**zero_counts(), "read": 2, "created": 1, "refused": 1}})
    run.settle()
    assert run.status == "completed_with_errors"
    run = make_run()
    run.add({"B": {**zero_counts(), "read": 2, "failed": 2}})
    run.settle()
    assert run.status == "failed"


def test_public_view_has_totals_and_rate():
    run = make_run()
    run.add({"A": {**zero_counts(), "read": 10, "created": 10}})
    run.settle()
    run.finished_at = "2026-11-28T10:00:05+00:00"
    shown = run.public()
    assert shown["counts"]["created"] == 10 and shown["segments"][0]["counts"]["read"] == 10
    assert shown["elapsedSeconds"] == 5 and shown["profilesPerSecond"] == 2.0
