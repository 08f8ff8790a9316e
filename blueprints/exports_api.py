"""Exports: start one, watch runs, read a run's per-row errors report.

Operators (Exports.Operator) do this for the destinations naming them among their export users, admins for every
destination; to anyone else a destination and its runs do not exist (404)."""
from __future__ import annotations

import re
from urllib.parse import urlencode, urlsplit

import azure.functions as func

from blueprints.http import (
    audit,
    error_answer,
    json_answer,
    json_body,
    operable,
    requires,
)
from shared import bootstrap
from shared.auth import OPERATOR, Principal
from shared.destinations import InvalidDestination
from shared.exports import ERRORS_PAGE_BYTES, Refused
from shared.report_csv import to_csv
from shared.runs import now_iso

bp = func.Blueprint(http_auth_level=func.AuthLevel.ANONYMOUS)


@bp.route(route="destinations/{id}/exports", methods=["POST"])
@requires(OPERATOR)
def start_export(req: func.HttpRequest, who: Principal) -> func.HttpResponse:
    if operable(who, req.route_params["id"]) is None and not who.is_admin:  # an admin learns from start() it is gone
        return error_answer(404, f"destination {req.route_params['id']} does not exist")
    try:
        body = json_body(req, required=False)
    except InvalidDestination as error:
        return error_answer(400, 'the body must be empty or a JSON object, e.g. {"segments": ["HighValueCustomers"]}',
                            error.problems)
    segments = body.get("segments")
    if segments is not None and not (isinstance(segments, list) and all(isinstance(s, str) for s in segments)):
        return error_answer(400, '"segments" must be a list of segment names, e.g. ["HighValueCustomers"]')
    confirm_untag = body.get("confirmUntag") is True
    dry_run = body.get("dryRun", False)
    if not isinstance(dry_run, bool):
        return error_answer(400, '"dryRun" must be true (a preview: nothing is sent) or false')
    try:
        run = bootstrap.app().exports.start(req.route_params["id"], "http", segments, confirm_untag=confirm_untag,
                                            started_by=who.label, dry_run=dry_run)
    except Refused as refused:
        return error_answer(refused.status, refused.message)
    audit(who, "export.previewed" if dry_run else "export.started", destination=run.destination_id, run=run.id)
    return json_answer({"id": run.id, "status": run.status}, 202, {"Location": f"/api/exports/{run.id}"})


EXPORTS_TOP = 20  # runs per GET /destinations/{id}/exports unless ?top= says otherwise
EXPORTS_MAX_TOP = 100


@bp.route(route="destinations/{id}/exports", methods=["GET"])
@requires(OPERATOR)
def list_exports(req: func.HttpRequest, who: Principal) -> func.HttpResponse:
    """The newest ?top= runs (default EXPORTS_TOP, 1..EXPORTS_MAX_TOP), newest first. An admin may list the runs of a deleted destination (run records stay, for audit)."""
    if not who.is_admin and operable(who, req.route_params["id"]) is None:
        return error_answer(404, f"destination {req.route_params['id']} does not exist")
    top = req.params.get("top") or str(EXPORTS_TOP)
    if not re.fullmatch(r"[0-9]{1,3}", top) or not 1 <= int(top) <= EXPORTS_MAX_TOP:
        return error_answer(400, f"top must be a whole number of runs from 1 to {EXPORTS_MAX_TOP} (default {EXPORTS_TOP})")
    runs = bootstrap.app().exports.runs_of(req.route_params["id"], top=int(top))
    return json_answer({"exports": [r.public() for r in runs]})


@bp.route(route="exports/{runId}", methods=["GET"])
@requires(OPERATOR)
def get_export(req: func.HttpRequest, who: Principal) -> func.HttpResponse:
    run = bootstrap.app().exports.get_run(req.route_params["runId"])
    if run is None or not (who.is_admin or operable(who, run.destination_id)):
        return error_answer(404, f"export {req.route_params['runId']} does not exist")
    return json_answer(run.public())


ERRORS_PAGE_LINES = 10_000  # lines of the errors report per answer, unless ?limit= says otherwise
ERRORS_PAGE_MAX_LINES = 50_000
PAGE_BYTES = ERRORS_PAGE_BYTES  # and an answer ends before this many bytes of JSON Lines, whichever comes first


