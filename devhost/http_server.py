"""HTTP triggers: App Service Authentication in front (devhost/easyauth.py), route matching, function keys and the
HttpRequest/HttpResponse round trip."""
from __future__ import annotations

import hmac
import logging
import re
import socket
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import azure.functions as func

from devhost.admin import ManualRuns
from devhost.app_index import FunctionSpec
from devhost.easyauth import EasyAuth, Reply
from devhost.errors import ConfigError
from devhost.invoker import Invoker
from devhost.routes import RouteTemplate

log = logging.getLogger("devhost.http")
KEY_HEADER = "x-functions-key"
KEY_QUERY = "code"
ANONYMOUS = "ANONYMOUS"
MAX_BODY_BYTES = 100 * 1024 * 1024  # Azure's request size limit
MAX_LINE_BYTES = 65536  # a chunk-size or trailer line, like the request line's limit
MAX_TRAILERS = 100
LINGER_BYTES = 1 << 20  # after refusing a body: how much more of it is read and dropped before closing
LINGER_SECONDS = 2.0
_CHUNK_SIZE = re.compile(rb"[0-9A-Fa-f]{1,16}")  # hex digits only: no sign, no "0x", no "_"
METHODS = ("GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS")


@dataclass(frozen=True)
class HttpFunction:
    spec: FunctionSpec
    route: RouteTemplate
    methods: frozenset[str]  # empty: every method
    auth_level: str

    @classmethod
    def build(cls, spec: FunctionSpec, route_prefix: str) -> HttpFunction:
        """Read the trigger binding: route (default: the function name), methods and auth level."""
        route = spec.trigger.get("route") or spec.name
        template = f"{route_prefix}/{route.strip('/')}" if route_prefix else route
        try:
            parsed = RouteTemplate.parse(template)
        except ValueError as error:
            raise ConfigError(f"function {spec.name}: {error}") from None
        methods = frozenset(method.upper() for method in spec.trigger.get("methods") or ())
        return cls(spec, parsed, methods, str(spec.trigger.get("authLevel", "FUNCTION")).upper())

    def describe(self) -> str:
        methods = ",".join(sorted(self.methods)) or "any method"
        return f"{self.spec.name}: [{methods}] /{self.route.template} ({self.auth_level.lower()})"


@dataclass(frozen=True)
class _Answer:
    status: int
    headers: list[tuple[str, str]]
    body: bytes


def _answer_from(result: Any) -> _Answer:
    """What the worker does with a function's return value: an HttpResponse, or text/bytes as a 200."""
    if isinstance(result, (str, bytes)):
        result = func.HttpResponse(result)
    if not isinstance(result, func.HttpResponse):
        raise TypeError(f"an HTTP function must return func.HttpResponse, str or bytes, not {type(result).__name__}")
    headers = list(result.headers.items())
    if not any(name.lower() == "content-type" for name, _ in headers):
        headers.append(("Content-Type", f"{result.mimetype}; charset={result.charset}"))
    return _Answer(result.status_code, headers, result.get_body())


class FunctionsHttpServer(ThreadingHTTPServer):
    """A threaded server: each request gets its own thread, so requests run concurrently as in Azure."""

    daemon_threads = True

    def __init__(self, port: int, functions: list[HttpFunction], function_key: str | None, invoker: Invoker,
                 auth: EasyAuth | None = None, admin: ManualRuns | None = None) -> None:
        """`auth`: App Service Authentication in front of the app; None, the platform's authentication is off (headers
        pass as the client sent them, which the app must not believe). `admin`: the host's /admin/functions/{name}
        (devhost/admin.py); None, /admin/ answers 401 like a call without the key."""
        protected = [f.spec.name for f in functions if f.auth_level != ANONYMOUS]
        if protected and not function_key:
            raise ConfigError(f"functions {', '.join(protected)} need a key: pass --function-key")
        self.functions = sorted(functions, key=lambda f: f.route.precedence)
        self.function_key = function_key or ""
        self.invoker = invoker
        self.auth = auth
        self.admin = admin or ManualRuns(invoker, None, [], [])
        try:
            super().__init__(("127.0.0.1", port), _RequestHandler)
        except OSError as error:
            raise ConfigError(f"cannot listen on 127.0.0.1:{port} ({error.strerror}): pick another --port") from None

    def find(self, method: str, path: str) -> tuple[HttpFunction, dict[str, str]] | None:
        for function in self.functions:
            params = function.route.match(path)
            if params is not None and (not function.methods or method in function.methods):
                return function, params
        return None  # Azure answers 404 for a known route with another method, too

    def key_accepted(self, function: HttpFunction, headers: dict[str, str], query: dict[str, str]) -> bool:
        if function.auth_level == ANONYMOUS:
            return True
        given = headers.get(KEY_HEADER) or query.get(KEY_QUERY) or ""
        return hmac.compare_digest(given.encode(), self.function_key.encode())


