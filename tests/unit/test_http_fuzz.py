"""Hostile and broken HTTP input through the real function handlers: every answer is a 2xx or a 4xx with a JSON error.

The handlers of function_app are called with `azure.functions.HttpRequest` objects. Behind them is a small App: the
real DestinationService (validation, merge patch) on an in-memory store that refuses what Table storage would (a
string property over 64 KiB, an entity over 1 MiB), whose Mailchimp check always refuses the key; the real
ExportService, its `start` (segment names, snapshots, mapping) over in-memory segment files with a Mailchimp whose
audience is always there, and its errors report (`error_page`) over in-memory blobs. Nothing here reaches storage or
Mailchimp; tests/e2e/test_http_limits.py does.
Every request comes from a signed-in admin (App Service Authentication's principal header, authentication on), so
what is fuzzed is the handler behind the role check.
"""
from __future__ import annotations

import contextlib
import dataclasses
import io
import json
import re
from typing import Any, Iterator
from urllib.parse import parse_qsl, urlsplit

import azure.functions as func
import pytest
from azure.core.exceptions import HttpResponseError
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from blueprints import destinations_api, exports_api
from shared import bootstrap
from shared.auth import ADMIN, Principal, encode_principal
from shared.config import ConfigError, load_settings
from shared.destination_service import DestinationService
from shared.adapters.tables import DestinationTable
from shared.destinations import Claim, Destination, FieldMapping
from shared.exports import ExportService, errors_prefix
from shared.mailchimp.errors import MailchimpAuthError
from shared.report_csv import to_csv
from shared.runs import Run, now_iso

SETTINGS = load_settings({"AzureWebJobsStorage": "UseDevelopmentStorage=true", "WEBSITE_AUTH_ENABLED": "True"})
ADMIN_ALICE = Principal(id="00000000-0000-4000-8000-0000000000a1", name="Alice Admin", email="alice@contoso.example",
                        roles=frozenset({ADMIN}))
SIGNED_IN = {"x-ms-client-principal": encode_principal(ADMIN_ALICE), "x-requested-with": "fetch"}
FUZZ = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


# --- a small App: real validation, memory instead of storage, a Mailchimp that refuses every key ----------------------

class MemoryDestinations:
    """The destination table: records with a version (their ETag), written unconditionally (no writer races here).

    Like Table storage, a record is refused (HttpResponseError, which the app must never let reach it) when one of
    its string properties, in the table's own format, takes more than 64 KiB as UTF-16, or all of it more than 1 MiB."""

    PROPERTY_BYTES = 64 * 1024
    ENTITY_BYTES = 1 << 20

    def __init__(self) -> None:
        self.saved: dict[str, tuple[Destination, str]] = {}

    def save(self, destination: Destination, expected: str | None = None) -> str:
        entity = DestinationTable._to_entity(destination)
        size = 0
        for key, value in entity.items():
            value_bytes = len(value.encode("utf-16-le")) if isinstance(value, str) else 8
            if value_bytes > self.PROPERTY_BYTES:
                raise HttpResponseError(f"PropertyValueTooLarge: {key} is {value_bytes:,} bytes as UTF-16")
            size += len(key.encode("utf-16-le")) + value_bytes
        if size > self.ENTITY_BYTES:
            raise HttpResponseError(f"EntityTooLarge: {size:,} bytes")
        version = str(int((self.saved.get(destination.id) or (None, "0"))[1]) + 1)
        self.saved[destination.id] = (destination, version)
        return version

    def get(self, destination_id: str) -> Destination | None:
        return (self.saved.get(destination_id) or (None, ""))[0]

    def read(self, destination_id: str) -> tuple[Destination, str] | None:
        return self.saved.get(destination_id)

    def list(self) -> list[Destination]:
        return [destination for destination, _ in self.saved.values()]

    def delete(self, destination_id: str, expected: str | None = None) -> None:
        self.saved.pop(destination_id, None)

    def active_run(self, destination_id: str) -> str | None:
        return None

    def exported(self, destination_id: str) -> dict[str, str]:
        return {}

    def claim(self, destination_id: str, run_id: str, covers: dict[str, str], is_finished: Any, trigger: str = "http",
              only_if_newer: bool = False) -> Claim:
        return Claim("claimed", run_id)  # every start is the only one (each call puts d1 back)

    def release(self, destination_id: str, run_id: str, restore: Any = None) -> str | None:
        return None


