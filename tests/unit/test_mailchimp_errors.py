"""Error mapping: each HTTP answer lands in the class that says what to do, with nothing private in the text."""
import pytest

from shared.mailchimp import (MailchimpAuthError, MailchimpNotFound, MailchimpRequestError,
                              MailchimpUnavailable)
from shared.mailchimp.errors import error_for_answer
from shared.mailchimp.redact import redact

KEY = "0123456789abcdef0123456789abcdef-us6"


def problem(status: int, detail: str) -> dict:
    return {"type": "about:blank", "title": "Problem", "status": status, "detail": detail, "instance": "x"}


@pytest.mark.parametrize("status, body, expected", [
    (401, problem(401, "API Key Invalid"), MailchimpAuthError),
    (401, None, MailchimpAuthError),
    (403, problem(403, "User does not have access"), MailchimpRequestError),
    (403, None, MailchimpUnavailable),
    (404, problem(404, "The requested resource could not be found."), MailchimpNotFound),
    (400, problem(400, "Invalid Resource"), MailchimpRequestError),
    (405, problem(405, "Method Not Allowed"), MailchimpRequestError),
    (422, problem(422, "Unprocessable"), MailchimpRequestError),
    (429, problem(429, "Too Many Requests"), MailchimpUnavailable),
    (500, problem(500, "Internal"), MailchimpUnavailable),
    (502, None, MailchimpUnavailable),
])
def test_status_maps_to_what_the_caller_should_do(status, body, expected):
    error = error_for_answer(status, body, "GET /lists/{list_id}")
    assert type(error) is expected
    assert error.status == status
    assert "GET /lists/{list_id}" in str(error)


def test_auth_error_says_to_renew_the_connection():
    error = error_for_answer(401, problem(401, "Your API key may be invalid"), "GET /")
    assert "must be renewed" in str(error) and "new API key" in str(error)


def test_secret_email_and_hash_are_removed_from_everything():
    detail = f"ann.lee+x@example.com is already a member; key {KEY}; member 5d41402abc4b2a76b9719d911017c592"
    body = {**problem(400, detail), "errors": [{"field": "email_address", "message": "bob@example.org invalid"}]}
    error = error_for_answer(400, body, "POST /lists/{list_id}", KEY)
    for text in (str(error), repr(error), error.detail, error.title):
        assert "example.com" not in text and "example.org" not in text
        assert KEY not in text and "0123456789abcdef" not in text
        assert "5d41402abc4b2a76b9719d911017c592" not in text
    assert "email_address" in error.detail  # the field name stays: it says what to fix


def test_redact_removes_an_exact_secret_of_any_shape():
    assert redact("token=Zz9_short-secret end", "Zz9_short-secret") == "token=<secret> end"
