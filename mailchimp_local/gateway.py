"""What every /3.0 call goes through: credentials, the connection cap, faults, the handler, latency, counters."""
from __future__ import annotations

import time

from . import api_account, api_batch, api_lists, api_members, api_segments
from .auth import account_for
from .call import Call
from .faults import APPLIED_FIRST
from .problems import ApiError
from .projection import drop, keep, paths
from .web import Request, Response, Router, json_response, problem_response
from .world import World

API_PREFIX = "/3.0"
ROUTER = Router(api_account.ROUTES + api_lists.ROUTES + api_batch.ROUTES + api_members.ROUTES
                + api_segments.ROUTES)
UNAUTHORIZED = ApiError(401, "API Key Invalid",
                        "Your API key may be invalid, or you've attempted to access the wrong datacenter.")
BAD_GATEWAY_HTML = (b"<html><head><title>502 Bad Gateway</title></head><body><center><h1>502 Bad Gateway</h1>"
                    b"</center><hr><center>nginx</center></body></html>")
NO_ANSWER = "dropped"  # the by_status key of calls whose connection was closed without an answer


def serve(world: World, request: Request) -> Response:
    """The slot is released and the call counted before the answer is written: a client that reads the stats (or
    sends its next request) as soon as it has an answer never sees this call still in flight."""
    arrived_at = time.time()
    started = time.perf_counter()
    status: int | str = 500
    call = None
    try:
        account = account_for(world, request.headers.get("Authorization"))
        if account is None:
            response = problem_response(UNAUTHORIZED)
        elif not world.admit(account):
            response = problem_response(_too_many(world))
        else:
            try:
                call = Call(world, account, request)
                response = _answer(world, call)
            finally:
                world.release(account)
        status = NO_ANSWER if response.drop else response.status
        return response
    finally:
        world.record(status, time.perf_counter() - started, call.written if call else 0, call.read if call else 0,
                     arrived_at, call.route if call else None)


def _answer(world: World, call: Call) -> Response:
    """Faults and latency apply inside the in-flight window, as a slow Mailchimp holds your connection."""
    request = call.request
    fault = world.faults.draw(request.method, request.path)
    if fault == "slow":
        world.sleep(world.faults.slow_seconds)
    elif fault is not None and fault not in APPLIED_FIRST:
        return _fault_response(world, fault)
    try:
        handler, params, call.route = ROUTER.route(request.method, request.path[len(API_PREFIX):] or "/")
        result = handler(call, **params)
        response = result if isinstance(result, Response) else json_response(_trimmed(request, result))
    except ApiError as error:
        response = problem_response(error)
    world.sleep(world.latency.seconds(call.written, call.read))
    if fault in APPLIED_FIRST:
        return _lost_answer(world, fault)
    return response


def _trimmed(request: Request, doc: dict) -> dict:
    include = paths(request.query.get("fields", []))
    exclude = paths(request.query.get("exclude_fields", []))
    if include:
        doc = keep(doc, include)
    if exclude:
        doc = drop(doc, exclude)
    return doc


def _too_many(world: World) -> ApiError:
    return ApiError(429, "Too Many Requests",
                    f"You have exceeded the limit of {world.connection_cap} simultaneous connections.")


def _lost_answer(world: World, kind: str) -> Response:
    """The call was applied; its answer is lost. apply_then_timeout holds the connection (and its in-flight slot)
    for slow_seconds first, so a client's read timeout fires; then, like apply_then_drop, the connection is closed
    without an answer. apply_then_502 answers the CDN's HTML 502 instead."""
    if kind == "apply_then_502":
        return Response(502, BAD_GATEWAY_HTML, "text/html")
    if kind == "apply_then_timeout":
        world.sleep(world.faults.slow_seconds)
    return Response(0, drop=True)


def _fault_response(world: World, kind: str) -> Response:
    if kind == "429":
        return problem_response(_too_many(world))
    if kind == "500":
        return problem_response(ApiError(500, "Internal Server Error", "An unexpected internal error has "
                                         "occurred. Please contact Support for more information."))
    if kind == "502":
        return Response(502, BAD_GATEWAY_HTML, "text/html")
    return Response(403)  # a bodyless 403, as Mailchimp's edge answers under heavy load
