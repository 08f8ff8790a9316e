"""Destinations: create, read, change, delete, and connect to Mailchimp with OAuth.

Admins (Exports.Admin) manage destinations; an operator (Exports.Operator) reads only the destinations that name them
among their export users, and to them the others do not exist (404). Every route but the OAuth callback needs a
verified caller (blueprints/http.requires); the Functions-level auth is ANONYMOUS because App Service Authentication,
not a function key, stands in front."""
from __future__ import annotations

import azure.functions as func

from blueprints import page
from blueprints.http import audit, error_answer, json_answer, json_body, requires
from shared import bootstrap
from shared.auth import ADMIN, OPERATOR, Principal
from shared.destination_service import DestinationConflict, etag
from shared.destinations import InvalidDestination
from shared.oauth import OAuthFailed

bp = func.Blueprint(http_auth_level=func.AuthLevel.ANONYMOUS)


@bp.route(route="destinations", methods=["POST"])
@requires(ADMIN)
def create_destination(req: func.HttpRequest, who: Principal) -> func.HttpResponse:
    try:
        destination = bootstrap.app().destinations.create(json_body(req), who.label)
    except InvalidDestination as error:
        return error_answer(400, "the destination is not valid", error.problems)
    audit(who, "destination.created", destination=destination.id)
    return json_answer(destination.public(), 201, {"Location": f"/api/destinations/{destination.id}"})


@bp.route(route="destinations", methods=["GET"])
@requires(OPERATOR)
def list_destinations(req: func.HttpRequest, who: Principal) -> func.HttpResponse:
    """Every destination for an admin; for an operator, those naming them among their export users."""
    return json_answer({"destinations": [d.public() for d in bootstrap.app().destinations.list() if d.operable_by(who)]})


@bp.route(route="destinations/{id}", methods=["GET"])
@requires(OPERATOR)
def get_destination(req: func.HttpRequest, who: Principal) -> func.HttpResponse:
    """ETag: the settings' version, to send back as If-Match with a PATCH or DELETE (412 if it changed meanwhile)."""
    found = bootstrap.app().destinations.get_versioned(req.route_params["id"])
    if found is None or not found[0].operable_by(who):
        return error_answer(404, f"destination {req.route_params['id']} does not exist")
    return json_answer(found[0].public(), headers={"ETag": etag(found[1])})


@bp.route(route="destinations/{id}", methods=["PATCH"])
@requires(ADMIN)
def update_destination(req: func.HttpRequest, who: Principal) -> func.HttpResponse:
    """JSON Merge Patch of the create body: null removes (e.g. statusForNew), consent.accepted false withdraws."""
    try:
        destination = bootstrap.app().destinations.update(req.route_params["id"], json_body(req), who.label,
                                                          if_match=req.headers.get("if-match"))
    except InvalidDestination as error:
        return error_answer(400, "the change is not valid; nothing was changed", error.problems)
    except DestinationConflict as conflict:  # 409: lost to a change made meanwhile; 412: If-Match is out of date
        return error_answer(conflict.status, conflict.message)
    if destination is None:
        return error_answer(404, f"destination {req.route_params['id']} does not exist")
    audit(who, "destination.changed", destination=destination.id,
          consent="accepted" if destination.consent_accepted else "withdrawn")
    return json_answer(destination.public())


@bp.route(route="destinations/{id}", methods=["DELETE"])
@requires(ADMIN)
def delete_destination(req: func.HttpRequest, who: Principal) -> func.HttpResponse:
    """204 every time, also for a destination already gone, so a retried DELETE after a timeout is harmless."""
    try:
        bootstrap.app().destinations.delete(req.route_params["id"], if_match=req.headers.get("if-match"))
    except DestinationConflict as conflict:
        return error_answer(conflict.status, conflict.message)
    audit(who, "destination.deleted", destination=req.route_params["id"])
    return func.HttpResponse(status_code=204)


@bp.route(route="destinations/{id}/mailchimp/connect", methods=["POST"])
@requires(ADMIN)
def connect_mailchimp(req: func.HttpRequest, who: Principal) -> func.HttpResponse:
    """Issues a one-use OAuth state and answers 200 {"authorizeUrl": ...}; the page then navigates there. A POST (not a
    GET link), so the CSRF check applies and no other site can start an admin's round trip. `createMissingMergeFields`
    from the JSON body or the query."""
    try:
        body = json_body(req, required=False)
    except InvalidDestination as error:
        return error_answer(400, "the body is not valid", error.problems)
    flag = body.get("createMissingMergeFields", req.params.get("createMissingMergeFields", ""))
    create_missing = flag is True or str(flag).lower() == "true"
    try:
        url = bootstrap.app().destinations.connect_url(req.route_params["id"], create_missing, requested_by=who.id)
    except OAuthFailed as failed:
        return error_answer(failed.status, failed.message)
    if url is None:
        return error_answer(404, f"destination {req.route_params['id']} does not exist")
    return json_answer({"authorizeUrl": url}, 200, {"Cache-Control": "no-store"})


@bp.route(route="mailchimp/oauth/callback", methods=["GET"], auth_level=func.AuthLevel.ANONYMOUS)
def mailchimp_oauth_callback(req: func.HttpRequest) -> func.HttpResponse:
    """The only route open to anyone (Mailchimp's redirect may come back without the admin's session, and a machine
    has none): the signed, single-use state an admin's connect request issued guards it."""
    browser = page.wants_html(req)  # a person's browser: back to the admin page, or a page saying what failed
    try:
        destination = bootstrap.app().destinations.finish_oauth(req.params)
    except OAuthFailed as failed:
        return page.oauth_problem_page(failed.status, failed.message) if browser else error_answer(failed.status, failed.message)
    except InvalidDestination as error:
        message = "Mailchimp is reachable but the destination does not fit its audience; nothing was stored"
        if browser:
            return page.oauth_problem_page(422, f"{message}: {'; '.join(p['message'] for p in error.problems)}")
        return error_answer(422, message, error.problems)
    # audited as the admin who asked to connect (named by the signed state), not whoever's browser came back
    audit(Principal(id=destination.updated_by or "unknown", name="", email=None, roles=frozenset()),
          "destination.connected", destination=destination.id, method="oauth")
    if browser:
        return page.connected_redirect(destination.id)
    return json_answer({"connected": True, "destinationId": destination.id, "method": "oauth",
                  "message": "Mailchimp is connected; this window can be closed"})
