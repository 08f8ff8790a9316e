"""The admin page (web/, /api/console/) in Chromium, against the real function_app, Azurite and the local Mailchimp.

Signing in through the local App Service sign-in form; the whole setup flow (Connect to Mailchimp with its OAuth,
Configure the connector, Save and export) with the run's progress, its per-row report and the CSV download equal to
the API's; errors tied to their fields; cancelling a running export; deleting a destination; no access without a role
and sign-in when signed out; axe-core on every view, the keyboard alone, a phone's width; French; and the Content
Security Policy holding with nothing requested outside 127.0.0.1. About 45 s: one stack and one browser for the
module, a context per test. Screenshots of the steps: tests/browser/artifacts/.
"""
from __future__ import annotations

import csv
import io
import json
import re

import pytest
from playwright.sync_api import Error as PlaywrightError
from playwright.sync_api import expect

from blueprints.page import WEB_ROOT
from shared.report_csv import BOM, COLUMNS, cell
from tests.browser.conftest import ADMIN, NOBODY, ROWS, Stack, fill_sign_in_form, require_chromium, sign_in
from tests.e2e.conftest import DEMO_AUDIENCE, DEMO_KEY, destination_body, wait_for_run

require_chromium()
expect.set_options(timeout=10_000)  # the full suite shares two cores: a poll or a queue message can take a while

EN = json.loads((WEB_ROOT / "i18n" / "en.json").read_text("utf-8"))
FR = json.loads((WEB_ROOT / "i18n" / "fr.json").read_text("utf-8"))
WRONG_KEY = "f" * 32 + "-us6"


def api(stack: Stack, method: str, path: str, **kwargs):
    return stack.host.call(method, path, headers={"X-Requested-With": "test"}, **kwargs)


def create(stack: Stack, **overrides) -> dict:
    answer = api(stack, "POST", "destinations", json=destination_body(**overrides))
    assert answer.status_code == 201, answer.text
    return answer.json()


@pytest.fixture(scope="module")
def exported(stack) -> tuple[dict, dict]:
    """A destination made through the API (the demo API key) with one finished run of LapsedBuyers: its report has
    the segment's invalid rows."""
    destination = create(stack, displayName="Lapsed buyers", segments=["LapsedBuyers"])
    started = api(stack, "POST", f"destinations/{destination['id']}/exports")
    assert started.status_code == 202, started.text
    run = wait_for_run(stack.host, started.json()["id"], timeout=60)
    assert run["counts"]["invalid"] > 0, run
    return destination, run


def test_an_admin_signs_in_through_the_form_and_lands_on_the_destinations(stack, new_context, shot):
    page = new_context().new_page()
    page.goto(stack.page_url)
    expect(page).to_have_url(re.compile(r"/\.auth/login/aad\?post_login_redirect_uri="))  # not signed in: sent to sign in
    shot(page, "sign-in-form")
    page.fill("#name", ADMIN["name"])
    page.fill("#email", ADMIN["email"])
    page.check("input[name=role][value='Exports.Admin']")
    page.click("button[type=submit]")
    expect(page).to_have_url(re.compile(r"/api/console/#/destinations$"))
    expect(page.locator("#destinations-title")).to_have_text(EN["list.title"])
    expect(page.locator("#signed-in-as")).to_contain_text(ADMIN["name"])
    expect(page.locator("#add-destination")).to_be_visible()
    expect(page.locator("#destinations-empty, #destinations-table")).to_be_visible()
    shot(page, "destinations")


# Records, in the page, every state of the run's progress bar and whether the run summary appeared: the destination
# view redraws them on each poll, so a MutationObserver sees each one.
WATCH_PROGRESS = """() => {
  window.__progress = [];
  const seen = () => {
    const bar = document.getElementById('run-progress');
    const text = document.getElementById('run-progress-text');
    const summary = document.getElementById('run-summary');
    const entry = bar ? {value: bar.hasAttribute('value') ? bar.value : null, max: bar.max, text: text ? text.textContent : '',
                         finished: Boolean(summary)} : (summary ? {finished: true, text: summary.textContent} : null);
    const last = window.__progress[window.__progress.length - 1];
    if (entry && JSON.stringify(entry) !== JSON.stringify(last)) window.__progress.push(entry);
  };
  new MutationObserver(seen).observe(document.getElementById('main'), {childList: true, subtree: true});
  seen();
}"""


