"""shared/json_codec.py gives exactly what the standard library gives: same values (and types) read, text that reads
back to the same values written, and the standard library's errors where it has them. Hypothesis searches JSON
values and raw text for a difference; the examples name the cases where orjson alone would differ."""
from __future__ import annotations

import json
import math

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from shared import json_codec

TEXT = st.text(st.characters(exclude_categories=()) | st.sampled_from(["\ud800", "\udfff", "\u2028", "\x00", "\ufeff"]))
SCALARS = (st.none() | st.booleans() | st.integers() | st.floats() | TEXT)  # lone surrogates: UTF-8 cannot hold them
VALUES = st.recursive(SCALARS, lambda inner: st.lists(inner, max_size=4) | st.tuples(inner, inner) | st.dictionaries(TEXT, inner, max_size=4),
                      max_leaves=20)


def same(a: object, b: object) -> bool:
    """Equal, with the same types all the way down (1 and 1.0 differ, as do -0.0 and 0.0)."""
    if type(a) is not type(b):
        return False
    if isinstance(a, float):
        return a == b and math.copysign(1, a) == math.copysign(1, b) or (math.isnan(a) and math.isnan(b))
    if isinstance(a, list):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b))
    if isinstance(a, dict):
        return list(a) == list(b) and all(same(a[k], b[k]) for k in a)
    return a == b


def stdlib_dumps(doc: object) -> bytes:
    return json.dumps(doc, ensure_ascii=False, separators=(",", ":")).encode("utf-8")


def outcome(call, *args):
    try:
        return "value", call(*args)
    except (ValueError, TypeError, RecursionError) as error:
        return "error", type(error)


@settings(max_examples=600, deadline=None)
@given(VALUES)
def test_writing_reads_back_as_the_standard_library_writes(doc: object) -> None:
    expected = outcome(stdlib_dumps, doc)
    written = outcome(json_codec.dumps, doc)
    assert written[0] == expected[0]
    if written[0] == "value":
        assert same(json.loads(written[1]), json.loads(expected[1]))
    else:
        assert written[1] is expected[1]
        assert written[1] == expected[1] or any(isinstance(x, float) for x in _leaves(doc))  # floats' shortest form


def _leaves(doc: object):
    if isinstance(doc, list):
        for item in doc:
            yield from _leaves(item)
    elif isinstance(doc, dict):
        for item in doc.values():
            yield from _leaves(item)
    else:
        yield doc


def stdlib_loads(data: bytes | str) -> object:
    """What the callers did before: bytes decoded strictly as UTF-8, then json.loads."""
    return json.loads(data.decode("utf-8") if isinstance(data, bytes) else data)


def _read_both(data: bytes | str) -> None:
    expected, got = outcome(stdlib_loads, data), outcome(json_codec.loads, data)
    assert got[0] == expected[0], (data, got, expected)
    if got[0] == "value":
        assert same(got[1], expected[1]), (data, got, expected)
    else:
        assert issubclass(got[1], ValueError) and issubclass(expected[1], ValueError)


@settings(max_examples=600, deadline=None)
@given(VALUES)
def test_reading_what_json_writes_gives_the_same_values(doc: object) -> None:
    text = json.dumps(doc, ensure_ascii=False)
    _read_both(text)
    try:
        _read_both(text.encode("utf-8"))
    except UnicodeEncodeError:
        pass  # a lone surrogate: no UTF-8 bytes hold it
    _read_both(json.dumps(doc))  # ASCII, surrogates escaped


@settings(max_examples=600, deadline=None)
@given(st.text(alphabet=st.sampled_from('0123456789-+.eE"[]{},:\\ tnulrfasu\ud800\udc00\u00e9'), max_size=40))
def test_reading_any_text_gives_the_same_value_or_fails_as_json_fails(text: str) -> None:
    _read_both(text)


