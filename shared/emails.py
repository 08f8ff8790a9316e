"""Email identity: one rule for what makes two rows the same Mailchimp member, and which rows are sendable.

Identity. `normalize_email` trims surrounding whitespace and lower-cases with `str.lower()`;
`subscriber_hash` is the MD5 of that form, which is how Mailchimp names a member ("The MD5 hash of the
lowercase version of the list member's email address",
https://mailchimp.com/developer/marketing/docs/methods-parameters/).

Case-folding of non-ASCII addresses. `str.lower()` is used on purpose, never `str.casefold()`:
casefold is a caseless-matching transform, not "the lowercase version" (it turns "ß" into "ss", so
"Straße@Example.DE" would hash as "strasse@example.de", another member). `lower()` maps only upper-case
letters, so an address whose non-ASCII letters are already lower case (ß, é, ü...) hashes the same under
any reading of "lowercase": ASCII-only (PHP's strtolower) or Unicode (mb_strtolower, ICU). Non-ASCII reaches
Mailchimp only in the domain (local parts must be ASCII, below). An upper-case non-ASCII domain letter
("BÜCHER.DE") is lowered to "ü" by the Unicode rules; that matches Mailchimp if Mailchimp lowers with
Unicode rules, which its documentation does not say: not verified against the real service. The domain is
kept as given (not converted to its "xn--" form), so "user@bücher.de" and "user@xn--bcher-kva.de" are two
identities here, as they are two different strings to hash. tests/unit/test_emails.py pins all of this.

What is rejected (`email_problem`), each with a reason for the per-row report. Reasons name what is
wrong, never the address (the report is read by a marketing admin and must not leak data), at most one
offending character:
- empty; no @ or several @; spaces, tabs, line breaks and control characters;
- invisible characters (zero-width space/joiners, word joiner, BOM, soft hyphen, bidi controls, every
  Unicode "format" character, variation selectors, Hangul fillers), which copy-paste and spreadsheets
  leave in exports: the reason says the export should remove them;
- longer than 254 characters (RFC 5321 path limit, counting an international domain in its xn-- form),
  or a local part longer than 64 (RFC 5321; the local part is ASCII here, so characters are octets);
- local part (before the @): must be an RFC 5322 dot-atom: letters, digits and !#$%&'*+/=?^_`{|}~- in
  runs separated by single dots: no dot at the start or end, no two dots in a row, no quoted local
  parts, no non-ASCII. Mailchimp documents that it "cannot process UTF-8 characters in your subscribers'
  email address prefixes" but accepts internationalised domains
  (https://mailchimp.com/help/international-characters-in-mailchimp/), so RFC 6531 local parts such as
  "josé@example.com" are rejected here rather than costing an API call that fails per member anyway;
- domain: at least two labels separated by single dots, no dot at the start or end; labels of at most 63
  characters (also once encoded as xn--), not starting or ending with a hyphen; ASCII labels are letters,
  digits and hyphens; the top-level domain is letters (2-63) or an "xn--" label; no IP addresses;
- internationalised domains ("user@例え.jp", "user@bücher.de", "user@пример.рф",
  "user@xn--80ak6aa92e.xn--p1ai") are accepted when each non-ASCII label is letters, marks and digits
  (IDNA2008's idea of a label), in composed form, without full-width or stylised look-alikes, and passes
  the stdlib IDNA codec (nameprep prohibitions, bidi rule); an "xn--" label must be valid punycode that
  decodes to such a label. Full-width dots ("。") are refused rather than treated as dots.
Mailchimp still has the last word (it refuses "looks fake or invalid" addresses per member by rules it
does not publish); this check keeps syntactically broken values from costing an API call.

Speed: `email_problem` runs on every row. A valid ASCII address is accepted by one compiled regular
expression (plus a length check and a substring test for "--", the sign of an "xn--" label); everything else (invalid rows and
international domains, both rare) goes through the slower `_diagnose`, which finds the reason.
"""
from __future__ import annotations

import encodings.idna
import functools
import hashlib
import re
import unicodedata

MAX_EMAIL_LENGTH = 254
MAX_LOCAL_LENGTH = 64
MAX_LABEL_LENGTH = 63