def test_the_wizard_connects_with_oauth_configures_exports_and_reports(stack, new_context, shot):
    context = new_context()
    page = context.new_page()
    sign_in(page, stack, ADMIN)
    expect(page.locator("#destinations-title")).to_be_visible()
    visited = []
    page.on("request", lambda request: visited.append(request.url) if request.is_navigation_request() else None)

    # step 2: Connect to Mailchimp
    page.click("#add-destination")
    expect(page).to_have_url(re.compile(r"#/destinations/new$"))
    expect(page.locator("#connect-title")).to_have_text(EN["connect.title"])
    page.fill("#display-name", "Newsletter (browser)")
    page.check("#consent-agree")
    page.fill("#audience-id", DEMO_AUDIENCE)
    expect(page.locator("#method-oauth")).to_be_checked()
    shot(page, "connect-filled")
    page.click("#authenticate-mailchimp")  # saves a draft, then this window goes to Mailchimp's authorize page and back
    expect(page).to_have_url(re.compile(r"#/destinations/[^/]+/connect\?connected=1$"), timeout=20_000)
    expect(page.locator("#oauth-connected")).to_have_text(EN["connect.oauthDone"])
    expect(page.locator("#audience-found")).to_contain_text("Demo audience")  # back from Mailchimp, checked at once
    assert any("/oauth2/authorize?" in url and url.startswith(stack.mailchimp.url) for url in visited), visited
    assert any("/api/mailchimp/oauth/callback?" in url for url in visited), visited
    destination_id = re.search(r"#/destinations/([^/]+)/connect", page.url)[1]
    page.click("#connect-audience")  # Connect again, by hand: checked with the stored OAuth credential
    expect(page.locator("#audience-found")).to_contain_text("Demo audience")
    expect(page.locator("#connection-state")).to_have_text(EN["connect.connectedOauth"])
    page.click("#add-self")
    expect(page.locator("#export-users-list")).to_contain_text(ADMIN["email"])
    expect(page.locator("#add-self")).to_be_disabled()
    shot(page, "connect-connected")
    page.click("#next-step")

    # step 3: Configure the connector
    expect(page).to_have_url(re.compile(rf"#/destinations/{destination_id}/configure$"))
    segments = page.locator("#segment-list li")
    expect(segments).to_have_count(len(ROWS))
    for name, rows in ROWS.items():
        item = segments.filter(has_text=name)
        expect(item.locator(".hint")).to_contain_text(f"{rows:,} profiles")
    segments.filter(has_text="HighValueCustomers").locator("input").check()
    expect(page.locator("#profile-total")).to_contain_text(f"{ROWS['HighValueCustomers']} of at most")
    page.select_option("#map-email", "Email")
    expect(page.locator("#attributes .attribute")).to_have_count(2)  # FNAME and LNAME, which the audience has
    page.locator("#attributes .attribute").nth(1).get_by_role("button").click()  # remove LNAME ...
    expect(page.locator("#attributes .attribute")).to_have_count(1)
    page.click("#add-attribute")  # ... and add it again
    added = page.locator("#attributes .attribute").nth(1)
    expect(added.locator("select").first).to_have_value("LNAME")
    added.locator("select").nth(1).select_option("LastName")
    first = page.locator("#attributes .attribute").nth(0)
    expect(first.locator("select").first).to_have_value("FNAME")
    expect(first.locator("select").nth(1)).to_have_value("FirstName")
    shot(page, "configure")
    page.click("#save-and-export")

    # step 4: the destination, its run's progress, report and CSV
    expect(page).to_have_url(re.compile(rf"#/destinations/{destination_id}\?run="))
    run_id = re.search(r"\?run=(.+)$", page.url)[1]
    expect(page.locator("#run-live")).to_be_visible()
    page.evaluate(WATCH_PROGRESS)
    expect(page.locator("#run-summary")).to_be_visible(timeout=60_000)
    run = api(stack, "GET", f"exports/{run_id}").json()
    assert run["status"] == "completed_with_errors" and run["counts"]["invalid"] == stack.stats["HighValueCustomers"].invalid > 0
    history = page.evaluate("window.__progress")  # queued, planning, chunk n of 8 ..., finished with the bar full
    assert not history[0]["finished"], history
    bars = [entry["value"] for entry in history if entry.get("max", 1) > 1]
    assert bars == sorted(bars), history
    assert history[-1]["finished"] and history[-1]["value"] == history[-1]["max"] == run["chunks"]["total"] > 1, history
    expect(page.locator(f"#run-row-{run_id}")).to_contain_text(EN["status.completed_with_errors"])
    expect(page.locator("#run-segments-table tfoot")).to_contain_text(str(run["counts"]["created"]))
    shot(page, "destination-finished")

    # the per-row report: every line of the API's, filtered by outcome, and the CSV the page builds
    lines = [json.loads(line) for line in api(stack, "GET", f"exports/{run_id}/errors").text.splitlines()]
    assert len(lines) == run["counts"]["invalid"] + run["counts"]["refused"] + run["counts"]["failed"]
    report = page.locator("#report-table tbody tr")
    expect(report).to_have_count(len(lines))
    expect(page.locator("#report-count")).to_contain_text(f"{len(lines)} of the {len(lines)}")
    page.select_option("#report-filter", "mailchimp")
    expect(report).to_have_count(0)
    page.select_option("#report-filter", "validation")
    expect(report).to_have_count(len([line for line in lines if line["source"] == "validation"]))
    expect(report.first).to_contain_text(EN["report.sourceValidation"])
    with page.expect_download() as download_info:
        page.click("#download-csv")
    download = download_info.value
    assert download.suggested_filename == f"export-{run_id}-errors.csv"
    downloaded = download.path().read_bytes()
    expect(page.locator("#download-status")).to_contain_text(download.suggested_filename)
    from_api = api(stack, "GET", f"exports/{run_id}/errors", params={"format": "csv"}).content
    assert downloaded == from_api
    rows = list(csv.reader(io.StringIO(downloaded.decode("utf-8").removeprefix(BOM), newline="")))
    assert rows[0] == list(COLUMNS) and rows[1:] == [[cell(line.get(name)) for name in COLUMNS] for line in lines]
    page.select_option("#report-filter", "")
    shot(page, "destination-report")

    page.click("#app-title")
    expect(page.locator(f"#destination-row-{destination_id}")).to_contain_text(EN["status.completed_with_errors"])
    shot(page, "list-finished-run")


