"""The routes the admin page adds, through their real handlers on in-memory ports: segment and audience lookups,
cancelling a run, the errors report as CSV. End to end (real host, storage, local Mailchimp): tests/e2e/test_page_routes.py."""
from __future__ import annotations

import contextlib
import csv
import dataclasses
import io
import json
from datetime import datetime, timezone
from typing import Any, Iterator

import azure.functions as func
import pytest

import function_app
from blueprints import exports_api, lookups_api
from shared import bootstrap
from shared.audience_lookup import LookupProblem, look_up_audience
from shared.auth import ADMIN, OPERATOR, Principal, encode_principal
from shared.destinations import ExportUser
from shared.exports import errors_prefix
from shared.mailchimp.errors import MailchimpAuthError, MailchimpNotFound, MailchimpUnavailable
from shared.mailchimp.models import Audience, MergeField
from shared.report_csv import BOM, COLUMNS, cell, to_csv
from shared.sample_segments import write_sample_export
from tests.unit.export_fakes import drain, make, write_snapshot

KEY = "0123456789abcdef0123456789abcdef-us6"
ADMIN_ALICE = Principal(id="a1", name="Alice", email="alice@contoso.example", roles=frozenset({ADMIN}))
OPERATOR_OLI = Principal(id="o1", name="Oli", email="oli@contoso.example", roles=frozenset({OPERATOR}))
NOBODY = Principal(id="n1", name="Nora", email="nora@contoso.example", roles=frozenset())


# --- the audience lookup --------------------------------------------------------------------------------------------

class Client:
    def __init__(self, fail: Exception | None = None) -> None:
        self.fail, self.closed = fail, False

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.closed = True

    def get_audience(self, list_id: str) -> Audience:
        if self.fail:
            raise self.fail
        return Audience(list_id, "Newsletter", True, 1234)

    def list_merge_fields(self, list_id: str) -> list[MergeField]:
        return [MergeField("FNAME", "First Name", "text", False, 1), MergeField("BDAY", "Birthday", "birthday", True, 3)]


class Connections:
    def __init__(self, fail: Exception | None = None, connected: bool = True) -> None:
        self.fail, self.connected, self.secrets, self.forgotten = fail, connected, [], []

    def client_for_secret(self, secret: dict[str, Any]) -> Client:
        from shared.mailchimp.credentials import Credentials

        Credentials.from_api_key(secret["apiKey"])  # malformed keys raise ValueError, as the real one does
        self.secrets.append(secret)
        return Client(self.fail)

    def client(self, destination) -> Client:
        from shared.connections import NotConnected

        if not self.connected:
            raise NotConnected("not connected")
        return Client(self.fail)

    def forget(self, destination) -> None:
        self.forgotten.append(destination.id)


class Destinations:
    def __init__(self, *destinations) -> None:
        self.by_id = {d.id: d for d in destinations}

    def get(self, destination_id: str):
        return self.by_id.get(destination_id)


def lookup_problem(body: dict, connections: Connections | None = None, destinations: Destinations | None = None) -> LookupProblem:
    with pytest.raises(LookupProblem) as caught:
        look_up_audience(body, connections or Connections(), destinations or Destinations())
    assert KEY not in str(caught.value.message) + json.dumps(caught.value.details)
    return caught.value


def test_an_api_key_being_typed_in_finds_the_audience_and_its_merge_fields():
    connections = Connections()
    found = look_up_audience({"audienceId": "a1b2c3d4e5", "apiKey": f" {KEY} "}, connections, Destinations())
    assert found == {"audience": {"id": "a1b2c3d4e5", "name": "Newsletter", "doubleOptIn": True, "memberCount": 1234},
                     "mergeFields": [{"tag": "FNAME", "name": "First Name", "type": "text", "required": False},
                                     {"tag": "BDAY", "name": "Birthday", "type": "birthday", "required": True}]}
    assert connections.secrets == [{"kind": "api_key", "apiKey": KEY}] and KEY not in json.dumps(found)


@pytest.mark.parametrize("body, status, field, said", [
    ({"apiKey": KEY}, 422, "audienceId", "audience ID is required"),
    ({"audienceId": "a1 b2", "apiKey": KEY}, 422, "audienceId", "letters and digits only"),
    ({"audienceId": "a1b2c3d4e5"}, 422, "apiKey", "either apiKey"),
    ({"audienceId": "a1b2c3d4e5", "apiKey": KEY, "destinationId": "d1"}, 422, "apiKey", "not both"),
    ({"audienceId": "a1b2c3d4e5", "apiKey": "nope"}, 422, "apiKey", "not a Mailchimp API key"),
    ({"audienceId": "a1b2c3d4e5", "apiKey": 5}, 422, "apiKey", "non-empty string"),
    ({"audienceId": "a1b2c3d4e5", "apiKey": KEY, "key": KEY}, 422, "key", "not a field"),
])
def test_what_is_wrong_is_said_next_to_its_field(body, status, field, said):
    problem = lookup_problem(body)
    assert problem.status == status and problem.details[0]["field"] == field and said in problem.message