# RFC 5322 atext: what a dot-atom local part is made of.
_ATEXT = "A-Za-z0-9!#$%&'*+/=?^_`{|}~-"
_NOT_ATEXT = re.compile(rf"[^.{_ATEXT}]").search
_NOT_LDH = re.compile(r"[^A-Za-z0-9-]").search
_LABEL = r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
_TLD = r"(?:[A-Za-z]{2,63}|[Xx][Nn]--[A-Za-z0-9-]{0,58}[A-Za-z0-9])"
# The whole fast path: a sendable all-ASCII address. Must accept exactly what _diagnose finds nothing wrong
# with (tests/unit/test_emails.py checks the two agree).
_VALID_ASCII = re.compile(rf"(?=[^@]{{1,{MAX_LOCAL_LENGTH}}}@)[{_ATEXT}]+(?:\.[{_ATEXT}]+)*@(?:{_LABEL}\.)+{_TLD}").fullmatch

# Invisible besides Unicode's "format" characters (category Cf, checked separately): combining grapheme
# joiner, Hangul fillers, Khmer inherent vowels, Mongolian free variation selectors, variation selectors.
_INVISIBLE = re.compile("[\u034f\u115f\u1160\u17b4\u17b5\u180b-\u180f\u3164\ufe00-\ufe0f\uffa0\U000e0100-\U000e01ef]").search
_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029]").search
_SPACE = re.compile(r"\s").search
_BROKEN_TEXT = re.compile("[\ud800-\udfff\ufffd]").search
_FULL_WIDTH_DOT = re.compile("[\u3002\uff0e\uff61]").search
_IP_ADDRESS = re.compile(r"[0-9]{1,3}(?:\.[0-9]{1,3}){3}").fullmatch

EMPTY = "email is empty"
NOT_AN_ADDRESS = "email is not a valid address (expected name@domain.tld)"
# Only returned if _diagnose and _VALID_ASCII disagree, which the tests rule out.
UNEXPLAINED = "email is not a valid address"
INVISIBLE = ("email contains an invisible character (such as a zero-width space or a text-direction mark); "
             "the export should remove it")


def normalize_email(raw: str) -> str:
    """Identity of an address: trimmed and lower-cased (str.lower, not casefold), as Mailchimp hashes it."""
    return raw.strip().lower()


def email_problem(normalized: str) -> str | None:
    """Why an address (as normalize_email returns it) cannot be sent, or None when it looks sendable.

    Never raises for any str; the reason never contains the address.
    """
    if len(normalized) <= MAX_EMAIL_LENGTH and _VALID_ASCII(normalized) is not None:
        if "--" in normalized:  # rare: only then can a domain label be an "xn--" (punycode) label
            return _domain_problem(normalized.rpartition("@")[2])
        return None
    return _diagnose(normalized)


def subscriber_hash(email: str) -> str:
    """Mailchimp's member id: MD5 of the trimmed, lower-cased (str.lower) address, UTF-8 encoded."""
    return hashlib.md5(normalize_email(email).encode("utf-8")).hexdigest()


def _diagnose(email: str) -> str | None:
    """The first thing wrong with an address the fast path did not accept; None for a valid international one."""
    if not email:
        return EMPTY
    if not email.isascii():
        if _INVISIBLE(email) or any(unicodedata.category(c) == "Cf" for c in email if c > "\x7f"):
            return INVISIBLE
        if _BROKEN_TEXT(email):
            return "email contains a character that is not valid text (the export's text encoding looks broken)"
    if _CONTROL(email):
        return "email contains a control character (such as a tab or a line break)"
    if _SPACE(email):
        return "email contains a space"
    ats = email.count("@")
    if ats == 0:
        return "email has no @ (expected name@domain.tld)"
    if ats > 1:
        return "email has more than one @ (expected name@domain.tld)"
    local, _, domain = email.partition("@")
    problem = _local_problem(local) or _domain_problem(domain)
    if problem:
        return problem
    if len(email) > MAX_EMAIL_LENGTH:
        return f"email is longer than {MAX_EMAIL_LENGTH} characters"
    if email.isascii():
        return UNEXPLAINED
    if len(local) + 1 + _encoded_length(domain) > MAX_EMAIL_LENGTH:
        return f"email is longer than {MAX_EMAIL_LENGTH} characters once its international domain is encoded (xn--...)"
    return None


