"""What starts exports without a person: the schedule, and new segment files arriving in storage."""
from __future__ import annotations

import logging

import azure.functions as func

from shared import bootstrap, telemetry
from shared.config import QUEUE_SEGMENT_EVENTS, STORAGE_CONNECTION
from shared.events import created_blobs

bp = func.Blueprint()
log = logging.getLogger("function_app")


@bp.timer_trigger(arg_name="timer", schedule="%EXPORT_SCHEDULE%", run_on_startup=False, use_monitor=True)
def scheduled_exports(timer: func.TimerRequest) -> None:
    if timer.past_due:
        log.info("schedule tick past due (the host was down at its time): checking once now")
    bootstrap.app().exports.on_schedule()  # logs the tick and what it started


@bp.queue_trigger(arg_name="msg", queue_name=QUEUE_SEGMENT_EVENTS, connection=STORAGE_CONNECTION)
def segment_arrived(msg: func.QueueMessage) -> None:
    _follow_arrivals(bootstrap.app(), msg)


@bp.queue_trigger(arg_name="msg", queue_name=QUEUE_SEGMENT_EVENTS + "-poison", connection=STORAGE_CONNECTION)
def segment_arrived_poisoned(msg: func.QueueMessage) -> None:
    """Tried again: a destination exporting on arrival only (its schedule off) would not export the snapshot until a
    newer one lands, and a snapshot is started at most once per destination, however often its events come."""
    queue = QUEUE_SEGMENT_EVENTS + "-poison"
    then = telemetry.handled_again(queue, "the blob it names is in its body", "start that segment's export by hand, or "
                                   "let the schedule, where it is on, export the newest snapshot")
    _follow_arrivals(bootstrap.poisoned(queue, f"message {msg.id}", then), msg)


def _follow_arrivals(app_: bootstrap.App, msg: func.QueueMessage) -> None:
    for name in created_blobs(msg.get_body(), app_.settings.segments_container):
        app_.exports.on_blob_created(name)