class MemoryBlobs:
    """Blob Storage, for the segment files (and the errors report's blobs)."""

    def __init__(self, blobs: dict[str, bytes] | None = None) -> None:
        self.blobs: dict[str, bytes] = dict(blobs or {})

    def list_names(self, prefix: str = "") -> Iterator[str]:
        yield from sorted(name for name in self.blobs if name.startswith(prefix))

    def read_bytes(self, name: str) -> bytes:
        return self.blobs[name]

    def open_binary(self, name: str) -> io.BytesIO:
        return io.BytesIO(self.blobs[name])


SEGMENT_FILES = {f"{segment}/2026/11/28/1700/{name}": data
                 for segment in ("HighValueCustomers", "Churned")
                 for name, data in (("part-0.csv", b"Email,FirstName\r\nann@contoso.example,Ann\r\n"), ("_SUCCESS", b""))}


class AudienceThere:
    """Mailchimp as the export check sees it: the audience exists."""

    def call(self, destination: Destination, action: Any) -> Any:
        class Client:
            def get_audience(self, audience_id: str) -> Any:
                return {"id": audience_id}

        return action(Client())


class DroppedMessages:
    def send(self, message: dict[str, Any], delay_seconds: int = 0) -> None:
        pass


class RefusingConnections:
    """Every key is checked and refused by "Mailchimp", so a create with a key ends in a 400 like a dead key does."""

    @contextlib.contextmanager
    def client_for_secret(self, secret: dict[str, Any]) -> Iterator[Any]:
        class Client:
            def ping(self) -> None:
                raise MailchimpAuthError("refused", status=401)

        yield Client()

    def forget(self, destination: Destination) -> None:
        pass


class MemoryRuns:
    def __init__(self) -> None:
        self.runs: dict[str, Run] = {}
        self.chunk_rows: dict[str, list[dict[str, Any]]] = {}

    def get(self, run_id: str, counts: bool = True) -> Run | None:
        return self.runs.get(run_id)

    def create(self, run: Run) -> None:
        pass  # a started run is not kept: the runs of the errors report are seeded, and kept apart from these

    def list_for_destination(self, destination_id: str) -> list[Run]:
        return []

    def chunks(self, run_id: str) -> Iterator[dict[str, Any]]:
        yield from self.chunk_rows.get(run_id, [])


DESTINATION = Destination(id="d1", display_name="Newsletter", audience_id="a1b2c3d4e5",
                          mapping=FieldMapping("Email", {"FNAME": "FirstName"}), segments=("HighValueCustomers", "Churned"),
                          consent_accepted=True, consent_by="someone", consent_at=now_iso(), status_for_new=None,
                          tag_prefix="", credential_kind="none", created_at=now_iso(), updated_at=now_iso())


def error_line(number: int, pad: int = 0) -> bytes:
    return json.dumps({"segment": "HighValueCustomers", "partition": "p.csv", "row": number, "email": f"x{number}@",
                       "reason": "no valid email" + "!" * pad, "source": "validation"}).encode() + b"\n"


def seed_report(app: bootstrap.App, run_id: str, blob_lines: list[int], chunk_lines: list[int],
                pads: list[int] | None = None) -> list[bytes]:
    """A run of d1 whose errors report has plan blobs then chunk blobs of these many lines; returns every line. Line n
    has its reason made longer by pads[n % len(pads)] characters."""
    def line(number: int) -> bytes:
        return error_line(number, pads[number % len(pads)] if pads else 0)

    work, runs = app.exports.work, app.exports.runs
    for name in [n for n in work.blobs if n.startswith(errors_prefix(run_id))]:
        del work.blobs[name]
    runs.runs[run_id] = Run(id=run_id, destination_id="d1", trigger="http", status="completed_with_errors",
                            created_at=now_iso(), segments=[])
    lines: list[bytes] = []
    for part, count in enumerate(blob_lines):
        block = [line(len(lines) + i) for i in range(count)]
        work.blobs[f"{errors_prefix(run_id)}plan-{part:04d}.jsonl"] = b"".join(block)
        lines += block
    rows = []
    for number, count in enumerate(chunk_lines):
        block = [line(len(lines) + i) for i in range(count)]
        name = f"{errors_prefix(run_id)}chunk-{number:06d}-abc-1.jsonl" if count else ""
        if count:
            work.blobs[name] = b"".join(block)
        rows.append({"errorsBlob": name})
        lines += block
    runs.chunk_rows[run_id] = rows
    return lines


