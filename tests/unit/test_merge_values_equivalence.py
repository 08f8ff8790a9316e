"""The fast paths of shared/mailchimp/merge_values.py give exactly what the implementation before them gave.

`_Old` is that implementation, copied unchanged (isinstance against typing.Mapping for every value). Both are run on
the same values: text (whitespace, accents, emoji, lone surrogates, over 255 bytes), dicts of them (ADDRESS),
None, ints (bool, one too long for str()), floats (nan, inf, -0.0, whole), lists, subclasses of str and dict,
other Mappings, and objects that claim another __class__; every function must return the same value of the same
type, or raise the same exception type.
"""
from __future__ import annotations

import math
import os
from collections import OrderedDict
from collections.abc import Iterator
from datetime import date
from types import MappingProxyType
from typing import Any, Mapping  # noqa: UP035 - the old implementation asked isinstance of typing.Mapping

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from shared.mailchimp import merge_values as new


class _Old:
    MAX_TEXT_BYTES = 255

    @staticmethod
    def values_to_send(desired: Mapping[str, Any]) -> dict[str, Any]:
        sent = {}
        for tag, value in desired.items():
            stored = _Old._as_stored(value)
            if not _Old._is_empty(stored):
                sent[tag] = stored
        return sent

    @staticmethod
    def unchanged(desired: Mapping[str, Any], existing: Mapping[str, Any]) -> bool:
        return not _Old.changed_fields(desired, existing)

    @staticmethod
    def changed_fields(desired: Mapping[str, Any], existing: Mapping[str, Any]) -> list[str]:
        return [tag for tag, value in _Old.values_to_send(desired).items() if not _Old._same(value, existing.get(tag))]

    @staticmethod
    def _as_stored(value: Any) -> Any:
        if isinstance(value, str):
            cut = value.strip().encode("utf-8")[:_Old.MAX_TEXT_BYTES].decode("utf-8", "ignore")
            return cut.strip()
        if isinstance(value, Mapping):
            return _Old.values_to_send(value)
        return value

    @staticmethod
    def _is_empty(value: Any) -> bool:
        return value is None or value == "" or value == {}

    @staticmethod
    def _same(sent: Any, held: Any) -> bool:
        if isinstance(sent, Mapping):
            return isinstance(held, Mapping) and all(_Old._same(v, held.get(k)) for k, v in sent.items())
        return _Old._scalar(sent) == _Old._scalar(_Old._as_stored(held))

    @staticmethod
    def _scalar(value: Any) -> str:
        if isinstance(value, bool):
            return str(value).lower()
        if isinstance(value, float) and value.is_integer():
            return str(int(value))
        return "" if value is None else str(value)


class Text(str):
    pass


class Fields(dict):
    pass


class ReadOnly(Mapping):
    def __init__(self, data: dict) -> None:
        self._data = data

    def __getitem__(self, key: Any) -> Any:
        return self._data[key]

    def __iter__(self) -> Iterator[Any]:
        return iter(self._data)

    def __len__(self) -> int:
        return len(self._data)


class ClaimsDict:
    """isinstance(x, dict) is True (it asks __class__); isinstance(x, typing.Mapping) is not (it asks type(x))."""

    __class__ = property(lambda self: dict)  # type: ignore[assignment]

    def items(self) -> list:
        return [("addr1", "1 Main St")]

    def get(self, key: Any) -> Any:
        return None


class ClaimsStr:
    __class__ = property(lambda self: str)  # type: ignore[assignment]


KEYS = st.sampled_from(["addr1", "addr2", "city", "state", "zip", "country", "FNAME"]) | st.text(max_size=3)
ANY_CHARACTER = st.characters(codec=None, exclude_categories=())  # surrogates too
TEXT = st.one_of(
    st.text(max_size=12),
    st.text(alphabet=st.sampled_from(" \t\n\u00a0\u3000xé漢😀\x1f\x85"), max_size=20),
    st.text(alphabet=ANY_CHARACTER, max_size=8),
    st.builds(lambda a, n, b: a + "x" * n + b, st.sampled_from(["", " ", "é"]), st.integers(50, 300),
              st.sampled_from(["", " ", "é", "😀", " \n", "é" * 100])),
    st.lists(st.sampled_from(["x", " ", "é", "😀", "\t"]), min_size=240, max_size=300).map("".join),
    st.lists(st.sampled_from(["x", " "]), min_size=250, max_size=260).map("".join),  # a space where 255 cuts
    st.sampled_from(["", " ", "Ann", " Ann ", "1990-04-17", "04/17", "42", "42.0", "3.50", "true", "True", "None",
                     "{}", "0", "-0"]),
)
SCALARS = st.one_of(
    st.none(),
    TEXT,
    st.integers(-10**6, 10**6),
    st.sampled_from([0, 1, 42, -1, 10**20, True, False]),
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from([0.0, -0.0, 3.0, 42.5, 1e16, 1e300, math.nan, math.inf]),
    TEXT.map(Text),
    st.sampled_from([date(2026, 3, 4), b"x"]),
    st.builds(pow, st.just(10), st.just(5000)),  # str() of 10**5000 raises ValueError
    st.builds(ClaimsDict), st.builds(ClaimsStr),
)
VALUES = st.recursive(
    SCALARS,
    lambda children: st.one_of(
        st.dictionaries(KEYS, children, max_size=4),
        st.dictionaries(KEYS, children, max_size=4).map(Fields),
        st.dictionaries(KEYS, children, max_size=3).map(OrderedDict),
        st.dictionaries(KEYS, children, max_size=3).map(MappingProxyType),
        st.dictionaries(KEYS, children, max_size=3).map(ReadOnly),
        st.lists(children, max_size=3),
    ),
    max_leaves=8,
)
FIELDS = st.dictionaries(KEYS, VALUES, max_size=6)
CHECK = settings(max_examples=int(os.environ.get("MERGE_VALUES_EXAMPLES", "300")), deadline=None, suppress_health_check=[HealthCheck.too_slow])


