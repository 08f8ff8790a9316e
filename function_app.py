"""Azure Functions entry points. Each function only translates its trigger into a call on the domain."""
from __future__ import annotations

import json
import logging
from typing import Any

import azure.functions as func

from shared import bootstrap
from shared.config import QUEUE_CHUNKS, QUEUE_PLANS, QUEUE_SEGMENT_EVENTS, STORAGE_CONNECTION
from shared.destinations import InvalidDestination
from shared.events import created_blobs
from shared.exports import Refused
from shared.oauth import OAuthFailed

app = func.FunctionApp(http_auth_level=func.AuthLevel.FUNCTION)
log = logging.getLogger("function_app")


def _json(body: Any, status: int = 200, headers: dict[str, str] | None = None) -> func.HttpResponse:
    return func.HttpResponse(json.dumps(body, ensure_ascii=False), status_code=status, mimetype="application/json", headers=headers)


def _error(status: int, message: str, details: list[dict[str, str]] | None = None) -> func.HttpResponse:
    return _json({"error": message, **({"details": details} if details else {})}, status)


def _body(req: func.HttpRequest, required: bool = True) -> Any:
    raw = req.get_body()
    if not raw and not required:
        return {}
    try:
        return json.loads(raw)
    except ValueError:
        raise InvalidDestination([{"field": "(body)", "message": "the body must be JSON"}]) from None


def _principal(req: func.HttpRequest) -> str:
    """Who acts: the signed-in user from App Service authentication, else the function key's holder."""
    return req.headers.get("x-ms-client-principal-name") or "function key"


@app.route(route="destinations", methods=["POST"])
def create_destination(req: func.HttpRequest) -> func.HttpResponse:
    try:
        destination = bootstrap.app().destinations.create(_body(req), _principal(req))
    except InvalidDestination as error:
        return _error(400, "the destination is not valid", error.problems)
    return _json(destination.public(), 201, {"Location": f"/api/destinations/{destination.id}"})


@app.route(route="destinations", methods=["GET"])
def list_destinations(req: func.HttpRequest) -> func.HttpResponse:
    return _json({"destinations": [d.public() for d in bootstrap.app().destinations.list()]})


@app.route(route="destinations/{id}", methods=["GET"])
def get_destination(req: func.HttpRequest) -> func.HttpResponse:
    destination = bootstrap.app().destinations.get(req.route_params["id"])
    if destination is None:
        return _error(404, f"destination {req.route_params['id']} does not exist")
    return _json(destination.public())


@app.route(route="destinations/{id}", methods=["PATCH"])
def update_destination(req: func.HttpRequest) -> func.HttpResponse:
    """JSON Merge Patch of the create body: null removes (e.g. statusForNew), consent.accepted false withdraws."""
    try:
        destination = bootstrap.app().destinations.update(req.route_params["id"], _body(req), _principal(req))
    except InvalidDestination as error:
        return _error(400, "the change is not valid; nothing was changed", error.problems)
    if destination is None:
        return _error(404, f"destination {req.route_params['id']} does not exist")
    return _json(destination.public())


@app.route(route="destinations/{id}", methods=["DELETE"])
def delete_destination(req: func.HttpRequest) -> func.HttpResponse:
    """204 every time, also for a destination already gone, so a retried DELETE after a timeout is harmless."""
    bootstrap.app().destinations.delete(req.route_params["id"])
    return func.HttpResponse(status_code=204)


@app.route(route="destinations/{id}/mailchimp/connect", methods=["GET"])
def connect_mailchimp(req: func.HttpRequest) -> func.HttpResponse:
    create_missing = req.params.get("createMissingMergeFields", "").lower() == "true"
    try:
        url = bootstrap.app().destinations.connect_url(req.route_params["id"], create_missing)
    except OAuthFailed as failed:
        return _error(failed.status, failed.message)
    if url is None:
        return _error(404, f"destination {req.route_params['id']} does not exist")
    return _json({"authorizeUrl": url}, 302, {"Location": url, "Cache-Control": "no-store"})


@app.route(route="mailchimp/oauth/callback", methods=["GET"], auth_level=func.AuthLevel.ANONYMOUS)
def mailchimp_oauth_callback(req: func.HttpRequest) -> func.HttpResponse:
    """The only route without a function key (Mailchimp's redirect cannot carry one): the signed state guards it."""
    try:
        destination = bootstrap.app().destinations.finish_oauth(req.params)
    except OAuthFailed as failed:
        return _error(failed.status, failed.message)
    except InvalidDestination as error:
        return _error(422, "Mailchimp is reachable but the destination does not fit its audience; nothing was stored", error.problems)
    return _json({"connected": True, "destinationId": destination.id, "method": "oauth",
                  "message": "Mailchimp is connected; this window can be closed"})


