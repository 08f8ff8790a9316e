"""What every HTTP adapter shares: JSON answers, refused bodies, who is acting."""
from __future__ import annotations

import json
import re
from typing import Any

import azure.functions as func

from shared import bootstrap
from shared.destinations import InvalidDestination


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


def principal(req: func.HttpRequest) -> str:
    """Who acts: the signed-in user from App Service authentication, else the function key's holder."""
    return req.headers.get("x-ms-client-principal-name") or "function key"


