"""Email identity: which addresses are sendable (and why not), normalisation, and Mailchimp's subscriber hash."""
from __future__ import annotations

import hashlib

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from shared import emails
from shared.emails import email_problem, normalize_email, subscriber_hash

# The invisible characters an export must not carry (zero-width space/non-joiner/joiner, word joiner, BOM,
# soft hyphen, bidi embeddings/overrides and isolates), plus two more that are just as invisible.
INVISIBLE = ["\u200b", "\u200c", "\u200d", "\u2060", "\ufeff", "\u00ad",
             "\u202a", "\u202b", "\u202c", "\u202d", "\u202e", "\u2066", "\u2067", "\u2068", "\u2069",
             "\u200e", "\ufe0f"]  # fmt: skip

LONGEST = "a" * 64 + "@" + ".".join(["b" * 61] * 3) + ".cde"
assert len(LONGEST) == 254

ACCEPTED = [
    "ann@contoso.com",
    "Ann.Lee@Contoso.COM",
    "  padded@contoso.com \t",
    "first.middle.last@mail.contoso.co.uk",
    "ann+newsletter@gmail.com",
    "o'brien@example.ie",
    "!#$%&'*+/=?^_`{|}~-@example.com",
    "a@b.io",
    "x" * 64 + "@example.com",
    "a@" + "b" * 63 + ".com",
    LONGEST,
    "user@my-shop.com",
    "user@ab--cd.com",
    "user@例え.jp",
    "user@bücher.de",
    "user@BÜCHER.DE",
    "user@straße.de",
    "user@пример.рф",
    "user@xn--80ak6aa92e.xn--p1ai",
    "user@xn--bcher-kva.de",
    "user@sub.xn--bcher-kva.de",
]

# (address as exported, a fragment the reason must contain)
REJECTED = [
    ("", "email is empty"),
    ("   ", "email is empty"),
    ("jane.doe@gmail", "email is not a valid address (expected name@domain.tld)"),
    ("jane.doe.gmail.com", "has no @"),
    ("jane@doe@gmail.com", "more than one @"),
    ("jane@@gmail.com", "more than one @"),
    ("@gmail.com", "nothing before the @"),
    ("jane@", "nothing after the @"),
    (".jane@gmail.com", "before the @ starts with a dot"),
    ("jane.@gmail.com", "before the @ ends with a dot"),
    ("jane..doe@gmail.com", "before the @ has two dots in a row"),
    ("x" * 65 + "@example.com", "before the @ is longer than 64 characters"),
    (LONGEST + "x", "longer than 254 characters"),
    ("a" * 64 + "@" + ".".join(["ü" * 57] * 3) + ".de", "once its international domain is encoded"),  # 241 -> 260
    ("a@" + "b" * 64 + ".com", "longer than 63 characters"),
    ("jane doe@gmail.com", "contains a space"),
    ("jane@gmail .com", "contains a space"),
    ("jane\u00a0doe@gmail.com", "contains a space"),
    ("jane\tdoe@gmail.com", "control character"),
    ("jane\ndoe@gmail.com", "control character"),
    ("jane\x00doe@gmail.com", "control character"),
    ("jane\x7f@gmail.com", "control character"),
    ('"jane doe"@gmail.com', "contains a space"),
    ('"jane"@gmail.com', "contains '\"'"),
    ("jane,doe@gmail.com", "contains ','"),
    ("jane(doe)@gmail.com", "contains '('"),
    ("<jane@gmail.com>", "contains '<'"),
    ("josé@example.com", "non-ASCII"),
    ("пользователь@пример.рф", "non-ASCII"),
    ("jane@.gmail.com", "domain starts with a dot"),
    ("jane@gmail.com.", "domain ends with a dot"),
    ("jane@gmail..com", "domain has two dots in a row"),
    ("jane@-gmail.com", "starts with a hyphen"),
    ("jane@gmail-.com", "ends with a hyphen"),
    ("jane@mail.-gmail.com", "starts with a hyphen"),
    ("jane@bücher-.de", "ends with a hyphen"),
    ("jane@g_mail.com", "contains '_'"),
    ("jane@gmail.c", "not a valid top-level domain"),
    ("jane@gmail.123", "not a valid top-level domain"),
    ("jane@gmail.c0m", "not a valid top-level domain"),
    ("jane@192.168.0.1", "IP address"),
    ("jane@[192.168.0.1]", "IP address"),
    ("jane@ｇｍａｉｌ.com", "full-width or stylised"),
    ("jane@例え。jp", "full-width dot"),
    ("jane@bu\u0308cher.de", "composed letters"),
    ("jane@i❤.ws", "not allowed in a domain name"),
    ("jane@ü" + "x" * 60 + ".de", "longer than 63 characters once encoded"),
    ("jane@xn--zzzz.com", "'xn--' part"),
    ("jane@xn--a.com", "'xn--' part"),
    ("jane@mail.xn--abc.com", "'xn--' part"),
    ("jane@gmail.xn--zzzz", "'xn--' part"),
    ("jane@gmail.com\ufffd", "text encoding looks broken"),
    ("jane\udcc3@gmail.com", "text encoding looks broken"),
] + [(f"jane{c}doe@gmail.com", "invisible character") for c in INVISIBLE] \
  + [(f"{c}jane@gmail.com", "invisible character") for c in INVISIBLE[:6]] \
  + [(f"jane@bü{c}cher.de", "invisible character") for c in INVISIBLE[:6]]  # fmt: skip