@app.route(route="destinations/{id}/exports", methods=["POST"])
def start_export(req: func.HttpRequest) -> func.HttpResponse:
    try:
        body = _body(req, required=False)
    except InvalidDestination:
        return _error(400, 'the body must be JSON, e.g. {"segments": ["HighValueCustomers"]}, or empty')
    segments = body.get("segments") if isinstance(body, dict) else None
    confirm_untag = isinstance(body, dict) and body.get("confirmUntag") is True
    try:
        run = bootstrap.app().exports.start(req.route_params["id"], "http", segments, confirm_untag=confirm_untag)
    except Refused as refused:
        return _error(refused.status, refused.message)
    return _json({"id": run.id, "status": run.status}, 202, {"Location": f"/api/exports/{run.id}"})


@app.route(route="destinations/{id}/exports", methods=["GET"])
def list_exports(req: func.HttpRequest) -> func.HttpResponse:
    return _json({"exports": [r.public() for r in bootstrap.app().exports.runs_of(req.route_params["id"])]})


@app.route(route="exports/{runId}", methods=["GET"])
def get_export(req: func.HttpRequest) -> func.HttpResponse:
    run = bootstrap.app().exports.get_run(req.route_params["runId"])
    if run is None:
        return _error(404, f"export {req.route_params['runId']} does not exist")
    return _json(run.public())


@app.route(route="exports/{runId}/errors", methods=["GET"])
def export_errors(req: func.HttpRequest) -> func.HttpResponse:
    app_ = bootstrap.app()
    run = app_.exports.get_run(req.route_params["runId"])
    if run is None:
        return _error(404, f"export {req.route_params['runId']} does not exist")
    if app_.destinations.get(run.destination_id) is None:
        return _error(410, "the per-row report was removed with the destination (it named people); the run's counts remain")
    return func.HttpResponse(b"".join(app_.exports.error_lines(run.id)), mimetype="application/x-ndjson")


def _message(msg: func.QueueMessage) -> dict[str, Any]:
    return json.loads(msg.get_body())


def _attempt(msg: func.QueueMessage) -> str:
    return f"{(msg.id or 'local')[:8]}-{msg.dequeue_count or 0}"


@app.queue_trigger(arg_name="msg", queue_name=QUEUE_PLANS, connection=STORAGE_CONNECTION)
def plan_export(msg: func.QueueMessage) -> None:
    bootstrap.app().exports.plan(_message(msg)["runId"])


@app.queue_trigger(arg_name="msg", queue_name=QUEUE_PLANS + "-poison", connection=STORAGE_CONNECTION)
def plan_export_poisoned(msg: func.QueueMessage) -> None:
    bootstrap.app().exports.plan_gave_up(_message(msg)["runId"])


@app.queue_trigger(arg_name="msg", queue_name=QUEUE_CHUNKS, connection=STORAGE_CONNECTION)
def export_chunk(msg: func.QueueMessage) -> None:
    body = _message(msg)
    bootstrap.app().exports.process_chunk(body["runId"], int(body["chunk"]), _attempt(msg))


@app.queue_trigger(arg_name="msg", queue_name=QUEUE_CHUNKS + "-poison", connection=STORAGE_CONNECTION)
def export_chunk_poisoned(msg: func.QueueMessage) -> None:
    body = _message(msg)
    bootstrap.app().exports.chunk_gave_up(body["runId"], int(body["chunk"]), _attempt(msg))


@app.timer_trigger(arg_name="timer", schedule="%EXPORT_SCHEDULE%", run_on_startup=False, use_monitor=True)
def scheduled_exports(timer: func.TimerRequest) -> None:
    started = bootstrap.app().exports.on_schedule()
    log.info("schedule tick%s: %d export(s) started", " (past due)" if timer.past_due else "", len(started))


@app.queue_trigger(arg_name="msg", queue_name=QUEUE_SEGMENT_EVENTS, connection=STORAGE_CONNECTION)
def segment_arrived(msg: func.QueueMessage) -> None:
    app_ = bootstrap.app()
    for name in created_blobs(msg.get_body(), app_.settings.segments_container):
        app_.exports.on_blob_created(name)