def test_a_wrong_audience_and_a_refused_key_are_shown_next_to_their_field(stack, new_context, shot):
    page = new_context().new_page()
    sign_in(page, stack, ADMIN, then="/api/console/#/destinations/new")
    expect(page.locator("#connect-title")).to_be_visible()
    page.fill("#display-name", "Wrong on purpose")
    page.check("#consent-agree")
    page.fill("#audience-id", DEMO_AUDIENCE)
    page.check("#method-api-key")
    expect(page.locator("#api-key-panel")).to_be_visible()
    expect(page.locator("#oauth-panel")).to_be_hidden()

    page.fill("#api-key", WRONG_KEY)
    page.click("#connect-audience")
    said = api(stack, "POST", "mailchimp/audience", json={"audienceId": DEMO_AUDIENCE, "apiKey": WRONG_KEY}).json()
    expect(page.locator("#api-key-error")).to_have_text(said["details"][0]["message"])
    expect(page.locator("#api-key")).to_have_attribute("aria-describedby", re.compile(r"(^| )api-key-error( |$)"))
    expect(page.locator("#api-key")).to_have_attribute("aria-invalid", "true")
    expect(page.locator("#api-key")).to_be_focused()
    expect(page.locator("#audience-id-error")).to_be_hidden()
    assert WRONG_KEY not in page.content()
    shot(page, "refused-key")

    page.fill("#api-key", DEMO_KEY)
    page.fill("#audience-id", "zz99zz99zz")
    page.click("#connect-audience")
    said = api(stack, "POST", "mailchimp/audience", json={"audienceId": "zz99zz99zz", "apiKey": DEMO_KEY}).json()
    expect(page.locator("#audience-id-error")).to_have_text(said["details"][0]["message"])
    expect(page.locator("#audience-id")).to_have_attribute("aria-describedby", re.compile(r"(^| )audience-id-error( |$)"))
    expect(page.locator("#audience-id")).to_have_attribute("aria-invalid", "true")
    expect(page.locator("#api-key-error")).to_be_hidden()  # the key was accepted this time: its message is gone
    expect(page.locator("#api-key")).not_to_have_attribute("aria-describedby", re.compile("api-key-error"))
    shot(page, "wrong-audience")

    page.fill("#audience-id", "not an id!")  # checked in the page before asking anyone
    page.click("#connect-audience")
    expect(page.locator("#audience-id-error")).to_have_text(EN["connect.audienceInvalid"])

    page.fill("#audience-id", DEMO_AUDIENCE)
    page.click("#connect-audience")
    expect(page.locator("#audience-found")).to_contain_text("Demo audience")
    expect(page.locator("#audience-id-error")).to_be_hidden()
    expect(page.locator("#audience-id")).not_to_have_attribute("aria-invalid", "true")
    assert not [d for d in api(stack, "GET", "destinations").json()["destinations"] if d["displayName"] == "Wrong on purpose"]