def build_app(**limits: int) -> bootstrap.App:
    store = MemoryDestinations()
    store.save(DESTINATION)
    exports = ExportService(settings=SETTINGS, destinations=store, runs=MemoryRuns(), segments=MemoryBlobs(SEGMENT_FILES),
                            work=MemoryBlobs(), plan_queue=DroppedMessages(), chunk_queue=DroppedMessages(),
                            connections=AudienceThere())
    destinations = DestinationService(store, RefusingConnections(), exports=exports, run_files=None, segments=None,
                                      oauth=None, states=None)
    app = bootstrap.App(settings=dataclasses.replace(SETTINGS, **limits), destinations=destinations, exports=exports,
                        retention=None, erasures=None)
    seed_report(app, "r1", [3, 5], [2, 0, 4])
    app.exports.runs.runs["r-gone"] = Run(id="r-gone", destination_id="deleted", trigger="http", status="succeeded",
                                          created_at=now_iso(), segments=[])
    return app


@pytest.fixture(scope="module")
def app() -> Iterator[bootstrap.App]:
    with pytest.MonkeyPatch.context() as patch:
        built = build_app()
        patch.setattr(bootstrap, "app", lambda: built)
        yield built


@contextlib.contextmanager
def limits(**values: int) -> Iterator[bootstrap.App]:
    with pytest.MonkeyPatch.context() as patch:
        built = build_app(**values)
        patch.setattr(bootstrap, "app", lambda: built)
        yield built


# --- calling the handlers ------------------------------------------------------------------------------------------

BODY_ROUTES = {
    "create": (destinations_api.create_destination, "POST", "destinations", {}),
    "patch": (destinations_api.update_destination, "PATCH", "destinations/d1", {"id": "d1"}),
    "patch-missing": (destinations_api.update_destination, "PATCH", "destinations/nope", {"id": "nope"}),
    "export": (exports_api.start_export, "POST", "destinations/d1/exports", {"id": "d1"}),
}


def call(route: str, body: bytes) -> func.HttpResponse:
    """One request; destination d1 is put back as it was first, so no example depends on what an earlier one patched."""
    bootstrap.app().exports.destinations.save(DESTINATION)
    handler, method, path, route_params = BODY_ROUTES[route]
    request = func.HttpRequest(method, f"http://localhost/api/{path}",
                               headers={"content-type": "application/json", **SIGNED_IN},
                               params={}, route_params=route_params, body=body)
    return handler(request)


def errors_page(run_id: str = "r1", **params: str) -> func.HttpResponse:
    query = "&".join(f"{k}={v}" for k, v in params.items())
    request = func.HttpRequest("GET", f"http://localhost/api/exports/{run_id}/errors?{query}", headers=SIGNED_IN,
                               params=params, route_params={"runId": run_id}, body=b"")
    return exports_api.export_errors(request)


def answered(response: Any) -> dict[str, Any] | None:
    """A 2xx, or a 4xx whose body is a JSON object with an `error` message; never a 5xx. Always no-store."""
    assert isinstance(response, func.HttpResponse)
    assert 200 <= response.status_code < 500, response.get_body()[:300]
    assert response.headers.get("Cache-Control") == "no-store"
    if response.status_code < 400:
        return None
    doc = json.loads(response.get_body())
    assert isinstance(doc["error"], str) and doc["error"]
    return doc


def body_problem(doc: dict[str, Any] | None) -> str:
    """What the answer says about the body as a whole (the `(body)` detail), or ''."""
    details = (doc or {}).get("details") or []
    return " ".join(d["message"] for d in details if d.get("field") == "(body)")


