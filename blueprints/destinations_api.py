"""Destinations: create, read, change, delete, and connect to Mailchimp with OAuth."""
from __future__ import annotations

import azure.functions as func

from blueprints.http import error_answer, json_answer, json_body, principal
from shared import bootstrap
from shared.destination_service import DestinationConflict, etag
from shared.destinations import InvalidDestination
from shared.oauth import OAuthFailed

bp = func.Blueprint(http_auth_level=func.AuthLevel.FUNCTION)


@bp.route(route="destinations", methods=["POST"])
def create_destination(req: func.HttpRequest) -> func.HttpResponse:
    try:
        destination = bootstrap.app().destinations.create(json_body(req), principal(req))
    except InvalidDestination as error:
        return error_answer(400, "the destination is not valid", error.problems)
    return json_answer(destination.public(), 201, {"Location": f"/api/destinations/{destination.id}"})


@bp.route(route="destinations", methods=["GET"])
def list_destinations(req: func.HttpRequest) -> func.HttpResponse:
    return json_answer({"destinations": [d.public() for d in bootstrap.app().destinations.list()]})


@bp.route(route="destinations/{id}", methods=["GET"])
def get_destination(req: func.HttpRequest) -> func.HttpResponse:
    """ETag: the settings' version, to send back as If-Match with a PATCH or DELETE (412 if it changed meanwhile)."""
    found = bootstrap.app().destinations.get_versioned(req.route_params["id"])
    if found is None:
        return error_answer(404, f"destination {req.route_params['id']} does not exist")
    return json_answer(found[0].public(), headers={"ETag": etag(found[1])})


@bp.route(route="destinations/{id}", methods=["PATCH"])
def update_destination(req: func.HttpRequest) -> func.HttpResponse:
    """JSON Merge Patch of the create body: null removes (e.g. statusForNew), consent.accepted false withdraws."""
    try:
        destination = bootstrap.app().destinations.update(req.route_params["id"], json_body(req), principal(req),
                                                          if_match=req.headers.get("if-match"))
    except InvalidDestination as error:
        return error_answer(400, "the change is not valid; nothing was changed", error.problems)
    except DestinationConflict as conflict:  # 409: lost to a change made meanwhile; 412: If-Match is out of date
        return error_answer(conflict.status, conflict.message)
    if destination is None:
        return error_answer(404, f"destination {req.route_params['id']} does not exist")
    return json_answer(destination.public())


@bp.route(route="destinations/{id}", methods=["DELETE"])
def delete_destination(req: func.HttpRequest) -> func.HttpResponse:
    """204 every time, also for a destination already gone, so a retried DELETE after a timeout is harmless."""
    try:
        bootstrap.app().destinations.delete(req.route_params["id"], if_match=req.headers.get("if-match"))
    except DestinationConflict as conflict:
        return error_answer(conflict.status, conflict.message)
    return func.HttpResponse(status_code=204)


@bp.route(route="destinations/{id}/mailchimp/connect", methods=["GET"])
def connect_mailchimp(req: func.HttpRequest) -> func.HttpResponse:
    create_missing = req.params.get("createMissingMergeFields", "").lower() == "true"
    try:
        url = bootstrap.app().destinations.connect_url(req.route_params["id"], create_missing)
    except OAuthFailed as failed:
        return error_answer(failed.status, failed.message)
    if url is None:
        return error_answer(404, f"destination {req.route_params['id']} does not exist")
    return json_answer({"authorizeUrl": url}, 302, {"Location": url, "Cache-Control": "no-store"})


@bp.route(route="mailchimp/oauth/callback", methods=["GET"], auth_level=func.AuthLevel.ANONYMOUS)
def mailchimp_oauth_callback(req: func.HttpRequest) -> func.HttpResponse:
    """The only route without a function key (Mailchimp's redirect cannot carry one): the signed state guards it."""
    try:
        destination = bootstrap.app().destinations.finish_oauth(req.params)
    except OAuthFailed as failed:
        return error_answer(failed.status, failed.message)
    except InvalidDestination as error:
        return error_answer(422, "Mailchimp is reachable but the destination does not fit its audience; nothing was stored",
                            error.problems)
    return json_answer({"connected": True, "destinationId": destination.id, "method": "oauth",
                  "message": "Mailchimp is connected; this window can be closed"})