def test_a_running_export_is_cancelled_from_its_page(stack, new_context, shot):
    audience = stack.mailchimp.admin("POST", "audiences", json={"api_key": DEMO_KEY, "name": "Cancelled", "double_optin": False})
    # an audience of its own, so every row of the segment is to be sent (none is already there, unchanged)
    destination = create(stack, displayName="Cancel me", segments=["HighValueCustomers"], audienceId=audience.json()["id"])
    page = new_context().new_page()
    sign_in(page, stack, ADMIN, then=f"/api/console/#/destinations/{destination['id']}")
    expect(page.locator("#destination-title")).to_have_text("Cancel me")
    expect(page.locator("#cancel-export")).to_be_hidden()
    # Every Mailchimp call takes 1.5 s: planning (which reads the audience first) runs for several seconds.
    stack.mailchimp.admin("POST", "latency", json={"profile": "none", "base_ms": 1500})
    try:
        page.click("#export-now")
        expect(page.locator("#export-started")).to_be_visible(timeout=20_000)
        expect(page.locator("#cancel-export")).to_be_visible()
        expect(page.locator("#run-live .badge")).to_have_text(EN["status.running"], timeout=15_000)
        expect(page.locator("#run-progress-text")).to_have_text(EN["run.planning"])
        shot(page, "running")
        page.click("#cancel-export")
        expect(page.locator("#export-cancelling")).to_have_text(EN["destination.cancelling"])
        expect(page.locator("#cancel-export")).to_be_hidden()
        shot(page, "cancelling")
    finally:
        stack.mailchimp.admin("POST", "latency", json={"profile": "none"})
    expect(page.locator("#run-live .badge")).to_have_text(EN["status.cancelled"], timeout=30_000)
    expect(page.locator("#run-message")).to_contain_text(f"cancelled by {ADMIN['email']}")
    run_id = page.locator("#runs-table tbody tr").first.get_attribute("id").removeprefix("run-row-")
    run = api(stack, "GET", f"exports/{run_id}").json()
    assert run["status"] == "cancelled" and run["counts"]["created"] + run["counts"]["updated"] == 0, run
    expect(page.locator(f"#run-row-{run_id}")).to_contain_text(EN["status.cancelled"])
    expect(page.locator("#export-now")).to_be_enabled()
    expect(page.locator("#cancel-export")).to_be_hidden()
    if run["counts"]["failed"]:  # planned before the cancel was seen: the rows not sent are listed as failed
        page.select_option("#report-filter", "failure")
        first_page = api(stack, "GET", f"exports/{run_id}/errors", params={"limit": "100"}).text.splitlines()
        failures = [line for line in map(json.loads, first_page) if line["source"] == "failure"]
        expect(page.locator("#report-table tbody tr")).to_have_count(len(failures))
        expect(page.locator("#report-table tbody tr").first).to_contain_text(f"not sent: cancelled by {ADMIN['email']}")
    elif not run["counts"]["invalid"]:  # cancelled before reading anything
        expect(page.locator("#report-empty")).to_have_text(EN["report.noneStopped"])
    shot(page, "cancelled")


