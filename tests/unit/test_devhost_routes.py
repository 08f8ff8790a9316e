"""HTTP route templates: parameters, constraints, optional and catch-all segments, and which template wins."""
from __future__ import annotations

import pytest

from devhost.routes import RouteTemplate


@pytest.mark.parametrize("template, path, expected", [
    ("api/items/{id}", "/api/Items/42", {"id": "42"}),
    ("api/items/{id}", "/api/items/42/", {"id": "42"}),
    ("api/items/{id}", "/api/items", None),
    ("api/items/{id}", "/api/items/42/extra", None),
    ("api/items/{id:int}", "/api/items/-7", {"id": "-7"}),
    ("api/items/{id:int}", "/api/items/abc", None),
    ("api/items/{id:int}", "/api/items/2147483648", None),
    ("api/items/{id:long}", "/api/items/2147483648", {"id": "2147483648"}),
    ("api/items/{id:int:min(1)}", "/api/items/0", None),
    ("api/items/{id:range(1,10)}", "/api/items/10", {"id": "10"}),
    ("api/items/{id:range(1,10)}", "/api/items/11", None),
    ("api/codes/{code:alpha:length(3)}", "/api/codes/abc", {"code": "abc"}),
    ("api/codes/{code:alpha:length(3)}", "/api/codes/ab1", None),
    ("api/codes/{code:length(2,3)}", "/api/codes/abcd", None),
    ("api/runs/{run:guid}", "/api/runs/3f2504e0-4f89-11d3-9a0c-0305e82c3301", {"run": "3f2504e0-4f89-11d3-9a0c-0305e82c3301"}),
    ("api/runs/{run:guid}", "/api/runs/nope", None),
    ("api/flags/{on:bool}", "/api/flags/True", {"on": "True"}),
    ("api/price/{p:decimal}", "/api/price/1.5", {"p": "1.5"}),
    ("api/items/{id}/{name?}", "/api/items/1", {"id": "1"}),
    ("api/items/{id}/{name?}", "/api/items/1/bob", {"id": "1", "name": "bob"}),
    ("api/files/{*path}", "/api/files/a/b%20c/d.csv", {"path": "a/b c/d.csv"}),
    ("api/files/{*path}", "/api/files", {}),
    ("api/seg/{name}", "/api/seg/Spring%2FSale", {"name": "Spring/Sale"}),
])
def test_match(template: str, path: str, expected: dict | None) -> None:
    assert RouteTemplate.parse(template).match(path) == expected


def test_more_specific_templates_sort_first() -> None:
    templates = ["api/items/{*rest}", "api/items/{name}", "api/items/{id:int}", "api/items/new", "api/items/{x?}"]
    ordered = sorted((RouteTemplate.parse(t) for t in templates), key=lambda route: route.precedence)
    assert [route.template for route in ordered] == [
        "api/items/new", "api/items/{id:int}", "api/items/{name}", "api/items/{x?}", "api/items/{*rest}"]


@pytest.mark.parametrize("template, problem", [
    ("api/items/{id=5}", "is not supported"),
    ("api/files/file.{ext}", "is not supported"),
    ("api/items/{id:regex(^\\d+$)}", "not supported"),
    ("api/items/{id:min(a)}", "whole-number arguments"),
    ("api/items/{id:range(1)}", "takes 2 number"),
    ("api/items/{id?}/more", "may only be followed by optional"),
    ("api/{*rest}/more", "must be the last segment"),
    ("api/{*rest?}", "cannot also be optional"),
    ("api/{id}/{id}", "uses a parameter name twice"),
])
def test_unsupported_templates_are_refused_with_the_reason(template: str, problem: str) -> None:
    with pytest.raises(ValueError, match=problem):
        RouteTemplate.parse(template)


def test_the_admin_api_refuses_every_call_when_the_host_has_no_key() -> None:
    """POST /admin/functions/{name} is never open: without a configured key nothing is run, whatever is sent."""
    from devhost.admin import ManualRuns
    from devhost.app_index import FunctionSpec
    from devhost.invoker import Invoker

    ran = []
    spec = FunctionSpec("work", {"type": "queueTrigger", "name": "msg"}, ran.append, False)
    for key in (None, ""):
        runs = ManualRuns(Invoker(".", 1), key, [], [spec])
        for headers in ({}, {"x-functions-key": ""}, {"x-functions-key": "anything"}):
            assert runs.answer("POST", "/admin/functions/work", headers, b'{"input": ""}').status == 401
    assert ran == []
