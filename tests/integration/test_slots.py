"""The cross-instance connection cap, on real blob leases in Azurite."""
import logging
import threading
import time
import uuid
import warnings
from concurrent.futures import ThreadPoolExecutor

import pytest
from azure.storage.blob import BlobLeaseClient, BlobServiceClient

from shared.adapters.slots import LeaseSlots


@pytest.fixture
def container(azurite):
    """A container of its own for the test's slot blobs."""
    return BlobServiceClient.from_connection_string(azurite.connection_string).get_container_client("slots-" + uuid.uuid4().hex[:8])


def before_lease_calls(monkeypatch, container, method: str, before, account: str = "") -> None:
    """`before()` runs ahead of every BlobLeaseClient `method` call on `container`'s blobs (of `account`'s slots, if
    given; not on those of other tests' instances, still running): it may count the call, or raise instead of it."""
    real = getattr(BlobLeaseClient, method)
    where = f"/{container.container_name}/{account + '/' if account else ''}"

    def wrapped(self, *args, **kwargs):
        if where in self._client._config.url:
            before()
        return real(self, *args, **kwargs)

    monkeypatch.setattr(BlobLeaseClient, method, wrapped)


def test_two_instances_never_hold_more_than_the_cap_together(container):
    instances = [LeaseSlots(container, "acct", cap=3, lease_seconds=15), LeaseSlots(container, "acct", cap=3, lease_seconds=15)]
    lock = threading.Lock()
    inside = peak = 0

    def request(i: int) -> None:
        nonlocal inside, peak
        with instances[i % 2]():
            with lock:
                inside += 1
                peak = max(peak, inside)
            time.sleep(0.02)
            with lock:
                inside -= 1

    with ThreadPoolExecutor(12) as pool:
        list(pool.map(request, range(120)))
    assert peak == 3  # reached, never exceeded


def test_accounts_do_not_share_slots(container):
    first, second = LeaseSlots(container, "one", cap=1, lease_seconds=15), LeaseSlots(container, "two", cap=1, lease_seconds=15, wait_seconds=2)
    with first():
        with second():  # would time out if the accounts shared the one slot
            pass


def test_a_slot_held_longer_than_its_lease_stays_taken_until_released(container):
    """A request may outlast its 15 s lease (Mailchimp's read timeout is 60 s): the lease must be renewed meanwhile."""
    def hold_past_the_lease(account: str) -> None:
        holder = LeaseSlots(container, account, cap=1, lease_seconds=15)
        other = LeaseSlots(container, account, cap=1, lease_seconds=15, wait_seconds=1)  # another instance
        with holder():
            held_since = time.monotonic()
            attempts = 0
            while time.monotonic() - held_since < 25:  # well past the 15 s lease
                with pytest.raises(TimeoutError):
                    with other():
                        pass
                attempts += 1
        assert attempts >= 10
        # held past hold_seconds? No (25 s < 30 s): kept warm 0.25 s, then released; the other instance gets it then
        with LeaseSlots(container, account, cap=1, lease_seconds=15, wait_seconds=5)():
            pass

    again_if_the_wall_clock_jumps(hold_past_the_lease)


def test_a_lost_lease_is_logged_without_names_and_the_slot_stays_taken_here_until_its_request_ends(container, caplog):
    holder = LeaseSlots(container, "acct-7f3a", cap=1, lease_seconds=15, wait_seconds=1)
    with caplog.at_level(logging.WARNING, logger="shared.adapters.slots"):
        with holder():
            BlobLeaseClient(container.get_blob_client("acct-7f3a/slot-00")).break_lease(lease_break_period=0)
            deadline = time.monotonic() + 10  # the renewal after 5 s finds the lease broken
            while not slot_warnings(caplog) and time.monotonic() < deadline:
                time.sleep(0.1)
            (message,) = slot_warnings(caplog)
            assert "renewal failed" in message and "409" in message, message
            assert "acct-7f3a" not in message and "127.0.0.1" not in message and "devstoreaccount1" not in message, message
            with pytest.raises(TimeoutError):  # the request on the lost slot is still going: not a second one here
                with holder():
                    pass
        with holder():  # the request ended: the slot is free again
            pass
    assert len(slot_warnings(caplog)) == 1


def slot_warnings(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "shared.adapters.slots" and r.levelno == logging.WARNING]