def test_deleting_a_destination_says_what_it_does_and_removes_it(stack, new_context, shot):
    destination = create(stack, displayName="Delete me", segments=["LapsedBuyers"])
    page = new_context().new_page()
    sign_in(page, stack, ADMIN, then=f"/api/console/#/destinations/{destination['id']}")
    expect(page.locator("#destination-title")).to_have_text("Delete me")
    page.click("#delete-destination")
    dialog = page.locator("#delete-dialog")
    expect(dialog).to_be_visible()
    expect(dialog.locator("#delete-title")).to_have_text(EN["destination.deleteTitle"].replace("{name}", "Delete me"))
    for key in ("deleteStops", "deleteCredentials", "deleteReports", "deleteKeeps", "deleteMailchimp"):
        expect(dialog).to_contain_text(EN[f"destination.{key}"])
    expect(page.locator("#keep-destination")).to_be_focused()  # the safe choice first
    shot(page, "confirm")
    page.click("#keep-destination")
    expect(dialog).to_be_hidden()
    expect(page.locator("#delete-destination")).to_be_focused()
    assert api(stack, "GET", f"destinations/{destination['id']}").status_code == 200

    page.click("#delete-destination")
    page.click("#confirm-delete")
    expect(page).to_have_url(re.compile(r"#/destinations$"))
    expect(page.locator("#destinations-title")).to_be_visible()
    expect(page.locator("#destinations-table, #destinations-empty")).to_be_visible()
    expect(page.locator(f"#destination-row-{destination['id']}")).to_have_count(0)
    expect(page.get_by_text("Delete me", exact=True)).to_have_count(0)
    assert api(stack, "GET", f"destinations/{destination['id']}").status_code == 404
    shot(page, "deleted")


def test_a_user_without_a_role_sees_only_that_they_have_no_access(stack, new_context, shot, exported):
    page = new_context().new_page()
    sign_in(page, stack, NOBODY)
    expect(page.locator("#no-access-title")).to_have_text(EN["noAccess.title"])
    expect(page.locator("#no-access-text")).to_contain_text(NOBODY["email"])
    expect(page.locator("#roles-list")).to_contain_text("Exports.Admin")
    expect(page.locator("#roles-list")).to_contain_text("Exports.Operator")
    expect(page.locator("#no-access-sign-out")).to_be_visible()
    shot(page, "no-access")
    for view in ("#/destinations", "#/destinations/new", f"#/destinations/{exported[0]['id']}"):
        page.goto(f"{stack.page_url}{view}")
        expect(page.locator("#no-access-title")).to_be_visible()
        expect(page.locator("nav.steps, table, form, #destinations-title, #destination-title")).to_have_count(0)
        expect(page.locator("#main")).not_to_contain_text(exported[0]["displayName"])


def test_a_signed_out_visitor_is_sent_to_sign_in_and_back(stack, new_context, shot, exported):
    page = new_context().new_page()
    wanted = f"#/destinations/{exported[0]['id']}"
    page.goto(f"{stack.page_url}{wanted}")
    expect(page).to_have_url(re.compile(r"/\.auth/login/aad\?post_login_redirect_uri=%2Fapi%2Fconsole%2F%23"))
    expect(page.locator("h1")).to_have_text("Sign in")
    fill_sign_in_form(page, ADMIN)
    expect(page).to_have_url(f"{stack.page_url}{wanted}")
    expect(page.locator("#destination-title")).to_have_text(exported[0]["displayName"])
    page.click("#sign-out")
    expect(page).to_have_url(re.compile(r"/\.auth/login/aad\?"))  # signed out: the page sends the browser to sign in
    assert not [c for c in page.context.cookies() if c["name"] == "AppServiceAuthSession"]


# --- accessibility -----------------------------------------------------------------------------------------------------

def serious_violations(page) -> list[str]:
    from axe_playwright_python.sync_playwright import Axe

    results = Axe().run(page)
    return [f"{v['id']} ({v['impact']}): {v['help']} at {[n['target'] for n in v['nodes']][:5]}"
            for v in results.response["violations"] if v["impact"] in ("serious", "critical")]


