"""One HTTP exchange with Mailchimp: pooled, capped per account, gated, timed out, retried, logged without secrets."""
from __future__ import annotations

import logging
from contextlib import contextmanager, nullcontext
from contextvars import ContextVar
from typing import Any, Callable, ContextManager, Iterator, Mapping
from urllib.parse import quote

import requests
from requests.adapters import HTTPAdapter
from tenacity import RetryCallState

from shared import json_codec, telemetry
from shared.adapters.http_session import EnvironmentOnce

from .connection_cap import cap_for
from .credentials import Credentials
from .errors import MailchimpUnavailable, WritesStopped, error_for_answer
from .redact import guard_http_logs
from .retry import RetryPolicy

log = logging.getLogger("shared.mailchimp")
guard_http_logs()

Gate = Callable[[], ContextManager[None]]
WriteGuard = Callable[[], "str | None"]
_write_guard: ContextVar[WriteGuard | None] = ContextVar("mailchimp_write_guard", default=None)


@contextmanager
def guarded_writes(guard: WriteGuard) -> Iterator[None]:
    """Within this block (this thread), every write asks `guard` right before it is sent, once it holds its
    connection: a reason to stop raises WritesStopped instead of sending. Reads are not asked. This is how a
    withdrawn consent stops data leaving at once, also for a chunk that was already waiting for a connection."""
    token = _write_guard.set(guard)
    try:
        yield
    finally:
        _write_guard.reset(token)


class Transport:
    """Every request goes through `call`, so the cap, the gate and the retry rules cannot be bypassed."""

    def __init__(self, credentials: Credentials, *, max_connections: int, gate: Gate | None,
                 retry: RetryPolicy, timeout: tuple[float, float]) -> None:
        if max_connections < 1:
            raise ValueError("max_connections must be at least 1")
        self._root = credentials.api_root
        self._secret = credentials.secret
        self.account = credentials.account  # who the connection cap counts against; never the secret
        self._limit = max_connections
        self._cap = cap_for(credentials.account)
        self._gate = gate or nullcontext
        self._retry = retry
        self._timeout = timeout
        self._session = EnvironmentOnce()  # proxy settings read once, not at every request
        adapter = HTTPAdapter(pool_connections=1, pool_maxsize=max_connections, max_retries=0)
        self._session.mount("https://", adapter)
        self._session.mount("http://", adapter)
        self._session.headers["User-Agent"] = "customer-insights-mailchimp-export"
        if credentials.kind == "oauth":
            self._session.headers["Authorization"] = f"Bearer {credentials.secret}"
        else:
            self._session.auth = ("connector", credentials.secret)

    def call(self, method: str, template: str, *, path: Mapping[str, str] | None = None,
             params: Mapping[str, Any] | None = None, body: Any = None) -> Any:
        """Parsed JSON answer (None for 204). `template` is what gets logged: it names no member."""
        url = self._root + template.format(**{k: quote(str(v), safe="") for k, v in (path or {}).items()})
        data = None if body is None else json_codec.dumps(body)
        where = f"{method} {template}"
        retrying = self._retry.retrying(self._before_sleep)

        def attempt() -> Any:
            return self._once(method, url, where, params, data, retrying.statistics["attempt_number"])

        try:
            return retrying(attempt)
        except MailchimpUnavailable as exc:
            raise MailchimpUnavailable(
                f"{exc}; gave up after {retrying.statistics['attempt_number']} attempt(s), try again later",
                status=exc.status, title=exc.title, detail=exc.detail) from None

    def close(self) -> None:
        self._session.close()

    def _once(self, method: str, url: str, where: str, params: Mapping[str, Any] | None,
              data: bytes | None, attempt: int) -> Any:
        headers = {"Content-Type": "application/json"} if data is not None else None
        guard = _write_guard.get() if method != "GET" else None
        with self._cap.slot(self._limit), self._gate():
            if guard is not None and (reason := guard()):
                raise WritesStopped(reason)
            try:
                with telemetry.mailchimp_call(method, self._root, where.split(" ", 1)[1]) as span:
                    response = self._session.request(method, url, params=params, data=data, headers=headers,
                                                     timeout=self._timeout)
                    telemetry.answered(span, response.status_code)  # a dependency with its status; counts 429s
            except requests.Timeout:
                log.debug("mailchimp %s -> timeout (attempt %d)", where, attempt)
                raise MailchimpUnavailable(f"Mailchimp did not answer {where} in time") from None
            except requests.ConnectionError:
                log.debug("mailchimp %s -> connection error (attempt %d)", where, attempt)
                raise MailchimpUnavailable(f"could not connect to Mailchimp for {where}") from None
        status = response.status_code
        log.debug("mailchimp %s -> %d (attempt %d)", where, status, attempt)
        if status == 204 or (200 <= status < 300 and not response.content):
            return None
        try:
            body = json_codec.loads(response.content)
        except ValueError:  # not UTF-8 JSON: as requests reads it (the charset Mailchimp names), or unreadable
            try:
                body = response.json()
            except ValueError:
                body = None
        if 200 <= status < 300:
            if body is None:
                raise MailchimpUnavailable(f"Mailchimp answered {where} with an unreadable body ({status})")
            return body
        raise error_for_answer(status, body, where, self._secret)

    @staticmethod
    def _before_sleep(state: RetryCallState) -> None:
        outcome = state.outcome.exception() if state.outcome else None
        pause = state.next_action.sleep if state.next_action else 0.0
        telemetry.retried()
        log.warning("mailchimp retry %d in %.2fs after: %s", state.attempt_number, pause, outcome)
