"""Mailchimp's error answers (application/problem+json), raised anywhere inside an API call."""
from __future__ import annotations

import uuid
from typing import Any

ERROR_DOCS = "https://mailchimp.com/developer/marketing/docs/errors/"
INVALID_RESOURCE_DETAIL = ("The resource submitted could not be validated. "
                           "For field-specific details, see the 'errors' array.")


class ApiError(Exception):
    """An answer other than 2xx; `errors` lists the offending fields, which is how Mailchimp names them."""

    def __init__(self, status: int, title: str, detail: str, errors: list[dict[str, str]] | None = None) -> None:
        super().__init__(f"{status} {title}")
        self.status = status
        self.title = title
        self.detail = detail
        self.errors = errors

    def body(self) -> dict[str, Any]:
        doc: dict[str, Any] = {"type": ERROR_DOCS, "title": self.title, "status": self.status,
                               "detail": self.detail, "instance": str(uuid.uuid4())}
        if self.errors is not None:
            doc["errors"] = self.errors
        return doc


def invalid(field: str, message: str) -> ApiError:
    """400 naming one field and what to send instead."""
    return invalid_fields([(field, message)])


def invalid_fields(problems: list[tuple[str, str]]) -> ApiError:
    return ApiError(400, "Invalid Resource", INVALID_RESOURCE_DETAIL,
                    [{"field": field, "message": message} for field, message in problems])


def method_not_allowed(detail: str) -> ApiError:
    return ApiError(405, "Method Not Allowed", detail)


def not_found(what: str = "resource") -> ApiError:
    return ApiError(404, "Resource Not Found", f"The requested {what} could not be found.")


def json_parse_error() -> ApiError:
    return ApiError(400, "JSON Parse Exception",
                    "We encountered an unspecified JSON parsing error: send a JSON object as the request body.")
