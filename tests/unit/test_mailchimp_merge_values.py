"""Merge values: never send empties, compare the way Mailchimp stores, so unchanged members cost no write."""
from shared.mailchimp.merge_values import unchanged, values_to_send


def test_empty_values_are_never_sent():
    sent = values_to_send({"FNAME": "  Ann ", "LNAME": "", "PHONE": None, "CITY": "   ",
                           "ADDRESS": {"addr1": "", "city": None}, "AGE": 0})
    assert sent == {"FNAME": "Ann", "AGE": 0}


def test_text_is_cut_at_255_bytes_without_splitting_a_character():
    sent = values_to_send({"NOTE": "é" * 200})  # 400 bytes in UTF-8
    assert len(sent["NOTE"].encode("utf-8")) == 254
    assert sent["NOTE"] == "é" * 127


def test_unchanged_when_mailchimp_holds_the_same_values():
    existing = {"FNAME": "Ann", "LNAME": "Lee", "AGE": "42", "SCORE": 3.0,
                "ADDRESS": {"addr1": "1 Main St", "addr2": "", "city": "Oslo", "state": "", "zip": "0150",
                            "country": "NO"}}
    desired = {"FNAME": " Ann ", "AGE": 42, "SCORE": 3, "LNAME": "", "ADDRESS": {"addr1": "1 Main St", "city": "Oslo"}}
    assert unchanged(desired, existing)


def test_changed_when_a_value_differs_or_is_missing():
    existing = {"FNAME": "Ann", "ADDRESS": {"addr1": "1 Main St", "city": "Oslo"}}
    assert not unchanged({"FNAME": "Anne"}, existing)
    assert not unchanged({"LNAME": "Lee"}, existing)
    assert not unchanged({"ADDRESS": {"addr1": "2 Main St"}}, existing)
    assert not unchanged({"ADDRESS": {"addr1": "1 Main St"}}, {"ADDRESS": ""})


def test_long_text_equals_what_mailchimp_kept():
    long = "x" * 300
    assert unchanged({"NOTE": long}, {"NOTE": "x" * 255})