@pytest.mark.parametrize("text", [
    "123456789012345678901234567890",  # orjson alone: a float
    "18446744073709551616", "-9223372036854775809",  # just past 64 bits
    '{"FNAME": "a", "NUM": 99999999999999999999}',
    '"\\ud800"',  # a lone surrogate: orjson refuses it
    "NaN", "1e400", "[Infinity]",  # json reads them, orjson refuses them
    *(f"[{space}123456789012345678901234567890]" for space in ("\t", "\r", "\n", " ", "\r\n\t ")),
    *(f'{{"a":{space}-99999999999999999999,{space}"b":1}}' for space in ("\t", "\r", "\n")),
])
def test_where_orjson_alone_would_differ_the_standard_library_decides(text: str) -> None:
    for data in (text, text.encode("utf-8")):
        expected = stdlib_loads(data)
        assert same(json_codec.loads(data), expected)
        alone = outcome(orjson.loads, data)
        assert alone[0] == "error" or not same(alone[1], expected)  # a case orjson alone gets wrong


@pytest.mark.parametrize("doc", [2 ** 64, -(2 ** 63) - 1, {"a": "\ud800"}, {1: "int key"}])
def test_writing_what_orjson_refuses_falls_back_to_the_standard_library(doc: object) -> None:
    assert outcome(json_codec.dumps, doc) == outcome(stdlib_dumps, doc)


@settings(max_examples=1000, deadline=None)
@given(st.from_regex(r"-?(0|[1-9][0-9]{0,24})(\.[0-9]{1,30})?([eE][-+]?[0-9]{1,3})?", fullmatch=True),
       st.sampled_from(["{}", "[{}]", '{{"a": {}}}', '["x", {}]', "[1,\n {}]", "[\n{}]", "[\t{}]", '{{"a":\r\n\t {}}}',
                        "[1,\t\r\n{}]"]))
def test_numbers_of_any_length_read_as_json_reads_them(number: str, around: str) -> None:
    """Long integers, and long mantissas that must be rounded to the nearest float as float() rounds them."""
    _read_both(around.format(number))
    _read_both(around.format(number).encode())


def test_digits_inside_strings_read_right_whichever_reader_runs() -> None:
    doc = {"id": "0" * 32, "href": "/members/12345678901234567890", "note": "x:12345678901234567890"}
    assert json_codec.loads(json.dumps(doc).encode()) == doc


@pytest.mark.parametrize("data", [
    b'{"a":"\xed\xa0\x80"}',  # a surrogate encoded as UTF-8 (CESU-8): not UTF-8
    b'\xef\xbb\xbf{"a":1}',  # a BOM
    '{"a":1}'.encode("utf-16"),
    b'{"a":"\xff"}',
])
def test_bytes_that_are_not_utf8_json_fail_as_a_strict_utf8_decode_failed(data: bytes) -> None:
    """So decode_members still refuses a damaged chunk file, and the transport falls back to requests' reading."""
    with pytest.raises(ValueError):
        json_codec.loads(data)


def test_what_is_neither_bytes_nor_str_is_json_s_to_judge() -> None:
    assert json_codec.loads(bytearray(b"[1]")) == [1]
    with pytest.raises(TypeError):
        json_codec.loads(None)  # type: ignore[arg-type]


@pytest.mark.parametrize("doc", [float("nan"), [1.5, float("inf")], {"a": None, "b": -math.inf}, {"a": None}])
def test_nan_and_infinities_are_written_as_json_writes_them_not_as_null(doc: object) -> None:
    assert json_codec.dumps(doc) == stdlib_dumps(doc)


def test_subclasses_dataclasses_and_dates_are_written_by_json() -> None:
    import dataclasses
    from collections import OrderedDict
    from datetime import date

    moved = OrderedDict(a=1, b=2)
    moved.move_to_end("a")

    class Upper(dict):
        def items(self):  # what json's encoder asks of a dict subclass
            return [(key.upper(), value) for key, value in super().items()]

    @dataclasses.dataclass
    class Point:
        x: int

    for doc in (moved, {"k": moved}, Upper(a=1), [Point(1)], {"when": date(2026, 12, 1)}):
        assert outcome(json_codec.dumps, doc) == outcome(stdlib_dumps, doc), doc


def test_nesting_within_the_interpreter_s_reach_reads_the_same() -> None:
    text = "[" * 200 + "]" * 200
    assert json_codec.loads(text) == json.loads(text) and json_codec.loads(text.encode()) == json.loads(text)