def test_axe_finds_no_serious_or_critical_violation_on_any_view(stack, new_context, shot, exported):
    destination, run = exported
    page = new_context().new_page()
    sign_in(page, stack, ADMIN)
    views = {
        "list": ("#/destinations", "#destinations-table"),
        "connect-new": ("#/destinations/new", "#connect-form"),
        "connect-saved": (f"#/destinations/{destination['id']}/connect", "#connect-form"),
        "configure": (f"#/destinations/{destination['id']}/configure", "#configure-form"),
        "destination": (f"#/destinations/{destination['id']}?run={run['id']}", "#report-table"),
    }
    found = {}
    for name, (hash_, ready) in views.items():
        page.goto(f"{stack.page_url}{hash_}")
        expect(page.locator(ready)).to_be_visible()
        expect(page.locator(".loading")).to_have_count(0)
        found[name] = serious_violations(page)
        shot(page, name)
    # the states a step reaches: errors shown next to fields, the advanced settings open, the delete dialog
    page.goto(f"{stack.page_url}#/destinations/new")
    page.click("#next-step")
    expect(page.locator("#connect-errors")).to_be_visible()
    found["connect-errors"] = serious_violations(page)
    shot(page, "connect-errors")
    page.goto(f"{stack.page_url}#/destinations/{destination['id']}/configure")
    page.click("#advanced summary")
    page.click("#add-attribute")
    page.locator("#attributes .attribute").last.locator("select").first.select_option("__new__")
    expect(page.locator("#attributes .attribute").last.locator("input[type=text]")).to_be_focused()
    found["configure-advanced"] = serious_violations(page)
    shot(page, "configure-advanced")
    page.goto(f"{stack.page_url}#/destinations/{destination['id']}")
    page.click("#delete-destination")
    expect(page.locator("#delete-dialog")).to_be_visible()
    found["delete-dialog"] = serious_violations(page)
    page.keyboard.press("Escape")
    expect(page.locator("#delete-dialog")).to_be_hidden()

    nobody = new_context().new_page()
    sign_in(nobody, stack, NOBODY)
    expect(nobody.locator("#no-access-title")).to_be_visible()
    found["no-access"] = serious_violations(nobody)
    assert {name: v for name, v in found.items() if v} == {}


def focus_by_tab(page, selector: str, limit: int = 60, key: str = "Tab") -> None:
    """Press Tab (or key) until the element matching selector has the focus (it must be reachable by keyboard)."""
    for _ in range(limit):
        page.keyboard.press(key)
        if page.evaluate("s => Boolean(document.activeElement && document.activeElement.matches(s))", selector):
            return
    raise AssertionError(f"{selector} not reached with Tab (focus on {page.evaluate('document.activeElement.outerHTML')[:120]})")


def test_the_wizards_first_step_is_done_with_the_keyboard_alone(stack, new_context, shot):
    page = new_context().new_page()
    sign_in(page, stack, ADMIN)
    expect(page.locator("#destinations-title")).to_be_focused()  # each view starts at its heading
    focus_by_tab(page, "#add-destination")
    page.keyboard.press("Enter")
    expect(page.locator("#connect-title")).to_be_focused()
    focus_by_tab(page, "#display-name")
    page.keyboard.type("Keyboard only")
    focus_by_tab(page, "#consent-agree")
    page.keyboard.press("Space")
    expect(page.locator("#consent-agree")).to_be_checked()
    focus_by_tab(page, "#audience-id")
    page.keyboard.type(DEMO_AUDIENCE)
    focus_by_tab(page, "#connect-audience")
    page.keyboard.press("Enter")  # no credential yet: the page says what to do first, at the field
    expect(page.locator("#audience-id-error")).to_have_text(EN["connect.needOauthFirst"])
    expect(page.locator("#audience-id")).to_be_focused()
    focus_by_tab(page, "#authenticate-mailchimp")
    page.keyboard.press("Enter")
    expect(page).to_have_url(re.compile(r"connect\?connected=1$"), timeout=20_000)
    expect(page.locator("#audience-found")).to_contain_text("Demo audience")
    focus_by_tab(page, "#add-self")
    page.keyboard.press("Space")
    expect(page.locator("#export-users-list")).to_contain_text(ADMIN["email"])
    expect(page.locator("#remove-export-user-0")).to_be_focused()  # not lost when the button it was on is disabled
    focus_by_tab(page, "#export-user-email")
    page.keyboard.type("Oscar.Operator@contoso.example")
    page.keyboard.press("Enter")  # adds the user (it does not submit the step and lose what was typed)
    expect(page.locator("#export-users-list li")).to_have_count(2)
    expect(page.locator("#export-users-list")).to_contain_text("oscar.operator@contoso.example")
    expect(page).to_have_url(re.compile(r"connect\?connected=1$"))
    shot(page, "users-added")
    focus_by_tab(page, "#remove-export-user-1", limit=3, key="Shift+Tab")
    page.keyboard.press("Enter")
    expect(page.locator("#export-users-list li")).to_have_count(1)
    expect(page.locator("#export-user-email")).to_be_focused()  # "Add yourself" is disabled: focus goes to the next control
    focus_by_tab(page, "#next-step")
    shot(page, "next-focused")
    page.keyboard.press("Enter")
    expect(page).to_have_url(re.compile(r"#/destinations/[^/]+/configure$"))
    expect(page.locator("#configure-title")).to_be_focused()
    destination_id = re.search(r"#/destinations/([^/]+)/configure", page.url)[1]
    saved = api(stack, "GET", f"destinations/{destination_id}").json()
    assert saved["displayName"] == "Keyboard only" and saved["consent"]["accepted"] and saved["draft"]
    assert saved["mailchimp"] == {"connected": True, "method": "oauth"}
    assert [user["email"] for user in saved["exportUsers"]] == [ADMIN["email"]]


