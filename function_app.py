"""Azure Functions entry points. Each function only translates its trigger into a call on the domain."""
from __future__ import annotations

import json
import logging
import re
from typing import Any
from urllib.parse import urlencode, urlsplit

import azure.functions as func

from shared import bootstrap
from shared.config import QUEUE_CHUNKS, QUEUE_PLANS, QUEUE_SEGMENT_EVENTS, STORAGE_CONNECTION
from shared.destination_service import DestinationConflict, etag
from shared.destinations import InvalidDestination
from shared.events import created_blobs
from shared.exports import Refused
from shared.oauth import OAuthFailed

app = func.FunctionApp(http_auth_level=func.AuthLevel.FUNCTION)
log = logging.getLogger("function_app")


def _json(body: Any, status: int = 200, headers: dict[str, str] | None = None) -> func.HttpResponse:
    """Every JSON answer (and the errors report) is `Cache-Control: no-store`: none is for a shared cache to keep."""
    return func.HttpResponse(json.dumps(body, ensure_ascii=False), status_code=status, mimetype="application/json",
                             headers={"Cache-Control": "no-store", **(headers or {})})


def _error(status: int, message: str, details: list[dict[str, str]] | None = None) -> func.HttpResponse:
    return _json({"error": message, **({"details": details} if details else {})}, status)


# A JSON string (closed, or running to the end of the body) or one bracket; strings are skipped whole, so brackets in
# them do not count. Possessive, so even a body of unclosed strings and backslashes is scanned in linear time.
_JSON_TOKEN = re.compile(r'"(?:[^"\\]++|\\.)*+"?|[\[{]|[\]}]', re.DOTALL)


def _deeper_than(text: str, limit: int) -> bool:
    """Whether objects and arrays nest deeper than `limit`, found by scanning brackets outside strings (no recursion,
    and it stops at the first bracket too deep), so json.loads never meets a body that could exhaust its stack."""
    depth = 0
    for token in _JSON_TOKEN.finditer(text):
        bracket = token[0]
        if bracket in ("[", "{"):
            depth += 1
            if depth > limit:
                return True
        elif bracket in ("]", "}"):
            depth -= 1
    return False


def _body(req: func.HttpRequest, required: bool = True) -> dict[str, Any]:
    """The request's JSON object. Refused (InvalidDestination, answered 400) before parsing when it is larger than
    HTTP_MAX_BODY_BYTES, not UTF-8 or nests deeper than HTTP_MAX_JSON_DEPTH; after, when it is not JSON, not an
    object, or holds an unpaired surrogate escape ("\\ud800", which no storage or log could encode)."""
    settings = bootstrap.app().settings
    raw = req.get_body() or b""
    if not raw and not required:
        return {}

    def refused(message: str) -> InvalidDestination:
        return InvalidDestination([{"field": "(body)", "message": message}])

    if len(raw) > settings.http_max_body_bytes:
        raise refused(f"the body is {len(raw):,} bytes; at most {settings.http_max_body_bytes:,} are accepted "
                      "(HTTP_MAX_BODY_BYTES)")
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as error:
        raise refused(f"the body must be JSON in UTF-8 (byte {error.start} is not UTF-8)") from None
    if _deeper_than(text, settings.http_max_json_depth):
        raise refused(f"the body nests objects and arrays more than {settings.http_max_json_depth} deep "
                      "(HTTP_MAX_JSON_DEPTH)")
    try:
        body = json.loads(text)
    except (ValueError, RecursionError) as error:  # RecursionError: not under the depth limit; a backstop
        raise refused(f"the body must be JSON: {error}") from None
    if not isinstance(body, dict):
        kind = {list: "an array", str: "a string", bool: "a boolean", int: "a number", float: "a number"}.get(type(body), "null")
        raise refused(f"the body must be a JSON object ({{...}}), not {kind}")
    try:
        json.dumps(body, ensure_ascii=False).encode("utf-8")
    except UnicodeEncodeError:
        raise refused("the body holds an unpaired surrogate escape (\\ud800 to \\udfff without its pair); "
                      "send the character itself or both halves") from None
    return body


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
    """ETag: the settings' version, to send back as If-Match with a PATCH or DELETE (412 if it changed meanwhile)."""
    found = bootstrap.app().destinations.get_versioned(req.route_params["id"])
    if found is None:
        return _error(404, f"destination {req.route_params['id']} does not exist")
    return _json(found[0].public(), headers={"ETag": etag(found[1])})


