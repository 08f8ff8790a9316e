"""JSON on the hot paths (Mailchimp's requests and answers, chunk files, audience mirror lines read): orjson where it
gives what the standard library gives, the standard library where it would not.

Why: in an export, reading Mailchimp's batch answers (500 full members each) and writing and reading chunk files took
about an eighth of a Functions host's CPU (py-spy, 100,000 rows); orjson does that work in a fraction of the time.
For documents of str, int, float, bool, None, list, tuple and dict (all the callers pass), the result is the
standard library's, so nothing downstream can tell which one ran:
- reading (`loads`, as json.loads; bytes are UTF-8, strictly, as `bytes.decode("utf-8")` then json.loads): orjson
  reads an integer outside 64 bits as a float, where json keeps it exact, so text that may hold a number of 19 digits
  or more is read by json (the check joins digits across spaces and minus signs, so a false alarm, which costs only
  speed, comes from such digit runs in strings too); what orjson refuses and json reads (a lone surrogate such as
  "\\ud800", NaN, a number past the float range) is read by json, as before. One difference is left: nesting deeper
  than the interpreter's recursion allows json (about 990 levels) but within orjson's 1,024 is read rather than
  raising RecursionError, which no caller catches (nothing here nests beyond a few levels);
- writing (`dumps`, as json.dumps(doc, ensure_ascii=False, separators=(",", ":")).encode("utf-8")): what orjson
  refuses (an integer outside 64 bits, a string holding a lone surrogate, a key that is not a str) or would write
  otherwise (NaN and infinities, which orjson writes as null; subclasses, which it reads past their own methods) is
  written by json, which writes it or fails as it always did. A float is written in its shortest round-trip form:
  the same value as json's text, not always the same text (1e-05 is written 0.00001).
The pre-check costs about 1 ms a megabyte. tests/unit/test_json_codec.py checks the equivalence with Hypothesis.
"""
from __future__ import annotations

import json
import math
from typing import Any

import orjson

# Whether a text may hold a number of 19 digits or more before any point (int64 holds every 18-digit integer): JSON puts
# a number at the start, or after "[", ":" or "," and whitespace, with an optional minus. Digits become "0", those
# three ":", whitespace and minus go, the rest becomes "x": such a number then shows as ":" and 19 "0"s.
_NUMBER_SHAPE = bytes(ord("0") if byte in b"0123456789" else ord(":") if byte in b"[:," else ord("x") for byte in range(256))
_LONG_NUMBER = b":" + b"0" * 19
_ORJSON_OPTIONS = orjson.OPT_PASSTHROUGH_DATACLASS | orjson.OPT_PASSTHROUGH_DATETIME | orjson.OPT_PASSTHROUGH_SUBCLASS


def _may_hold_a_long_number(data: bytes) -> bool:
    return _LONG_NUMBER in b":" + data.translate(_NUMBER_SHAPE, b" \t\r\n-")


def loads(data: bytes | str) -> Any:
    """json.loads(data), faster; bytes must be UTF-8."""
    if isinstance(data, str):
        raw = data.encode("utf-8", "surrogatepass")
    elif isinstance(data, bytes):
        raw = data
    else:
        return json.loads(data)  # not what the callers pass: json decides
    if not _may_hold_a_long_number(raw):
        try:
            return orjson.loads(data)
        except orjson.JSONDecodeError:
            pass  # json decides: it reads what orjson refuses, or raises its own error
    return json.loads(data.decode("utf-8") if isinstance(data, bytes) else data)


def dumps(doc: Any) -> bytes:
    """json.dumps(doc, ensure_ascii=False, separators=(",", ":")).encode("utf-8"), faster."""
    try:
        written = orjson.dumps(doc, option=_ORJSON_OPTIONS)
    except orjson.JSONEncodeError:
        written = None
    if written is None or (b"null" in written and _holds_a_non_finite_float(doc)):
        return json.dumps(doc, ensure_ascii=False, separators=(",", ":")).encode("utf-8")
    return written


def _holds_a_non_finite_float(doc: Any) -> bool:
    """Asked only when orjson wrote a null, which NaN and infinities also become."""
    if isinstance(doc, float):
        return not math.isfinite(doc)
    if isinstance(doc, dict):
        return any(_holds_a_non_finite_float(value) for value in doc.values())
    if isinstance(doc, (list, tuple)):
        return any(_holds_a_non_finite_float(value) for value in doc)
    return False
