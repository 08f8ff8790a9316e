"""What every HTTP adapter shares: JSON answers, refused bodies, who is acting."""
from __future__ import annotations

import json
import logging
import re
from typing import Any, Callable

import azure.functions as func

from shared import bootstrap
from shared.auth import OPERATOR, Principal, principal_from_headers
from shared.destinations import Destination, InvalidDestination

SIGN_IN = "/.auth/login/aad"
SIGNED_IN = "signed in"  # requires(SIGNED_IN): any verified caller, with or without a role
audit_log = logging.getLogger("audit")


def json_answer(body: Any, status: int = 200, headers: dict[str, str] | None = None) -> func.HttpResponse:
    """Every JSON answer (and the errors report) is `Cache-Control: no-store`: none is for a shared cache to keep."""
    return func.HttpResponse(json.dumps(body, ensure_ascii=False), status_code=status, mimetype="application/json",
                             headers={"Cache-Control": "no-store", **(headers or {})})


def error_answer(status: int, message: str, details: list[dict[str, str]] | None = None) -> func.HttpResponse:
    return json_answer({"error": message, **({"details": details} if details else {})}, status)


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


def json_body(req: func.HttpRequest, required: bool = True) -> dict[str, Any]:
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




Handler = Callable[[func.HttpRequest, Principal], func.HttpResponse]
_SAFE_METHODS = ("GET", "HEAD", "OPTIONS")


def caller(req: func.HttpRequest) -> Principal | None:
    """The caller App Service Authentication verified; None when nobody is signed in or authentication is off."""
    return principal_from_headers(req.headers, bootstrap.app().settings.auth_enabled)


def _cross_site(req: func.HttpRequest) -> str | None:
    """Why a state-changing request may have been forged by another site, or None. A signed-in browser sends its
    session cookie along with any site's form; it cannot add a custom header to a cross-site request without a CORS
    preflight this app never answers, and Sec-Fetch-Site says where a request came from where browsers send it."""
    if req.method.upper() in _SAFE_METHODS:
        return None
    site = (req.headers.get("sec-fetch-site") or "").lower()
    if site and site not in ("same-origin", "none"):
        return f"a {req.method} from another site ({site}) is refused"
    bearer = (req.headers.get("authorization") or "").strip().lower().startswith("bearer ")
    if not req.headers.get("x-requested-with") and not bearer:
        return f"a {req.method} needs the header X-Requested-With (the page sends it) or an Authorization bearer token"
    return None


def requires(role: str) -> Callable[[Handler], Callable[[func.HttpRequest], func.HttpResponse]]:
    """An HTTP handler for callers with `role` (an admin has every role; SIGNED_IN: anyone verified): 401 when nobody
    verified is calling, 403 without the role or for a request that may come from another site. The handler gets the
    verified caller, the one identity audit records may name (never a header a caller can set)."""

    def wrap(handler: Handler) -> Callable[[func.HttpRequest], func.HttpResponse]:
        def adapter(req: func.HttpRequest) -> func.HttpResponse:
            who = caller(req)
            if who is None:
                return json_answer({"error": "sign in first: this API needs a Microsoft Entra ID account or access token "
                                             "with an Exports.Admin or Exports.Operator role", "signIn": SIGN_IN}, 401)
            if role != SIGNED_IN and not (who.is_admin or (role == OPERATOR and who.is_operator)):
                return error_answer(403, f"your account has no {role} role in this app: ask an administrator of the app "
                                         "registration to assign it (Enterprise applications > Users and groups)")
            forged = _cross_site(req)
            if forged:
                return error_answer(403, f"{forged}; nothing was changed")
            return handler(req, who)

        # Not functools.wraps: the Functions worker reads the signature, which must stay (req) alone.
        adapter.__name__, adapter.__qualname__, adapter.__doc__ = handler.__name__, handler.__qualname__, handler.__doc__
        return adapter

    return wrap


def operable(who: Principal, destination_id: str) -> Destination | None:
    """The destination when `who` may operate its exports (Destination.operable_by), else None: to an operator who is
    not one of its export users it does not exist, so the answer (404) tells nothing about it."""
    destination = bootstrap.app().destinations.get(destination_id)
    return destination if destination is not None and destination.operable_by(who) else None


def audit(who: Principal, action: str, **subject: str) -> None:
    """One log line per audited action, naming the verified caller by object ID (logs carry no addresses; the records
    name the caller by Principal.label: consent, createdBy, updatedBy, startedBy)."""
    audit_log.info("audit action=%s %s principal=%s kind=%s", action,
                   " ".join(f"{name}={value}" for name, value in subject.items()), who.id, who.kind)