# --- strategies ----------------------------------------------------------------------------------------------------

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner, max_size=4),
    max_leaves=25,
)
def repeated(longest: int) -> st.SearchStrategy[str]:
    """One character (ASCII, accented, or beyond U+FFFF: two UTF-16 units) repeated up to `longest` times."""
    return st.tuples(st.sampled_from(["x", "é", "😀"]), st.integers(1, longest)).map(lambda pair: pair[0] * pair[1])


plausible = {
    "displayName": st.just("Newsletter"),
    "consent": st.just({"accepted": True}),
    "audienceId": st.just("a1b2c3d4e5"),
    "mailchimp": st.just({"apiKey": "0123456789abcdef0123456789abcdef-us6"}),
    "mapping": st.just({"email": "Email", "mergeFields": {"FNAME": "FirstName"}}) | st.builds(
        lambda email, columns: {"email": email, "mergeFields": {f"F{i}": column for i, column in enumerate(columns)}},
        repeated(40_000), st.lists(repeated(2_000), max_size=80)),
    "segments": st.just(["HighValueCustomers"]) | st.lists(repeated(3_000), min_size=1, max_size=55),
    "statusForNew": st.sampled_from(["subscribed", "pending"]),
    "tagPrefix": st.just("cdp:"),
    "schedule": st.just({"enabled": False}),
    "exportOnArrival": st.booleans(),
    "createMissingMergeFields": st.booleans(),
    "confirmUntag": st.booleans(),
}
shaped_bodies = st.fixed_dictionaries({}, optional={name: value | json_values for name, value in plausible.items()})
json_soup = st.text(alphabet='[]{}",:\\ 0123456789.eE+-truefalsnl\ud7ff\u2028', max_size=200).map(
    lambda text: text.encode("utf-8"))


@FUZZ
@given(route=st.sampled_from(sorted(BODY_ROUTES)), body=st.binary(max_size=300) | json_soup)
@example(route="create", body=b"\xff\xfe[\x00")  # UTF-16 with a BOM
@example(route="export", body=b"[" * 5000)
@example(route="patch", body=b'{"displayName": "\\ud800"}')  # a lone surrogate, which no storage could encode
def test_any_bytes_are_answered_2xx_or_4xx(app: bootstrap.App, route: str, body: bytes) -> None:
    answered(call(route, body))


LONG_EMAIL_COLUMN = {"mapping": {"email": "E" * 40_000}}  # the review's bodies: 500s from Table storage (64 KiB)
LONG_SEGMENTS = {"segments": [f"{i}" + "S" * 2_000 for i in range(50)]}


@FUZZ
@given(route=st.sampled_from(sorted(BODY_ROUTES)), value=json_values | shaped_bodies)
@example(route="create", value={"displayName": "N", "consent": {"accepted": True}, "audienceId": "a1",
                                **LONG_EMAIL_COLUMN})
@example(route="patch", value=LONG_SEGMENTS)
@example(route="patch", value={"mapping": {"email": "Email", "mergeFields": {f"F{i}": "😀" * 255 for i in range(80)}}})
def test_any_json_is_answered_2xx_or_4xx(app: bootstrap.App, route: str, value: Any) -> None:
    doc = answered(call(route, json.dumps(value).encode()))
    if not isinstance(value, dict):
        assert "must be a JSON object" in body_problem(doc)


@FUZZ
@given(route=st.sampled_from(sorted(BODY_ROUTES)), depth=st.integers(1, 60_000),
       opener=st.sampled_from(['{"a":', "[", '{"mapping":[']), inner=st.sampled_from(["1", "{}", "[]", '"[[[{{{"']))
@example(route="create", depth=31, opener="[", inner="[]")  # 32 deep: allowed
@example(route="create", depth=32, opener="[", inner="[]")  # 33 deep: refused
def test_nesting_deeper_than_the_limit_is_refused_before_parsing(app: bootstrap.App, route: str, depth: int,
                                                                 opener: str, inner: str) -> None:
    closer = {"{": "}", "[": "]"}
    tail = "".join(closer[c] for c in reversed(opener) if c in closer)
    body = (opener * depth + inner + tail * depth).encode()
    nesting = depth * opener.count("{") + depth * opener.count("[") + (inner in ("{}", "[]"))
    problem = body_problem(answered(call(route, body)))
    assert ("HTTP_MAX_JSON_DEPTH" in problem) == (nesting > SETTINGS.http_max_json_depth), problem


