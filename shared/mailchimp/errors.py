"""What can go wrong talking to Mailchimp, sorted by what the caller should do about it."""
from __future__ import annotations

from typing import Any

from .redact import redact

RENEW = ("the Mailchimp connection must be renewed: reconnect the app to Mailchimp (OAuth) "
         "or enter a new API key")


class MailchimpError(Exception):
    """Base class; the message never holds a secret or an email address."""

    def __init__(self, message: str, *, status: int | None = None, title: str = "", detail: str = "") -> None:
        super().__init__(message)
        self.status = status
        self.title = title
        self.detail = detail


class MailchimpAuthError(MailchimpError):
    """401: the key or token is dead (revoked, deleted); retrying cannot help, a person must reconnect.

    Raised out of an upsert, `results` holds every member's outcome so far (those written before the refusal keep
    theirs; the others are failed), so what Mailchimp already holds is counted as such.
    """

    results: Any = None


class MailchimpNotFound(MailchimpError):
    """404: usually a wrong audience id in the configuration."""


class MailchimpRequestError(MailchimpError):
    """Mailchimp understood and refused (400/403 with a problem/405/422...); the same request would fail again."""


class MailchimpUnavailable(MailchimpError):
    """Mailchimp could not answer (429, 5xx, bodyless 403, timeouts, connection errors); later may work."""


class WritesStopped(Exception):
    """A write was not sent because the caller's guard said stop (see transport.guarded_writes); the message says why."""


def error_for_answer(status: int, body: Any, where: str, *secrets: str) -> MailchimpError:
    """Map an HTTP answer to the error class that says what to do; `body` is the parsed JSON or None."""
    problem = body if isinstance(body, dict) else None
    title = redact(str(problem.get("title", "")), *secrets) if problem else ""
    detail = redact(_problem_detail(problem), *secrets) if problem else ""
    said = f": {title}: {detail}" if problem else ""
    if status == 401:
        return MailchimpAuthError(f"Mailchimp refused the credentials on {where} (401){said}; {RENEW}",
                                  status=status, title=title, detail=detail)
    if status == 429 or status >= 500 or (status == 403 and problem is None):
        return MailchimpUnavailable(f"Mailchimp is busy or unavailable on {where} ({status}){said}",
                                    status=status, title=title, detail=detail)
    if status == 404:
        return MailchimpNotFound(f"Mailchimp found nothing at {where} (404){said}; check that the audience id "
                                 "(and tag id) exist in this Mailchimp account", status=status, title=title,
                                 detail=detail)
    hint = "; the connected Mailchimp user needs a role that allows this" if status == 403 else ""
    return MailchimpRequestError(f"Mailchimp refused {where} ({status}){said}{hint}",
                                 status=status, title=title, detail=detail)


def _problem_detail(problem: dict[str, Any]) -> str:
    """The detail plus per-field messages, which is where Mailchimp says which field is wrong."""
    parts = [str(problem.get("detail", ""))]
    for item in problem.get("errors") or []:
        if isinstance(item, dict):
            parts.append(f"{item.get('field', '')}: {item.get('message', '')}")
    return " ".join(p for p in parts if p)