@pytest.mark.parametrize("address", ACCEPTED)
def test_sendable_addresses_are_accepted(address: str) -> None:
    assert email_problem(normalize_email(address)) is None


@pytest.mark.parametrize(("address", "fragment"), REJECTED)
def test_broken_addresses_are_rejected_with_a_reason_that_names_the_problem(address: str, fragment: str) -> None:
    reason = email_problem(normalize_email(address))

    assert reason is not None and fragment in reason
    assert reason != emails.UNEXPLAINED
    if len(address.strip()) > 3:
        assert normalize_email(address) not in reason  # the report is read by people who must not see addresses


def test_invisible_characters_are_reported_as_something_the_export_should_remove() -> None:
    assert email_problem("ann\u200b@contoso.com") == (
        "email contains an invisible character (such as a zero-width space or a text-direction mark); "
        "the export should remove it")


def test_normalize_trims_and_lower_cases() -> None:
    assert normalize_email("  Ann.Lee@Contoso.COM\r\n") == "ann.lee@contoso.com"
    assert normalize_email("user@BÜCHER.DE") == "user@bücher.de"
    assert normalize_email("Straße@Example.DE") == "straße@example.de"  # lower(), not casefold(): ß stays ß
    assert normalize_email("\u200bann@contoso.com") == "\u200bann@contoso.com"  # not whitespace: reported, not hidden


def md5(text: str) -> str:
    return hashlib.md5(text.encode("utf-8")).hexdigest()


def test_subscriber_hash_is_md5_of_the_lower_case_address_as_mailchimp_documents() -> None:
    # Mailchimp: "The MD5 hash of the lowercase version of the list member's email address."
    assert subscriber_hash("Ann@Shop.IO") == md5("ann@shop.io") == "06c964cf1c521ac79f4f73eec822a061"
    assert subscriber_hash("  ann@shop.io ") == md5("ann@shop.io")


def test_subscriber_hash_lower_cases_rather_than_case_folds() -> None:
    # casefold() maps ß to ss: that is another address, hence another member, than Mailchimp's lowercase form.
    assert "Straße".casefold() != "Straße".lower()
    assert subscriber_hash("Straße@Example.DE") == md5("straße@example.de")
    assert subscriber_hash("Straße@Example.DE") != md5("strasse@example.de")
    # Upper-case non-ASCII letters are lowered by Unicode rules (unverified against real Mailchimp; see module doc).
    assert subscriber_hash("user@BÜCHER.de") == md5("user@bücher.de")


# --- properties ---------------------------------------------------------------------------------------------

PROPERTY_SETTINGS = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])