def _shape(value: Any) -> Any:
    """Type and value, all the way down (nan equals nan here, 1 differs from 1.0 and True, order counts)."""
    if isinstance(value, Mapping) or type(value) is dict:
        return (type(value).__name__, [(_shape(k), _shape(v)) for k, v in value.items()])
    if isinstance(value, (list, tuple)):
        return (type(value).__name__, [_shape(v) for v in value])
    return (type(value).__name__, repr(value) if isinstance(value, float) else value)


def _text(number: float) -> Any:
    """A number as Mailchimp may give it back: its text (or itself where str() refuses it)."""
    try:
        return str(number)
    except ValueError:
        return number


def _outcome(function: Any, *args: Any) -> Any:
    try:
        return ("returned", _shape(function(*args)))
    except Exception as error:  # noqa: BLE001 - the same exception type is part of "the same result"
        return ("raised", type(error))


def _assert_same(name: str, *args: Any) -> None:
    assert _outcome(getattr(new, name), *args) == _outcome(getattr(_Old, name), *args), name


@CHECK
@given(VALUES)
def test_one_value_is_stored_emptied_and_shown_as_before(value: Any) -> None:
    _assert_same("_as_stored", value)
    _assert_same("_is_empty", value)
    _assert_same("_scalar", value)


@CHECK
@given(VALUES, VALUES)
def test_two_values_compare_as_before(sent: Any, held: Any) -> None:
    _assert_same("_same", sent, held)
    try:
        stored = _Old._as_stored(sent)
    except Exception:  # noqa: BLE001 - _as_stored's own outcome is checked above
        return
    _assert_same("_same", stored, held)


@CHECK
@given(FIELDS, FIELDS)
def test_fields_are_sent_and_compared_as_before(desired: dict, existing: dict) -> None:
    _assert_same("values_to_send", desired)
    _assert_same("changed_fields", desired, existing)
    _assert_same("unchanged", desired, existing)
    _assert_same("unchanged", desired, desired)  # the same values on both sides: the usual refresh


@CHECK
@given(FIELDS)
def test_fields_compared_with_what_mailchimp_kept_as_before(desired: dict) -> None:
    try:
        kept = _Old.values_to_send(desired)
    except Exception:  # noqa: BLE001 - values_to_send's own outcome is checked above
        return
    held = {tag: (_text(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else value)
            for tag, value in kept.items()}
    _assert_same("unchanged", desired, kept)
    _assert_same("unchanged", desired, held)
    _assert_same("changed_fields", desired, held)


def test_realistic_members_are_unchanged_or_changed_as_before() -> None:
    address = {"addr1": "1701 Bristol Ave.", "city": "Barrington", "state": "RI", "zip": "02806", "country": "US"}
    desired = {"FNAME": "Zoë", "LNAME": "Lee", "LTV": 1234.5, "AGE": 42, "LASTBUY": "2026-03-04", "BDAY": "04/17",
               "ADDRESS": address}
    held = {"FNAME": "Zoë", "LNAME": "Lee ", "LTV": "1234.5", "AGE": "42", "LASTBUY": "2026-03-04", "BDAY": "04/17",
            "ADDRESS": {**address, "addr2": ""}, "PHONE": ""}
    for existing in (held, {**held, "FNAME": "Zoe"}, {**held, "ADDRESS": ""}, {}, {**held, "AGE": 42.0}):
        _assert_same("values_to_send", desired)
        _assert_same("changed_fields", desired, existing)
        _assert_same("unchanged", desired, existing)
    assert new.unchanged(desired, held) and not new.unchanged(desired, {**held, "FNAME": "Zoe"})
