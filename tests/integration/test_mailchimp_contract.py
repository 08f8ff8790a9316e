"""Every MailchimpClient operation sent through Prism, which checks requests and answers against Mailchimp's
own OpenAPI description (../shared/mailchimp/, beside the repository) and fails on any violation.

Under CI (the environment variable CI set, as .ci/run does) a missing description or Prism fails the test: CI must
not pass without the contract having been checked. Elsewhere the test is skipped and says why.

Prism proxies to the local Mailchimp; the spec's paths have no /3.0 prefix, so the client's base URL is Prism's
root and Prism's upstream is the local Mailchimp's /3.0.
"""
from __future__ import annotations

import json
import os
import socket
import subprocess
from datetime import datetime, timezone
from pathlib import Path

import pytest

from shared.mailchimp import MailchimpClient, RetryPolicy
from shared.members import Outcome
from tests.integration.test_mailchimp_client import LIST, make_client, member, put_member
from tests.services import ROOT, free_port, stop_process, wait_until

SPEC = ROOT.parent / "shared" / "mailchimp" / "marketing-api-3.0.55.openapi.json"
PRISM = ROOT / "node_modules" / ".bin" / "prism"
ONE_ATTEMPT = RetryPolicy(attempts=1, max_seconds=5)  # a Prism 500 (response violation) must surface, not retry



def missing_contract_tools() -> list[str]:
    missing = []
    if not SPEC.exists():
        missing.append(f"Mailchimp's OpenAPI file is not beside the repository ({SPEC})")
    if not PRISM.exists():
        missing.append(f"Prism is not installed ({PRISM}): run `npm install` (make install)")
    return missing


def require_contract_tools() -> None:
    """Fail under CI, skip (saying why) elsewhere, when the contract cannot be checked."""
    missing = missing_contract_tools()
    if not missing:
        return
    if os.environ.get("CI"):
        pytest.fail("CI is set, so the Prism contract test must run: " + "; ".join(missing), pytrace=False)
    pytest.skip("; ".join(missing))


def spec_with_member_tags(folder: Path) -> Path:
    """A copy of Mailchimp's OpenAPI description whose batch member (`Add_List_Members`, used by batch subscribe's
    `members[]`) also has `tags`, a list of tag names. The 3.0.55 file predates them; Mailchimp's developer release
    notes, "added ability to sync tags for existing members" (2022; REFERENCE.md §4), document per-member `tags` in
    batch subscribe, for new members and for existing ones with update_existing: true."""
    spec = json.loads(SPEC.read_text())
    member = spec["components"]["schemas"]["Add_List_Members"]
    member["properties"]["tags"] = {"type": "array", "items": {"type": "string"}, "title": "Tags",
                                    "description": "The tags that are associated with a member (names)."}
    copy = folder / SPEC.name
    copy.write_text(json.dumps(spec))
    return copy


@pytest.fixture(scope="module")
def prism(mailchimp_server, tmp_path_factory):
    port = free_port()
    folder = tmp_path_factory.mktemp("prism")
    log = folder / "prism.log"
    spec = spec_with_member_tags(folder)
    process = subprocess.Popen([str(PRISM), "proxy", "--errors", "-v", "warn", str(spec), mailchimp_server.api_root,
                                "--host", "127.0.0.1", "--port", str(port)],
                               cwd=ROOT, stdout=log.open("wb"), stderr=subprocess.STDOUT, start_new_session=True)

    def listening() -> bool:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return True

    try:
        wait_until(listening, "Prism", timeout=90)
        yield f"http://127.0.0.1:{port}", log
    finally:
        stop_process(process)


def violations(log: Path) -> list[str]:
    """Prism at -v warn logs only what went wrong: request/response violations and errors it answered with."""
    return [line for line in log.read_text(errors="replace").splitlines()
            if ("error" in line or "warning" in line or "iolation" in line) and "awaiting" not in line]


def run_every_operation(client: MailchimpClient, mailchimp) -> None:
    put_member(mailchimp, "existing@example.com", merge_fields={"FNAME": "Old"})
    put_member(mailchimp, "appeared@example.com")
    client.ping()
    assert client.get_audience(LIST).id == LIST
    client.create_merge_field(LIST, "CITY", "City", "text")
    assert "CITY" in {f.tag for f in client.list_merge_fields(LIST)}
    tag = client.create_tag(LIST, "VIP")
    assert client.ensure_tags(LIST, ["VIP", "New"])["VIP"] == tag
    read_at = datetime.now(timezone.utc)
    existing = {m.email: m for m in client.iter_members(LIST)}
    results = client.upsert_members(
        LIST, [member("new@example.com", FNAME="N"), member("existing@example.com", existing["existing@example.com"],
                                                            FNAME="Changed", CITY="Oslo"),
               member("appeared@example.com", FNAME="A"), member("noreply@example.com")],
        status_for_new="subscribed", existing_as_of=read_at, tags_of=lambda m: ["vip", "Spring"])  # members[].tags
    assert [r.outcome for r in results] == [Outcome.CREATED, Outcome.UPDATED, Outcome.UPDATED, Outcome.REFUSED]
    assert [r.tagged for r in results] == [True, True, True, False]  # the answer shows the tags on each written
    assert client.tag_members(LIST, tag, ["new@example.com", "existing@example.com"]) == {}
    assert client.untag_members(LIST, tag, ["existing@example.com"]) == {}
    tagged = client.iter_members(LIST, fields=("email_address", "status", "merge_fields", "tags"))
    assert {m.email: m.tags for m in tagged}["new@example.com"] == ("VIP", "Spring")  # the read the export plans with
    assert list(client.iter_members(LIST, fields=("email_address", "status"), status="unsubscribed",
                                    since_last_changed=read_at, unsubscribed_since=read_at, page_size=2)) == []
    # What the audience mirror reads (shared/audience_mirror.py): tags with their times, a tag's members, counts.
    details = {t.name: t for t in client.list_tag_details(LIST)}
    assert details["VIP"].id == tag and details["VIP"].updated_at is not None
    assert set(client.iter_tag_members(LIST, tag)) == {"new@example.com", "appeared@example.com"}
    assert client.count_members(LIST, "subscribed") == 3
    assert client.count_members(LIST, since_last_changed=read_at) == 3
    assert client.get_member(LIST, "nobody@example.com") is None
    client.archive_member(LIST, "new@example.com")
    client.archive_member(LIST, "nobody@example.com")


def test_every_client_operation_conforms_to_mailchimps_openapi(request, mailchimp):
    require_contract_tools()  # before Prism is started: a missing tool fails (CI) or skips this test itself
    root, log = request.getfixturevalue("prism")
    with make_client(root, retry=ONE_ATTEMPT) as client:
        run_every_operation(client, mailchimp)
    assert violations(log) == []