ATEXT = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789!#$%&'*+/=?^_`{|}~-"
atoms = st.text(alphabet=ATEXT, min_size=1, max_size=12)
local_parts = st.lists(atoms, min_size=1, max_size=4).map(".".join).filter(lambda local: len(local) <= 64)
ascii_labels = st.from_regex(r"[a-zA-Z0-9](?:[a-zA-Z0-9-]{0,20}[a-zA-Z0-9])?", fullmatch=True) \
    .filter(lambda label: label[2:4] != "--")  # "xx--" is reserved for xn-- (punycode) labels
idn_labels = st.sampled_from(["bücher", "例え", "пример", "straße", "münchen", "xn--bcher-kva", "xn--80ak6aa92e",
                              "ñoñó1234", "δοκιμή", "täst-ünd"])
top_level = st.from_regex(r"[a-zA-Z]{2,10}", fullmatch=True) | st.sampled_from(["рф", "xn--p1ai", "jp", "de"])
domains = st.builds(lambda labels, tld: ".".join([*labels, tld]),
                    st.lists(ascii_labels | idn_labels, min_size=1, max_size=4), top_level)
addresses = st.builds(lambda local, domain: f"{local}@{domain}", local_parts, domains) \
    .filter(lambda address: len(address) <= 200)  # far from the 254 limit, even with the domain as xn--


@PROPERTY_SETTINGS
@given(st.text())
def test_email_problem_never_raises_and_returns_none_or_a_reason(text: str) -> None:
    for candidate in (text, normalize_email(text)):
        reason = email_problem(candidate)
        assert reason is None or isinstance(reason, str)
        assert reason != emails.UNEXPLAINED
        if reason is not None and len(candidate) >= 12:
            assert candidate not in reason


@PROPERTY_SETTINGS
@given(st.from_regex(r"[a-z]{1,8}@(?:[a-z0-9-]{1,10}\.)?xn--[a-z0-9-]{0,20}\.(?:[a-z]{2,4}|xn--[a-z0-9-]{1,10})",
                     fullmatch=True))
def test_email_problem_never_raises_on_arbitrary_punycode_labels(address: str) -> None:
    reason = email_problem(address)
    assert reason is None or isinstance(reason, str)


@PROPERTY_SETTINGS
@given(addresses)
def test_dot_atom_local_part_at_valid_domain_is_accepted(address: str) -> None:
    assert email_problem(normalize_email(address)) is None


@PROPERTY_SETTINGS
@given(addresses, st.sampled_from(INVISIBLE), st.integers(min_value=0))
def test_an_invisible_character_anywhere_makes_a_valid_address_rejected(address: str, invisible: str, at: int) -> None:
    at %= len(address) + 1
    broken = address[:at] + invisible + address[at:]

    assert "invisible character" in email_problem(normalize_email(broken))


@PROPERTY_SETTINGS
@given(st.text())
def test_normalize_email_is_idempotent(text: str) -> None:
    once = normalize_email(text)
    assert normalize_email(once) == once


ascii_mutations = st.builds(
    lambda address, at, piece: address[:at % (len(address) + 1)] + piece + address[at % (len(address) + 1) + 1:],
    addresses.filter(str.isascii), st.integers(min_value=0),
    st.sampled_from(["", ".", "..", "-", "@", " ", "_", "\t", '"', "a", "xn--", "1", ".c", "-."]))


@PROPERTY_SETTINGS
@given(ascii_mutations | st.text(alphabet=st.characters(max_codepoint=127)))
def test_fast_path_and_diagnosis_agree_on_ascii(text: str) -> None:
    """The fast regular expression accepts exactly the ASCII addresses in which the diagnosis finds nothing wrong."""
    matched = len(text) <= emails.MAX_EMAIL_LENGTH and emails._VALID_ASCII(text) is not None
    # After a match, labels with "--" are checked as punycode ("xn--"), as email_problem does.
    accepted = matched and ("--" not in text or emails._domain_problem(text.rpartition("@")[2]) is None)
    diagnosis = emails._diagnose(text)

    assert accepted == (diagnosis == emails.UNEXPLAINED)
    assert email_problem(text) == (None if accepted else diagnosis)
