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
    app_ = bootstrap.app()
    for name in created_blobs(msg.get_body(), app_.settings.segments_container):
        app_.exports.on_blob_created(name)


@bp.queue_trigger(arg_name="msg", queue_name=QUEUE_SEGMENT_EVENTS + "-poison", connection=STORAGE_CONNECTION)
def segment_arrived_poisoned(msg: func.QueueMessage) -> None:
    """Not tried again here: the snapshot stays in storage, and the schedule exports each segment's newest one."""
    bootstrap.app()  # first: it sets telemetry up, in a process this message may be the first of
    telemetry.poisoned(QUEUE_SEGMENT_EVENTS + "-poison", f"message {msg.id}",
                       "the snapshot it announced was not exported on arrival: the next scheduled export reads it, or "
                       "start one by hand")
