"""The cross-instance connection cap, on real blob leases in Azurite."""
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor

from azure.storage.blob import BlobServiceClient

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