class _RequestHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True  # headers and body go out as separate writes: do not wait for an ACK between
    server: FunctionsHttpServer

    def handle_any(self) -> None:
        url = urlsplit(self.path)
        query = dict(parse_qsl(url.query, keep_blank_values=True))
        headers = {name.lower(): ", ".join(self.headers.get_all(name)) for name in self.headers.keys()}
        body = self._read_body()
        if body is None:
            return
        if self.server.auth is not None:  # in front of the Functions host, as in Azure
            passed = self.server.auth.process(self.command, url.path, query, headers, body)
            if isinstance(passed, Reply):
                return self._send(_Answer(passed.status, passed.headers, passed.body))
            headers = passed.headers
        if self.server.admin.handles(url.path):  # the Functions host's own API, not the app's routes
            admin = self.server.admin.answer(self.command, url.path, headers, body)
            return self._send(_Answer(admin.status, [("Content-Type", "application/json")] if admin.body else [], admin.body))
        found = self.server.find(self.command, url.path)
        if found is None:
            return self._send(_Answer(404, [], b""))
        function, route_params = found
        if not self.server.key_accepted(function, headers, query):
            return self._send(_Answer(401, [], b""))
        host = self.headers.get("Host") or f"127.0.0.1:{self.server.server_address[1]}"
        request = func.HttpRequest(self.command, f"http://{host}{self.path}", headers=headers, params=query,
                                   route_params=route_params, body=body)
        try:
            with self.server.invoker.invocation(function.spec, "http", method=self.command) as details:
                answer = _answer_from(self.server.invoker.run(function.spec, request))
                details["status"] = answer.status
        except Exception:  # logged by the invoker; Azure answers 500 with no body
            answer = _Answer(500, [], b"")
        self._send(answer)

    def _read_body(self) -> bytes | None:
        """The request body, chunked or sized; None after refusing it (and closing the connection): 413 when over
        Azure's limit, counted as chunks arrive too, and 400 for a malformed length, chunk size or chunk end."""
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            return self._read_chunked()
        lengths = {value.strip() for value in self.headers.get_all("Content-Length") or ["0"]}
        if len(lengths) != 1 or not re.fullmatch(r"[0-9]{1,20}", raw := lengths.pop()):  # int() takes "-1", "+1", "1_0"
            return self._refuse(400)
        length = int(raw)
        if length > MAX_BODY_BYTES:
            return self._refuse(413)
        body = self.rfile.read(length)
        return body if len(body) == length else self._refuse(400)  # the client went away mid-body

    def _read_chunked(self) -> bytes | None:
        chunks: list[bytes] = []
        total = 0
        while True:
            line = self.rfile.readline(MAX_LINE_BYTES + 1)
            size = _CHUNK_SIZE.fullmatch(line.split(b";", 1)[0].strip()) if line.endswith(b"\n") else None
            if size is None:
                return self._refuse(400)
            length = int(size[0], 16)
            if length == 0:
                break
            total += length
            if total > MAX_BODY_BYTES:  # refused on the announced size, before reading the chunk
                return self._refuse(413)
            chunk = self.rfile.read(length)
            if len(chunk) != length or self.rfile.readline(MAX_LINE_BYTES + 1) not in (b"\r\n", b"\n"):
                return self._refuse(400)
            chunks.append(chunk)
        for _ in range(MAX_TRAILERS + 1):  # trailers end with an empty line (or the client stops sending)
            if self.rfile.readline(MAX_LINE_BYTES + 1) in (b"\r\n", b"\n", b""):
                return b"".join(chunks)
        return self._refuse(400)

    def _refuse(self, status: int) -> None:
        """Answer without reading the rest of the body, and close: what is left of it cannot be told from a request.

        The close lingers (as web servers' do): what the client still sends is read and dropped, up to LINGER_BYTES
        or LINGER_SECONDS, so that closing with unread data does not reset the connection before the client has read
        the answer."""
        self.close_connection = True
        self._send(_Answer(status, [], b""))
        try:
            self.connection.shutdown(socket.SHUT_WR)
            self.connection.settimeout(LINGER_SECONDS)
            left = LINGER_BYTES
            while left > 0 and (data := self.connection.recv(min(left, 1 << 16))):
                left -= len(data)
        except OSError:
            pass  # the client is gone or slow: close anyway
        return None

    def _send(self, answer: _Answer) -> None:
        self.send_response(answer.status)
        for name, value in answer.headers:
            if name.lower() not in ("content-length", "transfer-encoding", "connection"):
                self.send_header(name, value)
        self.send_header("Content-Length", str(len(answer.body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(answer.body)

    def log_message(self, format: str, *args: Any) -> None:
        """Silenced: the default access log prints the query string, which can hold the key (`code`)."""


for _method in METHODS:
    setattr(_RequestHandler, f"do_{_method}", _RequestHandler.handle_any)
