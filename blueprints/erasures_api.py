"""Erasure at a person's request: start one, watch it, list them (admins only); blueprints/erasure_workers.py does
the work.

What is erased is in shared/erasures.py; answers never repeat an address (a refused position is named by its index)."""
from __future__ import annotations

import re

import azure.functions as func

from blueprints.http import audit, error_answer, json_answer, json_body, requires
from shared import bootstrap
from shared.auth import ADMIN, Principal
from shared.destinations import InvalidDestination
from shared.erasures import InvalidErasure, parse_request

bp = func.Blueprint(http_auth_level=func.AuthLevel.ANONYMOUS)

ERASURES_TOP = 20
ERASURES_MAX_TOP = 100


@bp.route(route="erasures", methods=["POST"])
@requires(ADMIN)
def request_erasure(req: func.HttpRequest, who: Principal) -> func.HttpResponse:
    """202 with the request's id; the deletions run from the queue (GET /api/erasures/{id} follows them)."""
    try:
        emails = parse_request(json_body(req))
    except (InvalidDestination, InvalidErasure) as error:
        return error_answer(400, 'send {"emails": ["<address>", ...]}; nothing was erased', error.problems)
    # who.id, not who.label: the record is kept as long as the erasure is honoured, so it names nobody (the audit
    # log line below has the same object id)
    erasure, _ = bootstrap.app().erasures.request(emails, who.id)
    audit(who, "erasure.requested", erasure=erasure.id, addresses=str(len(erasure.hashes)))
    return json_answer({"id": erasure.id, "status": erasure.status, "addresses": len(erasure.hashes)}, 202,
                       {"Location": f"/api/erasures/{erasure.id}"})


@bp.route(route="erasures", methods=["GET"])
@requires(ADMIN)
def list_erasures(req: func.HttpRequest, who: Principal) -> func.HttpResponse:
    """The newest ?top= requests (default ERASURES_TOP, 1..ERASURES_MAX_TOP), newest first, without per-hash outcomes."""
    top = req.params.get("top") or str(ERASURES_TOP)
    if not re.fullmatch(r"[0-9]{1,3}", top) or not 1 <= int(top) <= ERASURES_MAX_TOP:
        return error_answer(400, f"top must be a whole number of requests from 1 to {ERASURES_MAX_TOP} "
                                 f"(default {ERASURES_TOP})")
    return json_answer({"erasures": [e.public(details=False) for e in bootstrap.app().erasures.list(int(top))]})


@bp.route(route="erasures/{id}", methods=["GET"])
@requires(ADMIN)
def get_erasure(req: func.HttpRequest, who: Principal) -> func.HttpResponse:
    erasure = bootstrap.app().erasures.get(req.route_params["id"])
    if erasure is None:
        return error_answer(404, f"erasure {req.route_params['id']} does not exist")
    return json_answer(erasure.public())