@pytest.mark.parametrize("fail, status, field, said", [
    (MailchimpAuthError(f"refused {KEY}", status=401), 422, "apiKey", "refused this API key"),
    (MailchimpNotFound("no list", status=404), 422, "audienceId", "has no audience a1b2c3d4e5"),
    (MailchimpUnavailable(f"timeout {KEY}", status=503), 502, None, "could not be reached"),
])
def test_what_mailchimp_answers_is_said_in_our_words_never_with_the_key(fail, status, field, said):
    problem = lookup_problem({"audienceId": "a1b2c3d4e5", "apiKey": KEY}, Connections(fail))
    assert problem.status == status and said in problem.message
    assert (problem.details[0]["field"] if problem.details else None) == field


def test_a_stored_credential_is_used_by_destination_id():
    destination = dataclasses.replace(make_destination(), credential_kind="oauth")
    found = look_up_audience({"audienceId": "a1b2c3d4e5", "destinationId": "d1"}, Connections(), Destinations(destination))
    assert found["audience"]["name"] == "Newsletter"
    assert "no destination nope" in lookup_problem({"audienceId": "x1", "destinationId": "nope"}).message
    problem = lookup_problem({"audienceId": "x1", "destinationId": "d1"}, Connections(connected=False),
                             Destinations(destination))
    assert problem.details[0]["field"] == "destinationId" and "not connected" in problem.message
    revoked = Connections(MailchimpAuthError("refused", status=401))
    problem = lookup_problem({"audienceId": "x1", "destinationId": "d1"}, revoked, Destinations(destination))
    assert problem.details[0]["field"] == "destinationId" and revoked.forgotten == ["d1"]


def make_destination():
    from tests.unit.test_page_drafts import CONNECTION
    from shared.destinations import new_destination

    return dataclasses.replace(new_destination({**CONNECTION, "mapping": {"email": "Email"}, "segments": ["Vip"]},
                                               "x").destination, id="d1")


# --- the handlers, behind requires() ----------------------------------------------------------------------------------

@contextlib.contextmanager
def served(tmp_path, segments=("Vip",), **destination) -> Iterator[bootstrap.App]:
    service, client = make(tmp_path, list(segments), dest_kw=destination or None)
    service.settings = dataclasses.replace(service.settings, auth_enabled=True)
    app = bootstrap.App(settings=service.settings, destinations=service.destinations, exports=service, retention=None,
                        erasures=None)
    service.client = client
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(bootstrap, "app", lambda: app)
        yield app


def request(method: str, path: str, who: Principal | None, *, route_params=None, params=None, body: bytes = b"",
            headers=None) -> func.HttpRequest:
    sent = {"x-requested-with": "XMLHttpRequest", **(headers or {})}
    if who is not None:
        sent["x-ms-client-principal"] = encode_principal(who)
    return func.HttpRequest(method, f"http://localhost/api/{path}", headers=sent, params=params or {},
                            route_params=route_params or {}, body=body)


def answer(response: func.HttpResponse) -> tuple[int, Any]:
    assert response.headers.get("Cache-Control") == "no-store"
    body = response.get_body()
    return response.status_code, json.loads(body) if response.mimetype == "application/json" else body


def test_segments_answer_for_operators_with_the_profile_limit(tmp_path):
    write_sample_export(tmp_path, {"HighValueCustomers": 30}, root="ci",
                        taken_at=datetime(2026, 11, 28, 17, 0, tzinfo=timezone.utc))
    with served(tmp_path):
        lookups_api._catalogs.clear()
        status, doc = answer(lookups_api.list_segments(request("GET", "segments", OPERATOR_OLI)))
        assert status == 200 and doc["maxProfilesPerExport"] == 1_000_000
        (segment,) = doc["segments"]
        assert (segment["name"], segment["profiles"], segment["snapshotTime"]) == ("HighValueCustomers", 30,
                                                                                  "2026-11-28T17:00:00+00:00")
        assert answer(lookups_api.list_segments(request("GET", "segments", None)))[0] == 401
        assert answer(lookups_api.list_segments(request("GET", "segments", NOBODY)))[0] == 403