def _local_problem(local: str) -> str | None:
    if not local:
        return "email has nothing before the @"
    if not local.isascii():
        return ("the part before the @ contains non-ASCII characters (such as accented letters), "
                "which Mailchimp does not accept there")
    if len(local) > MAX_LOCAL_LENGTH:
        return f"the part before the @ is longer than {MAX_LOCAL_LENGTH} characters"
    if local[0] == ".":
        return "the part before the @ starts with a dot"
    if local[-1] == ".":
        return "the part before the @ ends with a dot"
    if ".." in local:
        return "the part before the @ has two dots in a row"
    bad = _NOT_ATEXT(local)
    if bad:
        return f"the part before the @ contains '{bad.group()}', which is not allowed there"
    return None


# Addresses share few domains, and checking an international one (pure-Python punycode and nameprep) costs
# tens of microseconds, so the verdict per domain is remembered.
@functools.lru_cache(maxsize=4096)
def _domain_problem(domain: str) -> str | None:
    if not domain:
        return "email has nothing after the @"
    if domain[0] == "[" or _IP_ADDRESS(domain):
        return "the domain is an IP address, which Mailchimp does not accept"
    if _FULL_WIDTH_DOT(domain):
        return "the domain contains a full-width dot (。); use a plain dot"
    if domain[0] == ".":
        return "the domain starts with a dot"
    if domain[-1] == ".":
        return "the domain ends with a dot"
    if ".." in domain:
        return "the domain has two dots in a row"
    if "." not in domain:
        return NOT_AN_ADDRESS
    labels = domain.split(".")
    for label in labels:
        problem = _label_problem(label)
        if problem:
            return problem
    tld = labels[-1]
    if tld.isascii() and not (tld.isalpha() and len(tld) >= 2 or tld[:4].lower() == "xn--"):
        return "the domain ending (after the last dot) is not a valid top-level domain (expected letters, like .com)"
    return None


def _label_problem(label: str) -> str | None:
    if len(label) > MAX_LABEL_LENGTH:
        return f"a part of the domain (between dots) is longer than {MAX_LABEL_LENGTH} characters"
    if label[0] == "-":
        return "a part of the domain (between dots) starts with a hyphen"
    if label[-1] == "-":
        return "a part of the domain (between dots) ends with a hyphen"
    if label.isascii():
        bad = _NOT_LDH(label)
        if bad:
            return f"the domain contains '{bad.group()}', which is not allowed there (only letters, digits, hyphens and dots)"
        if label[:4].lower() == "xn--":
            return _a_label_problem(label)
        return None
    return _u_label_problem(label)


def _u_label_problem(label: str, encoded_length: int | None = None) -> str | None:
    """What is wrong with one non-ASCII domain label (IDNA2008-like, stdlib only)."""
    for c in label:
        category = unicodedata.category(c)
        if not (category[0] in "LM" or category == "Nd" or c == "-" or "0" <= c <= "9"):
            return f"the domain contains '{c}', which is not allowed in a domain name"
    if unicodedata.category(label[0])[0] == "M":
        return "a part of the domain starts with an accent that has no letter"
    if not unicodedata.is_normalized("NFC", label):
        return "the domain contains accents typed as separate characters; the export should use composed letters"
    if unicodedata.normalize("NFKC", label) != label:
        return "the domain contains full-width or stylised characters; use plain letters"
    if encoded_length is None:
        encoded_length = len(label.encode("punycode")) + 4
    if encoded_length > MAX_LABEL_LENGTH:
        return f"a part of the domain (between dots) is longer than {MAX_LABEL_LENGTH} characters once encoded (xn--...)"
    try:
        encodings.idna.ToASCII(label)
    except Exception:  # UnicodeError: nameprep-prohibited characters, the bidi rule
        return "the domain is not a valid international domain name"
    return None


def _a_label_problem(label: str) -> str | None:
    """An ASCII 'xn--' label must be the punycode of a valid non-ASCII label."""
    try:
        decoded = label[4:].lower().encode("ascii").decode("punycode")
        round_trip = decoded.encode("punycode").decode("ascii") == label[4:].lower()
    except Exception:  # UnicodeError for broken punycode; never let a strange label raise
        decoded, round_trip = "", False
    if not round_trip or decoded.isascii() or _u_label_problem(decoded, len(label)) is not None:
        return "the domain has an 'xn--' part that is not a valid international domain name"
    return None


@functools.lru_cache(maxsize=4096)
def _encoded_length(domain: str) -> int:
    """Length of a valid domain in its all-ASCII (xn--) form, as it travels over SMTP."""
    return sum(len(label) if label.isascii() else 4 + len(label.encode("punycode")) for label in domain.split(".")) \
        + domain.count(".")
