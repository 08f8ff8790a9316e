"""The export pipeline's queue workers: plan a run, process its chunks, and count what the queues gave up on."""
from __future__ import annotations

import json
import re
from typing import Any

import azure.functions as func

from shared import bootstrap
from shared.config import QUEUE_CHUNKS, QUEUE_PLANS, STORAGE_CONNECTION

bp = func.Blueprint()


def _message(msg: func.QueueMessage) -> dict[str, Any]:
    return json.loads(msg.get_body())


_SHAPES = {"runId": re.compile(r"[0-9]{8}T[0-9]{6}-[0-9a-f]{8}"), "chunk": re.compile(r"[0-9]{1,9}")}  # runs.new_run_id


def _about(msg: func.QueueMessage, *keys: str) -> str:
    """What a poisoned message was for, for its warning: logged before the body is used, so a body that cannot be
    read (maybe why it was poisoned) is still reported, by its message id. Only values shaped as the app writes them
    are logged: a message written by someone else could hold anything, an address too."""
    try:
        body = _message(msg)
        values = [str(body[key]) for key in keys]
    except (ValueError, KeyError, TypeError):
        values = []
    if len(values) == len(keys) and all(_SHAPES[key].fullmatch(value) for key, value in zip(keys, values)):
        return ", ".join(f"{key} {value}" for key, value in zip(keys, values))
    return f"message {msg.id}, whose body is not what the app writes"


def _attempt(msg: func.QueueMessage) -> str:
    return f"{(msg.id or 'local')[:8]}-{msg.dequeue_count or 0}"


@bp.queue_trigger(arg_name="msg", queue_name=QUEUE_PLANS, connection=STORAGE_CONNECTION)
def plan_export(msg: func.QueueMessage) -> None:
    bootstrap.app().exports.plan(_message(msg)["runId"])


@bp.queue_trigger(arg_name="msg", queue_name=QUEUE_PLANS + "-poison", connection=STORAGE_CONNECTION)
def plan_export_poisoned(msg: func.QueueMessage) -> None:
    exports = bootstrap.poisoned(QUEUE_PLANS + "-poison", _about(msg, "runId")).exports
    exports.plan_gave_up(_message(msg)["runId"])


@bp.queue_trigger(arg_name="msg", queue_name=QUEUE_CHUNKS, connection=STORAGE_CONNECTION)
def export_chunk(msg: func.QueueMessage) -> None:
    body = _message(msg)
    bootstrap.app().exports.process_chunk(body["runId"], int(body["chunk"]), _attempt(msg))


@bp.queue_trigger(arg_name="msg", queue_name=QUEUE_CHUNKS + "-poison", connection=STORAGE_CONNECTION)
def export_chunk_poisoned(msg: func.QueueMessage) -> None:
    exports = bootstrap.poisoned(QUEUE_CHUNKS + "-poison", _about(msg, "runId", "chunk")).exports
    body = _message(msg)
    exports.chunk_gave_up(body["runId"], int(body["chunk"]), _attempt(msg))