def test_the_audience_route_is_for_admins_and_refuses_a_cross_site_post(tmp_path):
    body = json.dumps({"audienceId": "a1b2c3d4e5", "apiKey": "nope"}).encode()
    with served(tmp_path) as app:
        app.exports.connections = Connections()
        status, doc = answer(lookups_api.look_up_mailchimp_audience(request("POST", "mailchimp/audience", ADMIN_ALICE, body=body)))
        assert status == 422 and doc["details"][0]["field"] == "apiKey"
        assert answer(lookups_api.look_up_mailchimp_audience(
            request("POST", "mailchimp/audience", OPERATOR_OLI, body=body)))[0] == 403
        forged = request("POST", "mailchimp/audience", ADMIN_ALICE, body=body, headers={"sec-fetch-site": "cross-site"})
        assert answer(lookups_api.look_up_mailchimp_audience(forged))[0] == 403
        status, doc = answer(lookups_api.look_up_mailchimp_audience(
            request("POST", "mailchimp/audience", ADMIN_ALICE, body=b"[1]")))
        assert status == 400 and "audienceId" in doc["error"]


def cancel(run_id: str, who: Principal | None = ADMIN_ALICE) -> tuple[int, Any]:
    return answer(exports_api.cancel_export(request("POST", f"exports/{run_id}/cancel", who, route_params={"runId": run_id})))


def test_cancel_running_then_twice_then_finished_then_unknown(tmp_path):
    write_snapshot(tmp_path, "Vip", "2026/11/28/1700", [f"p{i}@x.com" for i in range(6)])
    with served(tmp_path) as app:
        service = app.exports
        run = service.start("d1", "http")
        service.plan(service.plan_queue.msgs.pop(0)["runId"])
        status, doc = cancel(run.id)
        assert status == 202 and doc["status"] == "cancelling" and doc["message"].startswith("cancelled by alice@contoso.example at ")
        status, again = cancel(run.id)
        assert status == 202 and again["status"] == "cancelling" and again["message"] == doc["message"]
        after = service.start("d1", "http")  # at once, while the cancelled run's chunks are still to be counted
        assert after.details["after"] == run.id
        service.plan(service.plan_queue.msgs.pop(0)["runId"])  # it waits: planned only once the cancelled run is counted
        assert service.runs.get(after.id).status == "queued" and service.plan_queue.delayed == [{"runId": after.id}]
        drain(service)
        cancelled, followed = service.runs.get(run.id), service.runs.get(after.id)
        assert cancelled.status == "cancelled" and cancelled.counts["failed"] == 6
        assert followed.status == "succeeded" and followed.started_at >= cancelled.finished_at
        assert service.client.writes == 6  # every member once, by the run after the cancel
        assert cancel(run.id)[0] == 202  # cancelled already: nothing to do, and said so without an error

        other = service.start("d1", "http")
        drain(service)
        status, doc = cancel(other.id)
        assert status == 409 and doc["status"] == "succeeded" and "already finished" in doc["error"]
        assert cancel("nope")[0] == 404


def test_cancel_needs_a_role_and_an_operator_must_be_an_export_user(tmp_path):
    write_snapshot(tmp_path, "Vip", "2026/11/28/1700", ["a@x.com"])
    with served(tmp_path) as app:
        run = app.exports.start("d1", "http")
        assert cancel(run.id, None)[0] == 401
        assert cancel(run.id, NOBODY)[0] == 403
        status, doc = cancel(run.id, OPERATOR_OLI)  # not an export user: not even told the run exists
        assert status == 404 and doc["error"] == f"export {run.id} does not exist"
        assert app.exports.runs.get(run.id).status == "queued"
        app.destinations.d = dataclasses.replace(app.destinations.d, export_users=(ExportUser(email="oli@contoso.example"),))
        assert cancel(run.id, OPERATOR_OLI)[0] == 202


# --- the errors report as CSV -----------------------------------------------------------------------------------------

LINES = [
    {"segment": "Vip", "partition": "p.csv", "row": 1, "email": "=HYPERLINK(\"http://x\")", "reason": "no valid email",
     "source": "validation"},
    {"segment": "Vip", "partition": "p.csv", "row": 2, "email": "+33 1 23", "reason": "-bad, \"quoted\"\nline",
     "source": "validation"},
    {"segment": "Vip", "partition": "p.csv", "row": 3, "email": "@me", "reason": "Zoë's\tvalue", "source": "field",
     "column": "\tBirthDate", "mergeTag": "BDAY"},
    {"segment": "Vip", "partition": "p.csv", "row": 4, "email": None, "reason": "refused", "source": "mailchimp"},
]


def parse(data: bytes) -> list[list[str]]:
    return list(csv.reader(io.StringIO(data.decode("utf-8").removeprefix(BOM), newline="")))


