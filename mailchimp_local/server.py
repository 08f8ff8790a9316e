"""The HTTP server: keep-alive connections, one thread each, dispatching to the API, OAuth and admin routers."""
from __future__ import annotations

import sys
import traceback
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

from . import admin, gateway, oauth, persist
from .problems import ApiError
from .web import Request, Response, json_response, problem_response
from .world import Settings, World


class LocalMailchimpServer(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 256  # bursts of new connections must queue, not be refused

    def __init__(self, host: str, port: int, settings: Settings, state_file: Path | None = None) -> None:
        """With `state_file`, the World saved there (if any) is loaded, and kept there (see persist.py)."""
        self.settings = settings
        self.world = (persist.load(settings, state_file) if state_file else None) or World(settings)
        self.keeper = persist.Keeper(self, state_file) if state_file else None
        super().__init__((host, port), _Handler)
        if self.keeper:
            self.keeper.start()

    def changed(self) -> None:
        """A request that may change the World is under way or done: the keeper writes the file soon after."""
        if self.keeper:
            self.keeper.changed()

    def server_close(self) -> None:
        super().server_close()
        if self.keeper:
            self.keeper.stop()

    def handle_error(self, request: Any, client_address: Any) -> None:
        """An error outside the handlers (reading or parsing a request): socketserver's default prints the exception's
        text, which may quote the request (an address, a key); only its type and place are logged."""
        error = sys.exc_info()[1]
        if error is not None:
            _log_failure(error)

    def reset(self) -> None:
        """A fresh demo World; calls still sleeping in the old one are woken and finish there."""
        old, self.world = self.world, World(self.settings)
        old.wake.set()


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True
    server: LocalMailchimpServer

    def do_GET(self) -> None:
        self._handle()

    do_POST = do_PUT = do_PATCH = do_DELETE = do_GET

    def _handle(self) -> None:
        url = urlsplit(self.path)
        length = self.headers.get("Content-Length", "0")
        if not length.isdigit():
            self.close_connection = True
            self._send(problem_response(ApiError(400, "Bad Request", "Content-Length must be a whole number.")))
            return
        request = Request(self.command, url.path, parse_qs(url.query), self.headers,
                          self.rfile.read(int(length)) if int(length) else b"")
        world = self.server.world
        # Only GETs leave the saved state alone (an OAuth code an authorize GET makes is not kept). Noted before the
        # call, so a write whose answer is held back (latency, an apply_then_timeout fault) is saved while it waits,
        # and again before the answer goes out, so what the client is told of is saved within the keeper's delay.
        writes = request.method != "GET"
        if writes:
            self.server.changed()
        try:
            if url.path == gateway.API_PREFIX or url.path.startswith(gateway.API_PREFIX + "/"):
                response = gateway.serve(world, request)
            elif url.path.startswith("/oauth2/"):
                handler, params = oauth.ROUTER.resolve(request.method, url.path)
                response = handler(world, request, **params)
            else:
                handler, params = admin.ROUTER.resolve(request.method, url.path)
                response = json_response(handler(self.server, request, **params))
        except ApiError as error:
            response = problem_response(error)
        except Exception as exc:  # a bug here must not kill the connection thread silently
            _log_failure(exc)
            response = problem_response(ApiError(500, "Internal Server Error", "The local Mailchimp failed; "
                                                 "see its standard error for where."))
        if writes:
            self.server.changed()
        self._send(response)

    def _send(self, response: Response) -> None:
        """Status line, headers and body in one write: no Nagle stalls on keep-alive connections."""
        if response.drop:
            self.close_connection = True  # nothing is written: the client sees the connection closed unanswered
            return
        head = [f"HTTP/1.1 {response.status} {self.responses.get(response.status, ('',))[0]}",
                f"Content-Length: {len(response.body)}"]
        if response.content_type:
            head.append(f"Content-Type: {response.content_type}")
        head += [f"{name}: {value}" for name, value in response.headers.items()]
        try:
            self.wfile.write(("\r\n".join(head) + "\r\n\r\n").encode("latin-1") + response.body)
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True  # the client gave up (timeout); Mailchimp would have done the work too

    def log_message(self, format: str, *args: Any) -> None:
        """Silent: access lines would cost time and carry subscriber hashes."""


def _log_failure(error: BaseException) -> None:
    """The exception's type and the frames it passed through (file, line, function), never its text, values or source
    lines: those may hold request data (addresses, subscriber hashes, keys)."""
    frames = "".join(f"  {frame.filename}:{frame.lineno} in {frame.name}\n"
                     for frame in traceback.extract_tb(error.__traceback__))
    print(f"local Mailchimp: {type(error).__name__} at\n{frames}", file=sys.stderr, flush=True)