@FUZZ
@given(route=st.sampled_from(sorted(BODY_ROUTES)), size=st.integers(1_900, 2_200), fill=st.sampled_from([" ", "\n"]))
def test_a_body_over_the_size_limit_is_refused_whatever_it_holds(route: str, size: int, fill: str) -> None:
    with limits(http_max_body_bytes=2_048):
        core = json.dumps({"displayName": "Newsletter", "segments": ["HighValueCustomers"]})
        body = (core + fill * (size - len(core))).encode()
        problem = body_problem(answered(call(route, body)))
    assert ("HTTP_MAX_BODY_BYTES" in problem) == (size > 2_048), problem


def test_default_limits_refuse_one_byte_over_a_mebibyte_and_100000_levels(app: bootstrap.App) -> None:
    body = json.dumps({"displayName": "Newsletter"}).encode()
    over = body + b" " * ((1 << 20) - len(body) + 1)
    for route in BODY_ROUTES:
        too_large = call(route, over)
        assert too_large.status_code == 400
        assert "1,048,577 bytes; at most 1,048,576" in body_problem(json.loads(too_large.get_body()))
        too_deep = call(route, b"[" * 100_000 + b"]" * 100_000)
        assert too_deep.status_code == 400
        assert "more than 32 deep (HTTP_MAX_JSON_DEPTH)" in body_problem(json.loads(too_deep.get_body()))


def test_brackets_inside_strings_do_not_count_towards_the_depth(app: bootstrap.App) -> None:
    tricky = '{"displayName": "' + "[{" * 200 + '\\"' + "[{" * 200 + '"}'
    assert "HTTP_MAX_JSON_DEPTH" not in body_problem(answered(call("create", tricky.encode())))


@pytest.mark.parametrize("body, said", [
    (b"[]", "not an array"), (b'"x"', "not a string"), (b"null", "not null"), (b"12", "not a number"),
    (b"true", "not a boolean"), (b"{", "must be JSON"), (b"\xc3\x28{}", "not UTF-8"),
    (b'{"displayName": "\\udfff"}', "unpaired surrogate"),
])
def test_a_body_that_is_not_a_json_object_says_what_it_is(app: bootstrap.App, body: bytes, said: str) -> None:
    for route in BODY_ROUTES:
        response = call(route, body)
        assert response.status_code == 400
        assert said in body_problem(answered(response)), route


@pytest.mark.parametrize("route", ["create", "patch"])
@pytest.mark.parametrize("change, fields", [
    (LONG_EMAIL_COLUMN, {"mapping.email"}),
    (LONG_SEGMENTS, {f"segments[{i}]" for i in range(50)}),
    ({"mapping": {"email": "Email", "mergeFields": {"FNAME": "F" * 256}}}, {"mapping.mergeFields.FNAME"}),
])
def test_a_name_longer_than_255_characters_is_a_400_naming_the_field_and_nothing_is_saved(
        app: bootstrap.App, route: str, change: dict[str, Any], fields: set[str]) -> None:
    body = {"displayName": "Newsletter", "consent": {"accepted": True}, "audienceId": "a1b2c3d4e5"} | change
    response = call(route, json.dumps(body).encode())
    details = answered(response)["details"]
    assert response.status_code == 400 and {d["field"] for d in details} == fields
    assert all("at most 255 characters" in d["message"] for d in details)
    assert [d.id for d in app.destinations.list()] == ["d1"] and app.destinations.get("d1") == DESTINATION


def test_export_body_with_segments_of_the_wrong_shape_is_a_400() -> None:
    with limits():
        wrong_shape_and_right()


def wrong_shape_and_right() -> None:
    for segments in (5, "HighValueCustomers", [["HighValueCustomers"]], [{"a": 1}], {"HighValueCustomers": 1}):
        response = call("export", json.dumps({"segments": segments}).encode())
        assert response.status_code == 400, segments
        assert "segments" in answered(response)["error"]
    assert call("export", json.dumps({"segments": ["highvaluecustomers"]}).encode()).status_code == 202
    assert call("export", b"").status_code == 202


# --- the errors report, a page at a time ---------------------------------------------------------------------------

