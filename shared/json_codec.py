"""JSON on the hot paths (Mailchimp's requests and answers, chunk files, saved answers, audience mirror lines read):
orjson where it gives what the standard library gives, the standard library where it would not.

Why: in an export, reading Mailchimp's batch answers (500 full members each) and writing and reading chunk files took
about an eighth of a Functions host's CPU (py-spy, 100,000 rows); orjson does that work in a fraction of the time.
The result is always the standard library's, so nothing downstream can tell which one ran:
- reading: orjson reads an integer outside 64 bits as a float, where json keeps it exact, so text holding a number of
  19 digits or more is read by json (such a digit run inside a string costs only speed); what orjson refuses and json accepts
  (a lone surrogate such as "\\ud800", NaN, a number past the float range) is read by json, as before;
- writing: compact, UTF-8 not escaped, as json.dumps(doc, ensure_ascii=False, separators=(",", ":")); what orjson
  refuses (an integer outside 64 bits, a string holding a lone surrogate, a key that is not a str) is written by json,
  which writes it or fails as it always did. A float is written as its shortest round-trip form, the same value as
  json's text (1e-07 may read 1e-7); NaN, which json writes as NaN (not JSON), orjson writes as null: no path here
  produces one (planning refuses non-finite numbers; Mailchimp's JSON has none).
tests/unit/test_json_codec.py checks the equivalence with Hypothesis.
"""
from __future__ import annotations

import json
from typing import Any

import orjson

# Whether a text may hold a number of 19 digits or more before any point (int64 holds every 18-digit integer): JSON puts
# a number at the start, or after "[", ":" or "," and whitespace, with an optional minus. Digits become "0", those
# three ":", whitespace and minus go, the rest becomes "x": such a number then shows as ":" and 19 "0"s. The same
# within strings (an id after a colon) is a false alarm, which costs only speed. About 0.6 ms a megabyte, in C.
_NUMBER_SHAPE = bytes(ord("0") if byte in b"0123456789" else ord(":") if byte in b"[:," else ord("x") for byte in range(256))
_LONG_NUMBER = b":" + b"0" * 19


def _may_hold_a_long_number(data: bytes) -> bool:
    return _LONG_NUMBER in b":" + data.translate(_NUMBER_SHAPE, b" \t\r\n-")


_ORJSON_OPTIONS = orjson.OPT_PASSTHROUGH_DATACLASS | orjson.OPT_PASSTHROUGH_DATETIME | orjson.OPT_PASSTHROUGH_SUBCLASS


def loads(data: bytes | str) -> Any:
    """json.loads(data), faster."""
    raw = data if isinstance(data, bytes) else data.encode("utf-8", "surrogatepass")
    if not _may_hold_a_long_number(raw):
        try:
            return orjson.loads(data)
        except orjson.JSONDecodeError:
            pass  # json decides: it reads what orjson refuses, or raises its own error
    return json.loads(data)


def dumps(doc: Any) -> bytes:
    """json.dumps(doc, ensure_ascii=False, separators=(",", ":")).encode("utf-8"), faster."""
    try:
        return orjson.dumps(doc, option=_ORJSON_OPTIONS)
    except orjson.JSONEncodeError:
        return json.dumps(doc, ensure_ascii=False, separators=(",", ":")).encode("utf-8")