@bp.route(route="exports/{runId}/errors", methods=["GET"])
@requires(OPERATOR)
def export_errors(req: func.HttpRequest, who: Principal) -> func.HttpResponse:
    """One page of the run's errors report as JSON Lines (?limit=, default ERRORS_PAGE_LINES; ended sooner at PAGE_BYTES
    bytes); while more follow, the answer carries `x-continuation: <token>` and
    `Link: <...?limit=..&continuation=<token>>; rel="next"`. As CSV the page is the same lines, a little smaller (no
    key names; the first page adds the header row)."""
    app_ = bootstrap.app()
    run = app_.exports.get_run(req.route_params["runId"])
    if run is None or not (who.is_admin or operable(who, run.destination_id)):
        return error_answer(404, f"export {req.route_params['runId']} does not exist")
    if app_.destinations.get(run.destination_id) is None:
        return error_answer(410, "the per-row report was removed with the destination (it named people); the run's counts remain")
    if run.details.get("peopleForgotten"):
        return error_answer(410, "the per-row report was deleted RETENTION_PERSONAL_DAYS after the run (it named people); "
                                 "the run's counts remain")
    limit = req.params.get("limit") or str(ERRORS_PAGE_LINES)
    if not re.fullmatch(r"[0-9]{1,6}", limit) or not 1 <= int(limit) <= ERRORS_PAGE_MAX_LINES:
        return error_answer(400, f"limit must be a whole number of lines from 1 to {ERRORS_PAGE_MAX_LINES:,} "
                           f"(default {ERRORS_PAGE_LINES:,})")
    try:
        lines, continuation = app_.exports.error_page(run.id, int(limit), req.params.get("continuation") or None,
                                                      max_bytes=PAGE_BYTES)
    except Refused as refused:
        return error_answer(refused.status, refused.message)
    headers = {"Cache-Control": "no-store"}  # the one answer that carries email addresses
    if continuation:
        following = f"{urlsplit(req.url).path}?{urlencode({'limit': int(limit), 'continuation': continuation, **_format(req)})}"
        headers.update({"x-continuation": continuation, "Link": f'<{following}>; rel="next"'})
    if _format(req):
        return _errors_csv(run.id, lines, req.params.get("continuation") is None, headers)
    return func.HttpResponse(b"".join(lines), mimetype="application/x-ndjson", headers=headers)


def _format(req: func.HttpRequest) -> dict[str, str]:
    """{"format": "csv"} when the errors report is asked for as CSV, else {} (JSON Lines)."""
    return {"format": "csv"} if (req.params.get("format") or "").lower() == "csv" else {}


def _errors_csv(run_id: str, lines: list[bytes], first_page: bool, headers: dict[str, str]) -> func.HttpResponse:
    """The same page of the errors report as CSV (shared/report_csv.py: formula cells guarded, header and BOM on the
    first page only, so pages join into one file), as a download."""
    return func.HttpResponse(to_csv(lines, header=first_page), mimetype="text/csv", charset="utf-8",
                             headers={**headers, "Content-Disposition": f'attachment; filename="export-{run_id}-errors.csv"'})


@bp.route(route="exports/{runId}/cancel", methods=["POST"])
@requires(OPERATOR)
def cancel_export(req: func.HttpRequest, who: Principal) -> func.HttpResponse:
    """Stop a run: no chunk that has not started sends anything (its members count failed, "cancelled by <who> at
    <when>"), status `cancelling` until the chunks are counted, then `cancelled`. 202 with the run, also when it was
    cancelling already; 409 with its status when it had finished; 404 when unknown."""
    app_ = bootstrap.app()
    run = app_.exports.get_run(req.route_params["runId"])
    if run is None or not (who.is_admin or operable(who, run.destination_id)):  # not told that it exists
        return error_answer(404, f"export {req.route_params['runId']} does not exist")
    if not run.finished:
        run = app_.exports.cancel_run(run.id, f"cancelled by {who.label} at {now_iso()}") or run
        audit(who, "export.cancelled", destination=run.destination_id, run=run.id)
    if run.finished and run.status != "cancelled":
        return json_answer({"error": f"export {run.id} had already finished ({run.status}): there is nothing to cancel",
                            "status": run.status}, 409)
    return json_answer(run.public(), 202, {"Location": f"/api/exports/{run.id}"})


@bp.route(route="exports/{runId}/retry", methods=["POST"])
@requires(OPERATOR)
def retry_export(req: func.HttpRequest, who: Principal) -> func.HttpResponse:
    """Send again only the members the run counted failed (shared/exports/retry.py): 202 with the new run (trigger
    `retry`, `retryOf` the run); 409 when the run is not finished, has no failed members or was retried already; 410
    when its failed members are no longer kept."""
    app_ = bootstrap.app()
    run = app_.exports.get_run(req.route_params["runId"])
    if run is None or not (who.is_admin or operable(who, run.destination_id)):
        return error_answer(404, f"export {req.route_params['runId']} does not exist")
    try:
        retry = app_.exports.retry(run.id, started_by=who.label)
    except Refused as refused:
        return error_answer(refused.status, refused.message)
    audit(who, "export.retried", destination=retry.destination_id, run=retry.id, retryOf=run.id)
    return json_answer({"id": retry.id, "status": retry.status, "retryOf": run.id}, 202, {"Location": f"/api/exports/{retry.id}"})
