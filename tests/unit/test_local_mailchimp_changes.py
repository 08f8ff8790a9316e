"""The local Mailchimp's time-filtered listings read only the members changed last (Audience.changed_since): they must
find exactly whom a look at every member finds, whatever order concurrent calls stamp their changes in."""
from __future__ import annotations

from hypothesis import example, given, settings
from hypothesis import strategies as st

import json

from mailchimp_local import persist, refusals
from mailchimp_local.audience import Audience, MemberWrite
from mailchimp_local.world import Settings, World

EMAILS = [f"person{n}@example.org" for n in range(12)]

# (kind, address, time): writes stamped with times that go back and forth, as concurrent calls stamp them
operations = st.lists(st.tuples(
    st.sampled_from(["subscribe", "unsubscribe", "rename", "archive", "forget", "shift", "backdate"]),
    st.sampled_from(EMAILS),
    st.integers(min_value=0, max_value=60).map(float),
), max_size=40)


def _apply(audience: Audience, kind: str, email: str, now: float) -> None:
    try:
        _change(audience, kind, email, now)
    except refusals.Refused:  # e.g. an address deleted for good, written again: nothing changes
        pass


def _change(audience: Audience, kind: str, email: str, now: float) -> None:
    member = audience.find(email)
    if kind == "subscribe":
        audience.write(MemberWrite(email, status="subscribed"), now)
    elif kind == "unsubscribe":
        audience.put_state(email, "unsubscribed", now, unsubscribed_by="admin", archived=False, merge_fields=None)
    elif kind == "rename" and member is not None and not member.archived:
        audience.write(MemberWrite(email, merge_fields={"FNAME": f"n{now:g}"}), now)
    elif kind == "archive" and member is not None and not member.archived:
        audience.archive(member, now)
    elif kind == "forget" and member is not None:
        audience.forget(member, now)
    elif kind == "shift":  # the admin's time shift (mailchimp_local/admin.py): every member's times move back alike
        audience.move_back(now)
    elif kind == "backdate":  # the admin's put with given times: unsubscribed at `now`, changed 40 s earlier
        member = audience.put_state(email, "unsubscribed", 60.0, unsubscribed_by="admin", archived=False,
                                    merge_fields=None)
        audience.set_times(member, now - 40, now)


def _audience(world: World | None = None) -> Audience:
    """The demo audience as the local Mailchimp starts (FNAME and LNAME text fields)."""
    return next(iter((world or World(Settings())).audiences.values()))


def _reload(audience: Audience) -> Audience:
    """The audience as the local Mailchimp has it after saving its state file and starting again."""
    world = World(Settings())
    world.audiences = {audience.id: audience}
    return _audience(persist.restore(Settings(), json.loads(json.dumps(persist.snapshot(world)))))


def _found(audience: Audience, earliest: float, attribute: str) -> tuple[list[str], list[str]]:
    """(what changed_since leads to, what every member read leads to), both in creation order."""
    def late(m) -> bool:
        return (getattr(m, attribute) or float("-inf")) >= earliest
    return ([m.email for m in audience.changed_since(earliest) if late(m)],
            [m.email for m in audience.members.values() if late(m)])


@settings(max_examples=400, deadline=None)
@given(operations, st.integers(min_value=-70, max_value=70).map(float))
def test_a_time_filter_finds_whom_reading_every_member_finds(ops, earliest: float) -> None:
    audience = _audience()
    for op in ops:
        _apply(audience, *op)
    for attribute in ("changed", "unsubscribed_at"):
        indexed, everyone = _found(audience, earliest, attribute)
        assert indexed == everyone, attribute


@settings(max_examples=300, deadline=None)
@given(operations, operations, st.integers(min_value=-70, max_value=70).map(float))
# unsubscribed at 50, then renamed by a call stamped 10: its unsubscribe time is later than its change time
@example([("unsubscribe", EMAILS[0], 50.0), ("rename", EMAILS[0], 10.0), ("subscribe", EMAILS[1], 20.0)], [], 30.0)
# ... and a later call stamped earlier still, after the state file was loaded (helper-101's case)
@example([("unsubscribe", EMAILS[0], 60.0), ("rename", EMAILS[0], 30.0)], [("subscribe", EMAILS[1], 10.0)], 60.0)
def test_an_audience_saved_and_loaded_again_still_finds_them(before, after, earliest: float) -> None:
    audience = _audience()
    for op in before:
        _apply(audience, *op)
    loaded = _reload(audience)
    for op in after:
        _apply(loaded, *op)
    for attribute in ("changed", "unsubscribed_at"):
        indexed, everyone = _found(loaded, earliest, attribute)
        assert indexed == everyone, attribute


def test_a_listing_since_a_time_reads_only_the_members_changed_since() -> None:
    audience = _audience()
    for n in range(1000):
        audience.write(MemberWrite(f"old{n}@example.org", status="subscribed"), 10.0)
    audience.write(MemberWrite("new@example.org", status="subscribed"), 100.0)
    assert [m.email for m in audience.changed_since(50.0)] == ["new@example.org"]


def test_a_member_given_old_times_by_the_admin_hides_no_one_changed_before_it() -> None:
    audience = _audience()
    _apply(audience, "unsubscribe", "ann@example.org", 100.0)
    _apply(audience, "backdate", "old@example.org", 10.0)  # seeded as unsubscribed long ago, after ann
    indexed, everyone = _found(audience, 90.0, "unsubscribed_at")
    assert indexed == everyone == ["ann@example.org"]


def test_a_wide_window_lists_every_member_in_creation_order() -> None:
    audience = _audience()
    for n in range(40):
        audience.write(MemberWrite(f"m{n}@example.org", status="subscribed"), float(40 - n))
    assert [m.email for m in audience.changed_since(0.0)] == [f"m{n}@example.org" for n in range(40)]