def lease_state(container, name: str) -> str:
    return container.get_blob_client(name).get_blob_properties().lease.state


def test_a_slot_is_kept_warm_between_requests_of_one_instance_and_let_go_when_idle(container, monkeypatch):
    """Requests one after another take the slot's lease once, not once each (two storage calls saved per request);
    a slot nobody here uses is released within warm_seconds, so that other instances can take it."""
    holder = LeaseSlots(container, "acct", cap=1, lease_seconds=15, warm_seconds=0.3)
    calls = {"acquire": 0, "release": 0}
    for method in calls:
        before_lease_calls(monkeypatch, container, method, lambda method=method: calls.update({method: calls[method] + 1}))
    for _ in range(20):
        with holder():
            assert lease_state(container, "acct/slot-00") == "leased"
    assert calls == {"acquire": 1, "release": 0}
    assert lease_state(container, "acct/slot-00") == "leased"  # warm: still this instance's
    deadline = time.monotonic() + 5
    while lease_state(container, "acct/slot-00") != "available" and time.monotonic() < deadline:
        time.sleep(0.05)
    assert lease_state(container, "acct/slot-00") == "available"
    assert calls == {"acquire": 1, "release": 1}
    with LeaseSlots(container, "acct", cap=1, lease_seconds=15, wait_seconds=0)():  # another instance, first try
        pass


def test_under_steady_demand_here_another_instance_still_gets_a_slot(container):
    """A slot held past hold_seconds is released when its request ends and left to others for a moment: an instance
    that always has a request waiting does not keep every slot to itself."""
    busy = LeaseSlots(container, "acct", cap=1, lease_seconds=15, hold_seconds=1)
    other = LeaseSlots(container, "acct", cap=1, lease_seconds=15, wait_seconds=6)
    stop = threading.Event()

    def keep_busy() -> None:
        while not stop.is_set():
            with busy():
                time.sleep(0.01)

    with ThreadPoolExecutor(2) as pool:
        workers = [pool.submit(keep_busy) for _ in range(2)]
        time.sleep(0.5)  # the busy instance holds the slot, with a request always waiting for it
        try:
            started = time.monotonic()
            with other():
                waited = time.monotonic() - started
        finally:
            stop.set()
        for worker in workers:
            worker.result()
    assert waited < 3, waited


def test_a_release_storage_does_not_answer_loses_neither_the_slot_nor_a_renewal(container, monkeypatch):
    """A warm slot nobody took is released beside the renewal thread, best effort: a connection error there (not an
    HTTP answer) leaves the slot free here and the renewals going; the lease it could not release is still this
    instance's (same lease id), so both slots can be used at once right away rather than after the lease runs out."""
    from azure.core.exceptions import ServiceRequestError

    holder = LeaseSlots(container, "acct", cap=2, lease_seconds=15, warm_seconds=0.1, wait_seconds=2)
    failed = []

    def unreachable() -> None:
        if not failed:
            failed.append(True)
            raise ServiceRequestError("connection reset")

    before_lease_calls(monkeypatch, container, "release", unreachable)
    with holder():
        pass
    deadline = time.monotonic() + 5
    while not (failed and not holder._held) and time.monotonic() < deadline:  # goes cold; its release fails
        time.sleep(0.05)
    assert failed and not holder._held
    assert holder._renewer is not None and holder._renewer.is_alive()
    with holder():
        with holder():  # both slots: the one whose release failed is taken again at once
            pass


def test_a_warm_slot_whose_lease_may_run_out_is_not_used_for_a_new_request(container, monkeypatch):
    holder = LeaseSlots(container, "acct", cap=1, lease_seconds=15, warm_seconds=5)
    acquired = []
    before_lease_calls(monkeypatch, container, "acquire", lambda: acquired.append(True))
    with holder():
        pass
    with holder():  # warm: no new lease
        pass
    assert len(acquired) == 1
    holder._renewing["acct/slot-00"].valid_until = time.monotonic() + 1  # as if its renewals had stalled
    with holder():  # let go and leased anew, never started on a lease about to run out
        pass
    assert len(acquired) == 2


