"""Lookups the admin page needs while setting up a destination: the segments to choose from, and a Mailchimp
audience (checked with a key being typed in, or a destination's stored credential)."""
from __future__ import annotations

import threading

import azure.functions as func

from blueprints.http import error_answer, json_answer, json_body, requires
from shared import bootstrap
from shared.audience_lookup import LookupProblem, look_up_audience
from shared.auth import ADMIN, OPERATOR, Principal
from shared.destinations import InvalidDestination
from shared.segment_catalog import ProfileCounts, SegmentCatalog
from shared.snapshots import ReadLimits

bp = func.Blueprint(http_auth_level=func.AuthLevel.ANONYMOUS)  # requires() checks the caller App Service verified

_catalogs: dict[int, SegmentCatalog] = {}
_catalogs_lock = threading.Lock()


def catalog() -> SegmentCatalog:
    """One catalog per app (its profile counts are kept between requests, and in the work container)."""
    app = bootstrap.app()
    with _catalogs_lock:
        found = _catalogs.get(id(app))
        if found is None:
            found = _catalogs[id(app)] = SegmentCatalog(app.exports.segments, ProfileCounts(app.exports.work),
                                                        ReadLimits.from_settings(app.settings))
        return found


@bp.route(route="segments", methods=["GET"])
@requires(OPERATOR)
def list_segments(req: func.HttpRequest, who: Principal) -> func.HttpResponse:
    """Every segment in the segments container: newest complete snapshot, columns with types, profile count; the
    unusable ones with their problem. `maxProfilesPerExport` is the limit the page adds the chosen counts up against."""
    settings = bootstrap.app().settings
    return json_answer({"segments": [entry.public() for entry in catalog().segments()],
                        "container": settings.segments_container,
                        "maxProfilesPerExport": settings.max_profiles_per_export})


@bp.route(route="mailchimp/audience", methods=["POST"])
@requires(ADMIN)
def look_up_mailchimp_audience(req: func.HttpRequest, who: Principal) -> func.HttpResponse:
    """{audienceId, apiKey} or {audienceId, destinationId}: the audience's name, double opt-in, member count and
    merge fields; 422 naming the field (audienceId, apiKey, destinationId) and what to do. The key is never echoed."""
    try:
        body = json_body(req)
    except InvalidDestination as error:
        return error_answer(400, 'send {"audienceId": "...", "apiKey": "..."} or {"audienceId": "...", '
                                 '"destinationId": "..."}', error.problems)
    app = bootstrap.app()
    try:
        found = look_up_audience(body, app.exports.connections, app.destinations)
    except LookupProblem as problem:
        return error_answer(problem.status, problem.message, problem.details or None)
    return json_answer(found)
