"""The small HTTP vocabulary the handlers share: a parsed request, a response, and a path router."""
from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from email.message import Message
from typing import Any, Callable
from urllib.parse import unquote

from .problems import ApiError, json_parse_error, method_not_allowed

JSON = "application/json; charset=utf-8"
PROBLEM = "application/problem+json; charset=utf-8"


@dataclass
class Request:
    method: str
    path: str
    query: dict[str, list[str]]
    headers: Message
    body: bytes

    def param(self, name: str) -> str | None:
        values = self.query.get(name)
        return values[0] if values else None

    def json_object(self) -> dict[str, Any]:
        """The body as a JSON object; an empty body reads as {}."""
        if not self.body.strip():
            return {}
        try:
            doc = json.loads(self.body)
        except (ValueError, UnicodeDecodeError):
            raise json_parse_error() from None
        if not isinstance(doc, dict):
            raise json_parse_error()
        return doc


@dataclass
class Response:
    status: int
    body: bytes = b""
    content_type: str | None = None
    headers: dict[str, str] = field(default_factory=dict)
    drop: bool = False  # close the connection without writing any answer (a fault: the answer never arrives)


def json_response(doc: Any, status: int = 200) -> Response:
    return Response(status, encode(doc), JSON)


def problem_response(error: ApiError) -> Response:
    return Response(error.status, encode(error.body()), PROBLEM)


def encode(doc: Any) -> bytes:
    return json.dumps(doc, ensure_ascii=False, separators=(",", ":")).encode("utf-8")


class Router:
    """Path templates like /lists/{list_id} (values percent-decoded); unknown paths 404, other methods 405."""

    def __init__(self, routes: list[tuple[str, str, Callable[..., Any]]]) -> None:
        self._routes = [(method, re.compile("^" + re.sub(r"\{(\w+)\}", r"(?P<\1>[^/]+)", template) + "/?$"),
                         handler, template) for method, template, handler in routes]

    def resolve(self, method: str, path: str) -> tuple[Callable[..., Any], dict[str, str]]:
        handler, params, _ = self.route(method, path)
        return handler, params

    def route(self, method: str, path: str) -> tuple[Callable[..., Any], dict[str, str], str]:
        """Like resolve, also naming the route matched ("POST /lists/{list_id}")."""
        allowed = False
        for route_method, pattern, handler, template in self._routes:
            match = pattern.match(path)
            if match:
                if route_method == method:
                    return (handler, {name: unquote(value) for name, value in match.groupdict().items()},
                            f"{method} {template}")
                allowed = True
        if allowed:
            raise method_not_allowed(f"The requested method {method} is not allowed on this resource.")
        raise ApiError(404, "Resource Not Found", "The requested resource could not be found.")
