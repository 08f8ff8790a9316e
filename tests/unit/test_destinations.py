import pytest

from shared.destinations import InvalidDestination, new_destination

VALID = {
    "displayName": "Newsletter",
    "consent": {"accepted": True},
    "audienceId": "a1b2c3d4e5",
    "mailchimp": {"apiKey": "secret-us6"},
    "mapping": {"email": "EmailAddress", "mergeFields": {"FNAME": "FirstName"}},
    "segments": ["HighValueCustomers", "highvaluecustomers", "Churners"],
}


def problems(body):
    with pytest.raises(InvalidDestination) as caught:
        new_destination(body, "admin@contoso")
    return {p["field"]: p["message"] for p in caught.value.problems}


def test_valid_destination_records_who_consented_and_dedupes_segments():
    d = new_destination(VALID, "admin@contoso")
    assert d.consent_accepted and d.consent_by == "admin@contoso" and d.consent_at
    assert d.segments == ("HighValueCustomers", "Churners")
    assert d.tag_for("Churners") == "Churners"
    assert d.status_for_new is None and d.schedule_enabled and d.export_on_arrival


def test_public_view_never_contains_the_key():
    shown = new_destination(VALID, "x").public()
    assert "secret-us6" not in str(shown)
    assert shown["mailchimp"] == {"connected": False, "method": "none"}


def test_missing_consent_is_refused_with_what_to_do():
    found = problems({**VALID, "consent": {"accepted": False}})
    assert "accept the data-privacy consent" in found["consent.accepted"]


def test_each_bad_field_is_named():
    found = problems({**VALID, "displayName": " ", "segments": [], "statusForNew": "unsubscribed",
                      "mapping": {"mergeFields": {"first_name": "FirstName"}}})
    assert set(found) == {"displayName", "segments", "statusForNew", "mapping.email", "mapping.mergeFields.first_name"}


def test_body_must_be_an_object():
    assert "(body)" in problems(["not", "an", "object"])