def test_a_renewal_storage_does_not_answer_is_tried_again_while_the_lease_holds(container, monkeypatch, caplog):
    """One unanswered renewal (a connection error, not storage saying the lease is gone) is not a lost slot: it is
    tried again a moment later, and the request keeps its slot without a warning."""
    from azure.core.exceptions import ServiceRequestError

    def renew_through_two_failures(account: str) -> None:
        holder = LeaseSlots(container, account, cap=1, lease_seconds=15)
        other = LeaseSlots(container, account, cap=1, lease_seconds=15, wait_seconds=0.5)
        failures = []

        def flaky() -> None:
            if len(failures) < 2:
                failures.append(True)
                raise ServiceRequestError("connection reset")

        before_lease_calls(monkeypatch, container, "renew", flaky, account)  # this attempt's slots only
        caplog.clear()
        with caplog.at_level(logging.INFO, logger="shared.adapters.slots"):
            with holder():
                time.sleep(18)  # past the 15 s lease: renewed at 5 s (fails), 7 s (fails), 9 s, ...
                assert len(failures) == 2
                with pytest.raises(TimeoutError):  # still this instance's
                    with other():
                        pass
        assert not [r for r in caplog.records if r.name == "shared.adapters.slots"]

    again_if_the_wall_clock_jumps(renew_through_two_failures)


# A forward jump of the wall clock against the monotonic one that runs out a lease renewed in time: a 15 s lease
# renewed every 5 s has at least 10 s left, less a renewal a little late.
LEASE_BREAKING_JUMP_SECONDS = 8


def again_if_the_wall_clock_jumps(held_past_a_lease) -> None:
    """Run `held_past_a_lease(account)`, and once more on a fresh account if another instance got the slot (its
    `pytest.raises(TimeoutError)` saw nothing raised) while the machine's wall clock leapt more than
    LEASE_BREAKING_JUMP_SECONDS ahead of its monotonic one. Azurite times leases by the wall clock and LeaseSlots by
    the monotonic one, so such a leap (a virtual machine paused, its wall clock set right on waking) runs a lease out
    whatever the renewals do; in Azure the storage service keeps the time. Any other failure, or this one without such
    a leap, fails the test."""
    for attempt in (1, 2):
        offset = _wall_minus_monotonic()
        try:
            held_past_a_lease(f"acct-{attempt}")
            return
        except pytest.fail.Exception as failure:
            jump = _wall_minus_monotonic() - offset
            if attempt == 2 or not str(failure).startswith("DID NOT RAISE") or jump <= LEASE_BREAKING_JUMP_SECONDS:
                raise
            warnings.warn(f"The wall clock jumped {jump:+.1f} s against the monotonic clock while the slot was held "
                          "(Azurite then runs leases out early, whatever the renewals did): tried again once on a "
                          "fresh account")


def _wall_minus_monotonic() -> float:
    return time.time() - time.monotonic()


def test_the_app_makes_one_set_of_slots_per_account(azurite, monkeypatch):
    """Every client of an account shares one LeaseSlots (its warm slots, lease ids and renewal thread), made once: one
    made and dropped at each lookup would be kept alive by the exit hook."""
    from shared import bootstrap
    from shared.config import load_settings
    from tests.integration.export_driver import MemorySecrets

    made: list[str] = []

    class Counted(LeaseSlots):
        def __init__(self, container, account, cap, **kwargs):
            made.append(account)
            super().__init__(container, account, cap, **kwargs)

    monkeypatch.setattr(bootstrap, "LeaseSlots", Counted)
    app = bootstrap.build(load_settings({"AzureWebJobsStorage": azurite.connection_string}), secrets=MemorySecrets())
    gate_for = app.exports.connections._gate_factory
    first = gate_for("us6:key-1", 10)
    assert gate_for("us6:key-1", 10) is first and gate_for("us6:key-2", 10) is not first
    assert made == ["us6:key-1", "us6:key-2"]


def test_warm_slots_are_released_at_exit(container):
    """A normal exit releases the warm slots (the hook registered by shared/adapters/slots.py), so other instances
    need not wait for their leases to run out."""
    from shared.adapters import slots

    holder = LeaseSlots(container, "acct", cap=1, lease_seconds=15, warm_seconds=30)
    with holder():
        pass
    assert lease_state(container, "acct/slot-00") == "leased"  # warm for 30 s
    slots._release_warm_slots()
    assert lease_state(container, "acct/slot-00") == "available"
