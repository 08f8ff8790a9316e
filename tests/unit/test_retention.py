"""What the retention periods choose (shared/retention.py): files and names after RETENTION_PERSONAL_DAYS, the record
after RETENTION_RUN_DAYS, nothing of a run that has not finished."""
from __future__ import annotations

from datetime import UTC, datetime, timedelta

from hypothesis import given, settings
from hypothesis import strategies as st

from shared.retention import FORGOTTEN, NAME_REMOVED, Retention, due, forget_people, without_names
from shared.runs import Run, new_run_id, run_id_time

NOW = datetime(2027, 6, 1, 3, 0, tzinfo=UTC)
RETENTION = Retention(personal_days=30, run_days=365)


def run(run_id: str, finished_days_ago: float | None, status: str = "succeeded", **fields) -> Run:
    created = NOW - timedelta(days=(finished_days_ago or 0) + 1)
    finished = None if finished_days_ago is None else (NOW - timedelta(days=finished_days_ago)).isoformat()
    return Run(id=run_id, destination_id="d1", trigger="http", status=status, created_at=created.isoformat(),
               segments=[], finished_at=finished, **fields)


def test_files_and_names_go_after_the_personal_period_and_the_record_after_the_run_period():
    runs = [run("fresh", 29.9), run("personal", 30.1), run("forgotten", 200, details={FORGOTTEN: True}),
            run("old", 365.1), run("old-forgotten", 400, details={FORGOTTEN: True})]
    chosen = due(runs, NOW, RETENTION)
    assert chosen.forget == ("personal",)
    assert chosen.delete == ("old", "old-forgotten")


def test_a_run_that_has_not_finished_is_never_chosen_however_old():
    runs = [run("queued", None, status="queued"), run("cancelling", None, status="cancelling"),
            run("unreadable", None, status="succeeded")]
    runs[2].finished_at = "not a time"
    runs[0].created_at = (NOW - timedelta(days=5000)).isoformat()
    assert due(runs, NOW, RETENTION) == due([], NOW, RETENTION)


def test_forgetting_clears_who_started_and_who_cancelled_and_the_preview_sample_but_keeps_the_counts():
    cancelled = run("r1", 31, status="cancelled", started_by="ada@contoso.example",
                    message="cancelled by Ada at Contoso <ada@contoso.example> at 2027-04-01T10:00:00.000+00:00",
                    details={"preview": {"segments": {"A": {"created": 3}}, "sample": [{"memberHash": "ab12"}]}})
    assert forget_people(cancelled, NOW, RETENTION) is True
    assert cancelled.started_by is None
    assert cancelled.message == f"cancelled by {NAME_REMOVED} at 2027-04-01T10:00:00.000+00:00"
    assert cancelled.details == {"preview": {"segments": {"A": {"created": 3}}}, FORGOTTEN: True}
    assert forget_people(cancelled, NOW, RETENTION) is False, "done once: the record is not rewritten every day"


def test_forgetting_leaves_a_run_inside_its_period_alone():
    young = run("r1", 29, started_by="ada@contoso.example", message="cancelled by ada@contoso.example at x")
    assert forget_people(young, NOW, RETENTION) is False
    assert young.started_by == "ada@contoso.example" and young.message.startswith("cancelled by ada@")


def test_only_the_apps_own_naming_messages_are_rewritten():
    assert without_names("not sent: consent withdrawn by an admin at an unknown time") == (
        f"not sent: consent withdrawn by {NAME_REMOVED} at an unknown time")
    assert without_names("the credentials were refused by Mailchimp: connect again") == (
        "the credentials were refused by Mailchimp: connect again")


def test_only_runs_listed_before_the_shorter_period_can_be_due():
    """The sweep lists runs by id (creation time): a run created after the cut cannot have finished 30 days ago."""
    cut = RETENTION.listed_before(NOW)
    assert cut == run_id_time(NOW - timedelta(days=30))
    assert run_id_time(NOW - timedelta(days=30, seconds=1)) + "-0a1b2c3d" < cut
    assert cut < run_id_time(NOW - timedelta(days=30)) + "-0a1b2c3d" < run_id_time(NOW) + "-00000000"
    before, made, after = run_id_time(datetime.now(UTC)), new_run_id(), run_id_time(datetime.now(UTC))
    assert before <= made[:len(cut)] <= after, "the ids the app makes begin with their creation time"


finished_runs = st.builds(
    lambda days, forgotten, status: run("r", days, status=status, details={FORGOTTEN: True} if forgotten else {}),
    st.one_of(st.none(), st.floats(min_value=0, max_value=2000, allow_nan=False)), st.booleans(),
    st.sampled_from(["queued", "running", "cancelling", "succeeded", "failed", "cancelled", "previewed"]))


@settings(deadline=None)  # as the suite's other property tests: a loaded machine's pause is no failure
@given(st.lists(finished_runs, max_size=20), st.integers(1, 400), st.integers(0, 400))
def test_nothing_younger_than_its_period_and_nothing_unfinished_is_ever_chosen(runs, personal, extra):
    retention = Retention(personal_days=personal, run_days=personal + extra)
    for number, item in enumerate(runs):
        item.id = f"r{number}"
    by_id = {item.id: item for item in runs}
    chosen = due(runs, NOW, retention)
    assert not set(chosen.forget) & set(chosen.delete)
    for run_id in chosen.forget + chosen.delete:
        assert by_id[run_id].finished_at is not None, "an unfinished run was chosen"
    for run_id in chosen.forget:
        assert NOW - datetime.fromisoformat(by_id[run_id].finished_at) > timedelta(days=retention.personal_days)
        assert not by_id[run_id].details.get(FORGOTTEN)
    for run_id in chosen.delete:
        assert NOW - datetime.fromisoformat(by_id[run_id].finished_at) > timedelta(days=retention.run_days)