def read_all_pages(run_id: str, limit: int | None, **more: str) -> tuple[list[bytes], list[func.HttpResponse]]:
    params = ({} if limit is None else {"limit": str(limit)}) | more
    lines: list[bytes] = []
    answers = []
    while True:
        response = errors_page(run_id, **params)
        assert response.status_code == 200, response.get_body()
        answers.append(response)
        lines += response.get_body().splitlines(keepends=True)
        link = response.headers.get("Link")
        if link is None:
            assert response.headers.get("x-continuation") is None
            return lines, answers
        found = re.fullmatch(r'<([^>]+)>; rel="next"', link)
        assert found, link
        url = urlsplit(found[1])
        assert url.path == f"/api/exports/{run_id}/errors"
        params = dict(parse_qsl(url.query))
        assert params["continuation"] == response.headers["x-continuation"]
        assert len(answers) < 10_000


@FUZZ
@given(blob_lines=st.lists(st.integers(0, 12), max_size=4), chunk_lines=st.lists(st.integers(0, 6), max_size=5),
       limit=st.integers(1, 15))
def test_pages_hold_every_line_exactly_once_in_report_order(app: bootstrap.App, blob_lines: list[int],
                                                            chunk_lines: list[int], limit: int) -> None:
    expected = seed_report(app, "r-paged", [n for n in blob_lines if n], chunk_lines)
    lines, answers = read_all_pages("r-paged", limit)
    assert lines == expected
    assert b"".join(app.exports.error_lines("r-paged")) == b"".join(expected)
    assert all(len(a.get_body().splitlines()) <= limit for a in answers)
    assert all(len(a.get_body().splitlines()) == limit for a in answers[:-1])  # only the last page is short
    for answer in answers:
        assert answer.headers.get("Cache-Control") == "no-store"
        assert answer.mimetype == "application/x-ndjson"


@FUZZ
@given(blob_lines=st.lists(st.integers(0, 12), max_size=4), chunk_lines=st.lists(st.integers(0, 6), max_size=5),
       pads=st.lists(st.integers(0, 700), min_size=1, max_size=7), limit=st.integers(1, 15),
       page_bytes=st.integers(1, 3_000))
@example(blob_lines=[3], chunk_lines=[2], pads=[0], limit=15, page_bytes=1)  # every line over the limit: one a page
def test_a_page_ends_at_the_byte_limit_and_the_pages_still_hold_every_line_once(
        app: bootstrap.App, blob_lines: list[int], chunk_lines: list[int], pads: list[int], limit: int,
        page_bytes: int) -> None:
    expected = seed_report(app, "r-bytes", [n for n in blob_lines if n], chunk_lines, pads)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(exports_api, "PAGE_BYTES", page_bytes)
        lines, answers = read_all_pages("r-bytes", limit)
        csv_rows, csv_answers = read_all_pages("r-bytes", limit, format="csv")
    assert lines == expected
    start = 0
    for answer in answers:
        body = answer.get_body()
        held = len(body.splitlines())
        assert held <= limit and (len(body) <= page_bytes or held == 1), (len(body), held)  # a line is never split
        start += held
        if answer is not answers[-1]:  # ended by the line limit, or because the next line would not have fitted
            assert held == limit or len(body) + len(expected[start]) > page_bytes
    # the same pages as CSV: the same rows (the header once), each page no larger than its JSON Lines
    assert b"".join(csv_rows) == to_csv(expected, header=True)
    assert [len(a.get_body().splitlines()) for a in csv_answers[1:]] == [len(a.get_body().splitlines())
                                                                         for a in answers[1:]]
    header = len(to_csv([], header=True))
    for csv_answer, answer in zip(csv_answers, answers):
        assert len(csv_answer.get_body()) <= len(answer.get_body()) + (header if csv_answer is csv_answers[0] else 0)


def test_default_page_is_10000_lines_and_limit_goes_to_50000(app: bootstrap.App) -> None:
    expected = seed_report(app, "r-big", [6_000, 6_000, 6_000, 6_000], [400] * 20)  # 32,000 lines
    lines, answers = read_all_pages("r-big", None)
    assert lines == expected
    assert [len(a.get_body().splitlines()) for a in answers] == [10_000, 10_000, 10_000, 2_000]
    lines, answers = read_all_pages("r-big", 50_000)  # 32,000 lines of about 130 bytes: more than 4 MiB
    assert lines == expected
    assert [len(a.get_body()) > exports_api.PAGE_BYTES - 200 for a in answers] == [True, False]
    assert all(len(a.get_body()) <= exports_api.PAGE_BYTES == 4 << 20 for a in answers)


