"""Exports: start one, watch runs, read a run's per-row errors report."""
from __future__ import annotations

import re
from urllib.parse import urlencode, urlsplit

import azure.functions as func

from blueprints.http import error_answer, json_answer, json_body
from shared import bootstrap
from shared.destinations import InvalidDestination
from shared.exports import Refused

bp = func.Blueprint(http_auth_level=func.AuthLevel.FUNCTION)


@bp.route(route="destinations/{id}/exports", methods=["POST"])
def start_export(req: func.HttpRequest) -> func.HttpResponse:
    try:
        body = json_body(req, required=False)
    except InvalidDestination as error:
        return error_answer(400, 'the body must be empty or a JSON object, e.g. {"segments": ["HighValueCustomers"]}',
                            error.problems)
    segments = body.get("segments")
    if segments is not None and not (isinstance(segments, list) and all(isinstance(s, str) for s in segments)):
        return error_answer(400, '"segments" must be a list of segment names, e.g. ["HighValueCustomers"]')
    confirm_untag = body.get("confirmUntag") is True
    try:
        run = bootstrap.app().exports.start(req.route_params["id"], "http", segments, confirm_untag=confirm_untag)
    except Refused as refused:
        return error_answer(refused.status, refused.message)
    return json_answer({"id": run.id, "status": run.status}, 202, {"Location": f"/api/exports/{run.id}"})


@bp.route(route="destinations/{id}/exports", methods=["GET"])
def list_exports(req: func.HttpRequest) -> func.HttpResponse:
    return json_answer({"exports": [r.public() for r in bootstrap.app().exports.runs_of(req.route_params["id"])]})


@bp.route(route="exports/{runId}", methods=["GET"])
def get_export(req: func.HttpRequest) -> func.HttpResponse:
    run = bootstrap.app().exports.get_run(req.route_params["runId"])
    if run is None:
        return error_answer(404, f"export {req.route_params['runId']} does not exist")
    return json_answer(run.public())


ERRORS_PAGE_LINES = 10_000  # lines of the errors report per answer, unless ?limit= says otherwise
ERRORS_PAGE_MAX_LINES = 50_000


@bp.route(route="exports/{runId}/errors", methods=["GET"])
def export_errors(req: func.HttpRequest) -> func.HttpResponse:
    """One page of the run's errors report as JSON Lines (?limit=, default ERRORS_PAGE_LINES); while more follow, the
    answer carries `x-continuation: <token>` and `Link: <...?limit=..&continuation=<token>>; rel="next"`."""
    app_ = bootstrap.app()
    run = app_.exports.get_run(req.route_params["runId"])
    if run is None:
        return error_answer(404, f"export {req.route_params['runId']} does not exist")
    if app_.destinations.get(run.destination_id) is None:
        return error_answer(410, "the per-row report was removed with the destination (it named people); the run's counts remain")
    limit = req.params.get("limit") or str(ERRORS_PAGE_LINES)
    if not re.fullmatch(r"[0-9]{1,6}", limit) or not 1 <= int(limit) <= ERRORS_PAGE_MAX_LINES:
        return error_answer(400, f"limit must be a whole number of lines from 1 to {ERRORS_PAGE_MAX_LINES:,} "
                           f"(default {ERRORS_PAGE_LINES:,})")
    try:
        lines, continuation = app_.exports.error_page(run.id, int(limit), req.params.get("continuation") or None)
    except Refused as refused:
        return error_answer(refused.status, refused.message)
    headers = {"Cache-Control": "no-store"}  # the one answer that carries email addresses
    if continuation:
        following = f"{urlsplit(req.url).path}?{urlencode({'limit': int(limit), 'continuation': continuation})}"
        headers.update({"x-continuation": continuation, "Link": f'<{following}>; rel="next"'})
    return func.HttpResponse(b"".join(lines), mimetype="application/x-ndjson", headers=headers)