@app.route(route="destinations/{id}", methods=["PATCH"])
def update_destination(req: func.HttpRequest) -> func.HttpResponse:
    """JSON Merge Patch of the create body: null removes (e.g. statusForNew), consent.accepted false withdraws."""
    try:
        destination = bootstrap.app().destinations.update(req.route_params["id"], _body(req), _principal(req),
                                                          if_match=req.headers.get("if-match"))
    except InvalidDestination as error:
        return _error(400, "the change is not valid; nothing was changed", error.problems)
    except DestinationConflict as conflict:  # 409: lost to a change made meanwhile; 412: If-Match is out of date
        return _error(conflict.status, conflict.message)
    if destination is None:
        return _error(404, f"destination {req.route_params['id']} does not exist")
    return _json(destination.public())


@app.route(route="destinations/{id}", methods=["DELETE"])
def delete_destination(req: func.HttpRequest) -> func.HttpResponse:
    """204 every time, also for a destination already gone, so a retried DELETE after a timeout is harmless."""
    try:
        bootstrap.app().destinations.delete(req.route_params["id"], if_match=req.headers.get("if-match"))
    except DestinationConflict as conflict:
        return _error(conflict.status, conflict.message)
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
    except InvalidDestination as error:
        return _error(400, 'the body must be empty or a JSON object, e.g. {"segments": ["HighValueCustomers"]}', error.problems)
    segments = body.get("segments")
    if segments is not None and not (isinstance(segments, list) and all(isinstance(s, str) for s in segments)):
        return _error(400, '"segments" must be a list of segment names, e.g. ["HighValueCustomers"]')
    confirm_untag = body.get("confirmUntag") is True
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


ERRORS_PAGE_LINES = 10_000  # lines of the errors report per answer, unless ?limit= says otherwise
ERRORS_PAGE_MAX_LINES = 50_000


@app.route(route="exports/{runId}/errors", methods=["GET"])
def export_errors(req: func.HttpRequest) -> func.HttpResponse:
    """One page of the run's errors report as JSON Lines (?limit=, default ERRORS_PAGE_LINES); while more follow, the
    answer carries `x-continuation: <token>` and `Link: <...?limit=..&continuation=<token>>; rel="next"`."""
    app_ = bootstrap.app()
    run = app_.exports.get_run(req.route_params["runId"])
    if run is None:
        return _error(404, f"export {req.route_params['runId']} does not exist")
    if app_.destinations.get(run.destination_id) is None:
        return _error(410, "the per-row report was removed with the destination (it named people); the run's counts remain")
    limit = req.params.get("limit") or str(ERRORS_PAGE_LINES)
    if not re.fullmatch(r"[0-9]{1,6}", limit) or not 1 <= int(limit) <= ERRORS_PAGE_MAX_LINES:
        return _error(400, f"limit must be a whole number of lines from 1 to {ERRORS_PAGE_MAX_LINES:,} "
                           f"(default {ERRORS_PAGE_LINES:,})")
    try:
        lines, continuation = app_.exports.error_page(run.id, int(limit), req.params.get("continuation") or None)
    except Refused as refused:
        return _error(refused.status, refused.message)
    headers = {"Cache-Control": "no-store"}  # the one answer that carries email addresses
    if continuation:
        following = f"{urlsplit(req.url).path}?{urlencode({'limit': int(limit), 'continuation': continuation})}"
        headers.update({"x-continuation": continuation, "Link": f'<{following}>; rel="next"'})
    return func.HttpResponse(b"".join(lines), mimetype="application/x-ndjson", headers=headers)


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
