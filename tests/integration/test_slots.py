"""The cross-instance connection cap, on real blob leases in Azurite."""
import logging
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor

import pytest
from azure.storage.blob import BlobLeaseClient, BlobServiceClient

from shared.adapters.slots import LeaseSlots


def test_two_instances_never_hold_more_than_the_cap_together(azurite):
    container = BlobServiceClient.from_connection_string(azurite.connection_string).get_container_client("slots-" + uuid.uuid4().hex[:8])
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


def test_accounts_do_not_share_slots(azurite):
    container = BlobServiceClient.from_connection_string(azurite.connection_string).get_container_client("slots-" + uuid.uuid4().hex[:8])
    first, second = LeaseSlots(container, "one", cap=1, lease_seconds=15), LeaseSlots(container, "two", cap=1, lease_seconds=15, wait_seconds=2)
    with first():
        with second():  # would time out if the accounts shared the one slot
            pass


def test_a_slot_held_longer_than_its_lease_stays_taken_until_released(azurite):
    """A request may outlast its 15 s lease (Mailchimp's read timeout is 60 s): the lease must be renewed meanwhile."""
    container = BlobServiceClient.from_connection_string(azurite.connection_string).get_container_client("slots-" + uuid.uuid4().hex[:8])
    holder = LeaseSlots(container, "acct", cap=1, lease_seconds=15)
    other = LeaseSlots(container, "acct", cap=1, lease_seconds=15, wait_seconds=1)  # another instance
    with holder():
        held_since = time.monotonic()
        attempts = 0
        while time.monotonic() - held_since < 25:  # well past the 15 s lease
            with pytest.raises(TimeoutError):
                with other():
                    pass
            attempts += 1
    assert attempts >= 10
    with other():  # released: the other instance gets it at once
        pass


def test_a_lost_lease_is_logged_without_names_and_the_slot_stays_taken_here_until_its_request_ends(azurite, caplog):
    container = BlobServiceClient.from_connection_string(azurite.connection_string).get_container_client("slots-" + uuid.uuid4().hex[:8])
    holder = LeaseSlots(container, "acct-7f3a", cap=1, lease_seconds=15, wait_seconds=1)
    with caplog.at_level(logging.WARNING, logger="shared.adapters.slots"):
        with holder():
            BlobLeaseClient(container.get_blob_client("acct-7f3a/slot-00")).break_lease(lease_break_period=0)
            deadline = time.monotonic() + 10  # the renewal after 5 s finds the lease broken
            while not warnings(caplog) and time.monotonic() < deadline:
                time.sleep(0.1)
            (message,) = warnings(caplog)
            assert "renewal failed" in message and "409" in message, message
            assert "acct-7f3a" not in message and "127.0.0.1" not in message and "devstoreaccount1" not in message, message
            with pytest.raises(TimeoutError):  # the request on the lost slot is still going: not a second one here
                with holder():
                    pass
        with holder():  # the request ended: the slot is free again
            pass
    assert len(warnings(caplog)) == 1


def warnings(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "shared.adapters.slots" and r.levelno == logging.WARNING]
