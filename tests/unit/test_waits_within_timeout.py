"""Waits for a lease end before host.json's functionTimeout: a function that waits too long then fails and its
message is tried again, instead of the host stopping it at the timeout and restarting the worker with everything in it."""
from __future__ import annotations

import inspect
import json
from pathlib import Path

from shared.adapters.slots import LeaseSlots
from shared.adapters.storage import EXCLUSIVE_WAIT_SECONDS

ROOT = Path(__file__).resolve().parents[2]


def function_timeout_seconds() -> float:
    hours, minutes, seconds = json.loads((ROOT / "host.json").read_text())["functionTimeout"].split(":")
    return int(hours) * 3600 + int(minutes) * 60 + float(seconds)


def test_lease_waits_end_before_the_function_timeout() -> None:
    slot_wait = inspect.signature(LeaseSlots).parameters["wait_seconds"].default
    timeout = function_timeout_seconds()
    assert EXCLUSIVE_WAIT_SECONDS < timeout, "a work-blob lease wait must end before the function is stopped"
    assert slot_wait < timeout, "a connection-slot wait must end before the function is stopped"