def test_csv_guards_formula_cells_and_keeps_every_value():
    data = to_csv([json.dumps(line).encode() + b"\n" for line in LINES], header=True)
    assert data.startswith(BOM.encode()) and b"\r\n" in data
    rows = parse(data)
    assert rows[0] == list(COLUMNS)
    assert rows[1:] == [[cell(line.get(name)) for name in COLUMNS] for line in LINES]
    assert [row[3] for row in rows[1:]] == ["'=HYPERLINK(\"http://x\")", "'+33 1 23", "'@me", ""]
    assert rows[2][4] == "'-bad, \"quoted\"\nline" and rows[3][6] == "'\tBirthDate" and rows[3][4] == "Zoë's\tvalue"
    assert [cell(v) for v in (7, None, True, "plain", "-")] == ["7", "", "true", "plain", "'-"]
    assert to_csv([], header=False) == b""


def seed(app: bootstrap.App, run_id: str, count: int) -> list[dict]:
    lines = [{**LINES[n % len(LINES)], "row": n} for n in range(count)]
    app.exports.work.blobs[f"{errors_prefix(run_id)}plan-0000.jsonl"] = b"".join(json.dumps(l).encode() + b"\n" for l in lines)
    return lines


def errors(run_id: str, who: Principal | None = ADMIN_ALICE, **params: str) -> func.HttpResponse:
    return exports_api.export_errors(request("GET", f"exports/{run_id}/errors", who, route_params={"runId": run_id},
                                             params=params))


def test_the_csv_report_pages_like_the_jsonl_one_and_joins_into_one_file(tmp_path):
    write_snapshot(tmp_path, "Vip", "2026/11/28/1700", ["a@x.com"])
    with served(tmp_path) as app:
        run = app.exports.start("d1", "http")
        drain(app.exports)
        lines = seed(app, run.id, 7)
        whole = errors(run.id, format="csv")
        assert whole.status_code == 200 and (whole.mimetype, whole.charset) == ("text/csv", "utf-8")
        assert whole.headers["Cache-Control"] == "no-store"
        assert whole.headers["Content-Disposition"] == f'attachment; filename="export-{run.id}-errors.csv"'
        rows = parse(whole.get_body())
        assert rows[1:] == [[cell(line.get(name)) for name in COLUMNS] for line in lines]

        params, pages = {"format": "csv", "limit": "3"}, []
        while True:
            page = errors(run.id, **params)
            pages.append(page.get_body())
            if "Link" not in page.headers:
                break
            assert "format=csv" in page.headers["Link"] and "limit=3" in page.headers["Link"]
            params = {"format": "csv", "limit": "3", "continuation": page.headers["x-continuation"]}
        assert len(pages) == 3 and not any(p.startswith(BOM.encode()) for p in pages[1:])
        assert b"".join(pages) == whole.get_body()
        jsonl = errors(run.id)
        assert jsonl.mimetype == "application/x-ndjson" and [json.loads(l) for l in jsonl.get_body().splitlines()] == lines


def test_a_report_the_retention_period_removed_answers_410_not_an_empty_report(tmp_path):
    write_snapshot(tmp_path, "Vip", "2026/11/28/1700", ["a@x.com"])
    with served(tmp_path) as app:
        run = app.exports.start("d1", "http")
        drain(app.exports)
        seed(app, run.id, 3)
        assert errors(run.id).status_code == 200
        app.exports.runs.update(run.id, lambda r: r.details.update(peopleForgotten=True))  # as the sweep leaves it
        gone = errors(run.id)
        assert gone.status_code == 410 and "RETENTION_PERSONAL_DAYS" in gone.get_body().decode()


# --- routes -----------------------------------------------------------------------------------------------------------

def registered() -> list:
    """The app's functions as function_app registers them (read without get_functions(), which may run only once
    per app: it refuses the names it has seen already)."""
    return [builder._function for builder in function_app.app._function_builders]


def test_no_route_takes_a_prefix_azure_keeps_for_itself_and_names_are_unique():
    routes = {f.get_function_name(): f.get_trigger().route for f in registered()
              if f.get_trigger().get_binding_name() == "httpTrigger"}
    assert {"list_segments", "look_up_mailchimp_audience", "cancel_export", "console_page"} <= set(routes)
    assert routes["console_page"] == "console/{*path}" and routes["cancel_export"] == "exports/{runId}/cancel"
    assert not [r for r in routes.values() if r.strip("/").lower().startswith(("admin", "runtime"))]
    names = [f.get_function_name() for f in registered()]
    assert len(names) == len(set(names))
