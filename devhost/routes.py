"""HTTP trigger route templates, matched the way ASP.NET routing matches them in Azure.

Supported: literal segments (case-insensitive), `{name}`, optional `{name?}` (trailing segments only),
catch-all `{*name}` (last segment), and constraints chained with colons: int, long, bool, alpha, guid,
double, float, decimal, min(n), max(n), range(a,b), minlength(n), maxlength(n), length(n).
Not supported (refused at startup): default values `{name=x}`, regex constraints, segments mixing text
and parameters such as `file.{ext}`.
"""
from __future__ import annotations

import re
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from urllib.parse import unquote

_PARAMETER = re.compile(r"^\{(\*)?([A-Za-z_][A-Za-z0-9_]*)((?::[^:{}]+)*)(\?)?\}$")
_ARGUMENT_CONSTRAINT = re.compile(r"^(min|max|range|minlength|maxlength|length)\(([^()]*)\)$")
_INTEGER = re.compile(r"^-?\d+$")
_NUMBER = re.compile(r"^-?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?$")
_LONG_RANGE = (-(2**63), 2**63 - 1)
_INT_RANGE = (-(2**31), 2**31 - 1)


def _is_integer(value: str) -> bool:
    return bool(_INTEGER.match(value))


def _is_guid(value: str) -> bool:
    try:
        uuid.UUID(value)
    except ValueError:
        return False
    return True


_SIMPLE_CONSTRAINTS: dict[str, Callable[[str], bool]] = {
    "int": lambda v: _is_integer(v) and _INT_RANGE[0] <= int(v) <= _INT_RANGE[1],
    "long": lambda v: _is_integer(v) and _LONG_RANGE[0] <= int(v) <= _LONG_RANGE[1],
    "bool": lambda v: v.lower() in ("true", "false"),
    "alpha": lambda v: v.isascii() and v.isalpha(),
    "guid": _is_guid,
    "double": lambda v: bool(_NUMBER.match(v)),
    "float": lambda v: bool(_NUMBER.match(v)),
    "decimal": lambda v: bool(_NUMBER.match(v)),
}


def _argument_constraint(kind: str, arguments: list[int]) -> Callable[[str], bool]:
    arity = {"range": (2,), "length": (1, 2)}.get(kind, (1,))
    if len(arguments) not in arity:
        raise ValueError(f"constraint {kind} takes {' or '.join(map(str, arity))} number(s), got {len(arguments)}")
    first, last = arguments[0], arguments[-1]
    checks: dict[str, Callable[[str], bool]] = {
        "min": lambda v: _is_integer(v) and int(v) >= first,
        "max": lambda v: _is_integer(v) and int(v) <= first,
        "range": lambda v: _is_integer(v) and first <= int(v) <= last,
        "minlength": lambda v: len(v) >= first,
        "maxlength": lambda v: len(v) <= first,
        "length": lambda v: first <= len(v) <= last,
    }
    return checks[kind]


def _constraint(text: str) -> Callable[[str], bool]:
    if text in _SIMPLE_CONSTRAINTS:
        return _SIMPLE_CONSTRAINTS[text]
    match = _ARGUMENT_CONSTRAINT.match(text)
    if not match:
        raise ValueError(f"constraint {text!r} is not supported (see devhost/README.md for the list)")
    kind, raw = match.groups()
    try:
        arguments = [int(part) for part in raw.split(",")]
    except ValueError:
        raise ValueError(f"constraint {text!r} needs whole-number arguments") from None
    return _argument_constraint(kind, arguments)


@dataclass(frozen=True)
class _Segment:
    literal: str | None = None  # lower-cased text for a literal segment
    name: str = ""
    optional: bool = False
    catch_all: bool = False
    checks: tuple[Callable[[str], bool], ...] = ()

    @property
    def rank(self) -> int:
        """ASP.NET precedence: literal before constrained before plain before optional before catch-all."""
        if self.literal is not None:
            return 0
        if self.catch_all:
            return 4
        if self.optional:
            return 3
        return 1 if self.checks else 2

    def accepts(self, value: str) -> bool:
        if self.literal is not None:
            return value.lower() == self.literal
        return all(check(value) for check in self.checks)


def _parse_segment(text: str) -> _Segment:
    if "{" not in text and "}" not in text:
        return _Segment(literal=text.lower())
    match = _PARAMETER.match(text)
    if not match:
        raise ValueError(
            f"segment {text!r} is not supported: use a literal, {{name}}, {{name?}}, {{name:constraint}} or {{*name}} "
            "(no default values, no text mixed with a parameter)"
        )
    star, name, constraints, question = match.groups()
    if star and question:
        raise ValueError(f"segment {text!r}: a catch-all parameter cannot also be optional")
    checks = tuple(_constraint(part) for part in constraints.split(":")[1:])
    return _Segment(name=name, optional=bool(question), catch_all=bool(star), checks=checks)


@dataclass(frozen=True)
class RouteTemplate:
    template: str
    segments: tuple[_Segment, ...]

    @classmethod
    def parse(cls, template: str) -> RouteTemplate:
        """Parse a route (prefix included); ValueError says which segment is wrong."""
        segments = tuple(_parse_segment(part) for part in template.strip("/").split("/") if part)
        for index, segment in enumerate(segments):
            last = index == len(segments) - 1
            if segment.catch_all and not last:
                raise ValueError(f"route {template!r}: the catch-all {{*{segment.name}}} must be the last segment")
            if segment.optional and not all(s.optional for s in segments[index:]):
                raise ValueError(f"route {template!r}: optional {{{segment.name}?}} may only be followed by optional segments")
        names = [s.name for s in segments if s.literal is None]
        if len(names) != len(set(names)):
            raise ValueError(f"route {template!r} uses a parameter name twice")
        return cls(template, segments)

    @property
    def precedence(self) -> tuple:
        """Sort key: the most specific template is tried first, as in ASP.NET."""
        return tuple(segment.rank for segment in self.segments), self.template

    def match(self, path: str) -> dict[str, str] | None:
        """Route parameters for an URL path (still percent-encoded), or None when the template does not match."""
        parts = [unquote(part) for part in path.split("/") if part]
        params: dict[str, str] = {}
        for index, segment in enumerate(self.segments):
            if segment.catch_all:
                rest = "/".join(parts[index:])
                if rest and not segment.accepts(rest):
                    return None
                if rest:
                    params[segment.name] = rest
                return params
            if index >= len(parts):
                return params if segment.optional else None
            if not segment.accepts(parts[index]):
                return None
            if segment.literal is None:
                params[segment.name] = parts[index]
        return params if len(parts) == len(self.segments) else None