def no_horizontal_scroll(page) -> None:
    widths = page.evaluate("[document.documentElement.scrollWidth, document.documentElement.clientWidth,"
                           " document.body.scrollWidth]")
    assert widths[0] <= widths[1] and widths[2] <= widths[1], f"{page.url}: scroll width {widths} over the viewport"


def test_a_phone_screen_has_no_horizontal_scroll_on_the_list_and_the_wizard(stack, new_context, shot, exported):
    destination, _ = exported
    page = new_context(viewport={"width": 390, "height": 844}, is_mobile=True, has_touch=True).new_page()
    sign_in(page, stack, ADMIN)
    for name, (hash_, ready) in {"list": ("#/destinations", "#destinations-table"),
                                 "connect": ("#/destinations/new", "#connect-form"),
                                 "configure": (f"#/destinations/{destination['id']}/configure", "#configure-form")}.items():
        page.goto(f"{stack.page_url}{hash_}")
        expect(page.locator(ready)).to_be_visible()
        expect(page.locator(".loading")).to_have_count(0)
        no_horizontal_scroll(page)
        shot(page, f"phone-{name}")


# --- French ----------------------------------------------------------------------------------------------------------

def test_a_french_browser_gets_the_french_strings(stack, new_context, shot, exported):
    destination, run = exported
    page = new_context(locale="fr-FR").new_page()
    sign_in(page, stack, ADMIN)
    expect(page.locator("html")).to_have_attribute("lang", "fr")
    expect(page.locator("#destinations-title")).to_have_text(FR["list.title"])
    expect(page.locator("#add-destination")).to_have_text(FR["list.add"])
    expect(page.locator("#destinations-table thead")).to_contain_text(FR["list.lastRun"])
    expect(page.locator("#sign-out")).to_have_text(FR["app.signOut"])
    assert page.title() == FR["app.title"]
    shot(page, "list")
    page.click("#add-destination")
    expect(page.locator("#connect-title")).to_have_text(FR["connect.title"])
    expect(page.locator("label[for=consent-agree]")).to_have_text(FR["connect.agree"])
    page.goto(f"{stack.page_url}#/destinations/{destination['id']}?run={run['id']}")
    expect(page.locator(f"#run-row-{run['id']}")).to_contain_text(FR["status.completed_with_errors"])
    expect(page.locator("#download-csv")).to_have_text(FR["report.download"])
    shot(page, "destination")
    assert FR["list.title"] != EN["list.title"]


# --- the Content Security Policy -------------------------------------------------------------------------------------

def test_the_csp_holds_nothing_is_blocked_and_nothing_leaves_127_0_0_1(stack, new_context, browser, observed, exported):
    """Every view the tests above opened (and one more tour here) ran without a CSP report or a page error, and no
    request of any page went anywhere but 127.0.0.1; an inline script is refused, so the policy is really in force."""
    destination, run = exported
    page = new_context().new_page()
    sign_in(page, stack, ADMIN)
    for hash_, ready in (("#/destinations", "#destinations-table"), ("#/destinations/new", "#connect-form"),
                         (f"#/destinations/{destination['id']}/configure", "#configure-form"),
                         (f"#/destinations/{destination['id']}?run={run['id']}", "#report-table")):
        page.goto(f"{stack.page_url}{hash_}")
        expect(page.locator(ready)).to_be_visible()
    assert observed.requests > 20  # this tour alone makes about 30
    assert observed.csp == [] and observed.page_errors == [] and observed.elsewhere == [], observed

    unwatched = browser.new_context()
    try:
        probe = unwatched.new_page()
        reports = []
        probe.on("console", lambda message: reports.append(message.text))
        sign_in(probe, stack, ADMIN)
        expect(probe.locator("#destinations-title")).to_be_visible()
        with pytest.raises(PlaywrightError, match="violates the following Content Security Policy directive"):
            probe.add_script_tag(content="window.inlineRan = true")
        assert probe.evaluate("window.inlineRan") is None
        assert any("Content Security Policy" in text for text in reports), reports
    finally:
        unwatched.close()