@pytest.mark.parametrize("limit", ["0", "-1", "50001", "1e3", "", " 5", "٣", "9" * 40])
def test_a_limit_out_of_range_is_a_400(app: bootstrap.App, limit: str) -> None:
    response = errors_page(limit=limit)
    if limit == "":  # empty: the default
        assert response.status_code == 200
    else:
        assert response.status_code == 400
        assert "limit must be a whole number of lines from 1 to 50,000" in answered(response)["error"]


@FUZZ
@given(continuation=st.text(max_size=80) | st.binary(max_size=60).map(
    lambda raw: __import__("base64").urlsafe_b64encode(raw).decode()), limit=st.text(max_size=8))
@example(continuation="MjpydW5zL3IxL2Vycm9ycy9wbGFuLTAwMDAuanNvbmw", limit="1")  # 2:runs/r1/errors/plan-0000.jsonl
@example(continuation="OTk5OTk5OTk5OnJ1bnMvcjEvZXJyb3JzL3BsYW4tMDAwMC5qc29ubA", limit="3")  # line 999999999 of it
@example(continuation="MDpydW5zL3IyL2Vycm9ycy9wbGFuLTAwMDAuanNvbmw", limit="1")  # 0:runs/r2/...: not this report
def test_any_continuation_and_limit_are_answered_200_or_400(app: bootstrap.App, continuation: str, limit: str) -> None:
    response = errors_page(continuation=continuation, limit=limit)
    answered(response)
    assert response.status_code in (200, 400)


def test_a_continuation_of_another_run_is_refused(app: bootstrap.App) -> None:
    seed_report(app, "r-other", [3], [])
    token = errors_page("r1", limit="2").headers["x-continuation"]
    response = errors_page("r-other", continuation=token)
    assert response.status_code == 400
    assert "continuation" in answered(response)["error"]


def test_unknown_run_and_deleted_destination_answer_json_no_store(app: bootstrap.App) -> None:
    assert answered(errors_page("r-missing")) and errors_page("r-missing").status_code == 404
    assert answered(errors_page("r-gone")) and errors_page("r-gone").status_code == 410


def test_every_answer_of_the_api_says_no_store(app: bootstrap.App) -> None:
    get = func.HttpRequest("GET", "http://localhost/api/destinations/d1", headers=SIGNED_IN, params={},
                           route_params={"id": "d1"}, body=b"")
    for response in (destinations_api.get_destination(get), destinations_api.list_destinations(get),
                     call("create", b"{}"), errors_page("r1")):
        assert response.headers.get("Cache-Control") == "no-store"


# --- the settings ----------------------------------------------------------------------------------------------------

def test_limit_settings_default_to_a_mebibyte_and_32_levels() -> None:
    assert (SETTINGS.http_max_body_bytes, SETTINGS.http_max_json_depth) == (1_048_576, 32)
    chosen = load_settings({"AzureWebJobsStorage": "UseDevelopmentStorage=true", "HTTP_MAX_BODY_BYTES": "65536",
                            "HTTP_MAX_JSON_DEPTH": "8"})
    assert (chosen.http_max_body_bytes, chosen.http_max_json_depth) == (65_536, 8)


@pytest.mark.parametrize("name, value", [
    ("HTTP_MAX_BODY_BYTES", "0"), ("HTTP_MAX_BODY_BYTES", "200000000"), ("HTTP_MAX_BODY_BYTES", "1MB"),
    ("HTTP_MAX_JSON_DEPTH", "0"), ("HTTP_MAX_JSON_DEPTH", "100000"), ("HTTP_MAX_JSON_DEPTH", "deep"),
])
def test_limit_settings_out_of_range_stop_the_app_naming_the_setting(name: str, value: str) -> None:
    with pytest.raises(ConfigError, match=name):
        load_settings({"AzureWebJobsStorage": "UseDevelopmentStorage=true", name: value})
