"""Erasure workers: a request's deletions and scrubbing (with what the queue gave up on), and files of addresses
the platform drops into the erasures container (Event Grid BlobCreated events, like segment files)."""
from __future__ import annotations

import json
import logging

import azure.functions as func

from shared import bootstrap, telemetry
from shared.config import CONTAINER_ERASURES, QUEUE_ERASURE_EVENTS, QUEUE_ERASURES, STORAGE_CONNECTION
from shared.events import created_blobs

bp = func.Blueprint()
log = logging.getLogger("function_app")

# Every 15 minutes: how long a request cut short may stay `queued` before its work is queued after all. A fixed
# schedule, like the retention sweep's; switch it off with AzureWebJobs.erasure_stranded_sweep.Disabled=true.
STRANDED_SCHEDULE = "0 */15 * * * *"


def _erasure_id(msg: func.QueueMessage) -> str:
    return json.loads(msg.get_body())["erasureId"]


@bp.queue_trigger(arg_name="msg", queue_name=QUEUE_ERASURES, connection=STORAGE_CONNECTION)
def process_erasure(msg: func.QueueMessage) -> None:
    bootstrap.app().erasures.process(_erasure_id(msg))


@bp.queue_trigger(arg_name="msg", queue_name=QUEUE_ERASURES + "-poison", connection=STORAGE_CONNECTION)
def process_erasure_poisoned(msg: func.QueueMessage) -> None:
    erasures = bootstrap.poisoned(QUEUE_ERASURES + "-poison", f"message {msg.id}").erasures  # before the body is read
    erasures.gave_up(_erasure_id(msg))


@bp.queue_trigger(arg_name="msg", queue_name=QUEUE_ERASURE_EVENTS, connection=STORAGE_CONNECTION)
def erasure_file_arrived(msg: func.QueueMessage) -> None:
    _record_dropped(msg)


@bp.queue_trigger(arg_name="msg", queue_name=QUEUE_ERASURE_EVENTS + "-poison", connection=STORAGE_CONNECTION)
def erasure_file_arrived_poisoned(msg: func.QueueMessage) -> None:
    """Tried again: nothing else would ever read a dropped file that was not recorded, and recording one again is
    harmless (`on_dropped` finds the request an earlier attempt made)."""
    queue = QUEUE_ERASURE_EVENTS + "-poison"
    bootstrap.poisoned(queue, f"message {msg.id}", telemetry.handled_again(
        queue, "the file it names is in its body, and still in the erasures container, maybe not requested",
        "write that file again once the cause is fixed"))
    _record_dropped(msg)


def _record_dropped(msg: func.QueueMessage) -> None:
    for name in created_blobs(msg.get_body(), CONTAINER_ERASURES):
        erasure = bootstrap.app().erasures.on_dropped(name)
        if erasure is not None:
            log.info("erasure file %s: request %s (%s)", name, erasure.id, erasure.status)


@bp.timer_trigger(arg_name="timer", schedule=STRANDED_SCHEDULE, run_on_startup=False, use_monitor=True)
def erasure_stranded_sweep(timer: func.TimerRequest) -> None:
    for erasure_id in bootstrap.app().erasures.queue_stranded():
        log.warning("erasure request %s was recorded but its work never queued (its request was cut short): queued now",
                    erasure_id)
