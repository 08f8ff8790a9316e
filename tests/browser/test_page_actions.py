"""The admin page's run actions and erasures in Chromium, against the real function_app, Azurite and the local Mailchimp
(a stack of its own, tests/browser/conftest.py): a preview (dry run) shown as one, with its predicted numbers, merge-field
changes and report, and the audience untouched; "Retry failed members" after the local Mailchimp failed every write,
offered on the newest real run only, the page following the retry; a cancelled run still cancelling holding nothing
back and a preview never taking the Cancel button; the erasure requests view (admins only) with its confirmation,
outcome per audience, who asked, audiences to erase by hand, and no address kept; the reAddErased checkbox; axe-core
on each new view and state.
"""
from __future__ import annotations

import json
import re
import time
from collections.abc import Callable

from playwright.sync_api import expect

from blueprints.page import WEB_ROOT
from tests.browser.conftest import ADMIN, Stack, require_chromium, sign_in
from tests.browser.test_admin_page import serious_violations
from tests.e2e.conftest import DEMO_KEY, destination_body, wait_for_run

require_chromium()
expect.set_options(timeout=10_000)

EN = json.loads((WEB_ROOT / "i18n" / "en.json").read_text("utf-8"))
FR = json.loads((WEB_ROOT / "i18n" / "fr.json").read_text("utf-8"))
OPERATOR = {"name": "Oscar Operator", "email": "oscar.operator@contoso.example", "roles": ["Exports.Operator"]}


def api(stack: Stack, method: str, path: str, **kwargs):
    return stack.host.call(method, path, headers={"X-Requested-With": "test"}, **kwargs)


def new_audience(stack: Stack, name: str) -> str:
    return stack.mailchimp.admin("POST", "audiences", json={"api_key": DEMO_KEY, "name": name, "double_optin": False}).json()["id"]


def members(stack: Stack, audience: str) -> list[dict]:
    return stack.mailchimp.admin("GET", f"lists/{audience}/members").json()["members"]


def wait_for_preview(stack: Stack, run_id: str, timeout: float = 60) -> dict:
    """tests/e2e's wait_for_run, for a preview (which ends `previewed`)."""
    deadline = time.monotonic() + timeout
    while True:
        run = api(stack, "GET", f"exports/{run_id}").json()
        if run["status"] in ("previewed", "failed", "cancelled") or time.monotonic() > deadline:
            return run
        time.sleep(0.3)


def open_new_destination(stack: Stack, new_context, name: str, segment: str) -> tuple[dict, str, object]:
    """A destination named NAME exporting SEGMENT to an audience of its own (no export on arrival), its page open for
    an admin: (destination, audience id, page)."""
    audience = new_audience(stack, name)
    destination = create(stack, displayName=name, segments=[segment], audienceId=audience, exportOnArrival=False)
    page = new_context().new_page()
    sign_in(page, stack, ADMIN, then=f"/api/console/#/destinations/{destination['id']}")
    expect(page.locator("#destination-title")).to_have_text(name)
    return destination, audience, page


def export_now(page) -> str:
    """Click Export now on the open destination's page; the id of the run it started (the runs table's first row)."""
    page.click("#export-now")
    expect(page.locator("#export-started")).to_be_visible(timeout=20_000)
    return page.locator("#runs-table tbody tr").first.get_attribute("id").removeprefix("run-row-")


def report_lines(stack: Stack, run_id: str, **params) -> list[dict]:
    """The run's per-row report as the API gives it (JSON Lines, one object a line)."""
    return [json.loads(line) for line in api(stack, "GET", f"exports/{run_id}/errors", params=params).text.splitlines()
            if line]


def hold_the_next_answer(page, pattern: re.Pattern) -> Callable[[], tuple]:
    """Take the next GET matching `pattern` from the app at once and keep its answer from the page; the call returned
    waits (up to 10 s) until the page asked, then gives (route, answer): `route.fulfill(response=answer)` hands it over
    late. Later requests pass."""
    held: list[tuple] = []

    def hold(route) -> None:
        if route.request.method == "GET" and not held:
            held.append((route, route.fetch()))
        else:
            route.continue_()

    page.route(pattern, hold)

    def taken() -> tuple:
        deadline = time.monotonic() + 10
        while not held and time.monotonic() < deadline:
            page.wait_for_timeout(100)
        assert held, f"the page did not ask for {pattern.pattern}"
        return held[0]
    return taken


def hand_over_late(page, route, answer) -> None:
    """Give the page the answer held back, and let it handle it (its handler runs as soon as the answer is in). The
    wait is for the answer's arrival, not its body's: a page that drops an answer may never read its body."""
    with page.expect_event("response", predicate=lambda response: response.request == route.request):
        route.fulfill(response=answer)
    page.wait_for_timeout(700)


def create(stack: Stack, **overrides) -> dict:
    answer = api(stack, "POST", "destinations", json=destination_body(**overrides))
    assert answer.status_code == 201, answer.text
    return answer.json()


def test_a_preview_shows_predicted_numbers_says_nothing_was_sent_and_leaves_the_audience_alone(stack, new_context, shot):
    audience = new_audience(stack, "Previewed")
    destination = create(stack, displayName="Preview me", segments=["LapsedBuyers"], audienceId=audience,
                         exportOnArrival=False)
    page = new_context().new_page()
    sign_in(page, stack, ADMIN, then=f"/api/console/#/destinations/{destination['id']}")
    expect(page.locator("#destination-title")).to_have_text("Preview me")
    expect(page.locator("#preview-export")).to_have_text(EN["destination.preview"])
    expect(page.locator("#preview-export")).to_have_attribute("aria-describedby", "preview-hint")
    page.click("#preview-export")
    expect(page.locator("#preview-started")).to_have_text(EN["destination.previewStarted"])
    expect(page.locator("#run-live .badge")).to_have_text(EN["status.previewed"], timeout=60_000)
    expect(page.locator("#preview-note")).to_have_text(EN["run.previewNote"])
    assert "nothing was sent" in EN["run.previewNote"]
    expect(page.locator("#run-title")).to_contain_text("Preview of")
    expect(page.locator("#export-now")).to_be_enabled()  # a preview is finished: nothing holds the destination
    run_id = page.locator("#runs-table tbody tr").first.get_attribute("id").removeprefix("run-row-")
    run = api(stack, "GET", f"exports/{run_id}").json()
    expected = stack.stats["LapsedBuyers"]
    assert run["status"] == "previewed" and run["dryRun"] is True, run
    assert run["counts"]["created"] == expected.rows - expected.invalid - expected.duplicates > 0, run
    expect(page.locator(f"#run-row-{run_id}")).to_contain_text("(preview)")
    expect(page.locator("#run-segments h3")).to_have_text(EN["run.perSegmentPreview"])
    expect(page.locator("#run-segments-table tfoot")).to_contain_text(str(run["counts"]["created"]))
    changes = page.locator("#preview-changes-table tbody tr")
    expect(changes).to_have_count(1)
    expect(changes.first).to_contain_text("LapsedBuyers")
    expect(changes.first).to_contain_text(str(run["preview"]["segments"]["LapsedBuyers"]["tag"]))
    assert members(stack, audience) == []  # nothing sent
    found = serious_violations(page)
    shot(page, "preview")

    # the preview report: every change, as the API lists it, and the CSV the page builds equal to the API's
    lines = report_lines(stack, run_id)
    changed = [line for line in lines if line["source"] == "preview"]
    assert len(changed) == run["counts"]["created"] and {line["source"] for line in lines} == {"preview", "validation"}
    expect(page.locator("#run-report h3")).to_have_text(EN["report.previewTitle"])
    expect(page.locator("#report-count")).to_contain_text(f"of the {min(len(lines), 100)}")
    page.select_option("#report-filter", "preview")
    expect(page.locator("#report-table tbody tr").first).to_contain_text(EN["report.sourcePreview"])
    expect(page.locator("#report-table tbody tr").first).to_contain_text("would be created")
    expect(page.locator("#download-csv")).to_have_text(EN["report.downloadPreview"])
    with page.expect_download() as download_info:
        page.click("#download-csv")
    download = download_info.value
    assert download.path().read_bytes() == api(stack, "GET", f"exports/{run_id}/errors", params={"format": "csv"}).content

    # one of them already in the audience with another first name: the next preview would update FNAME for them
    someone = next(line["email"] for line in changed if line.get("action") == "created")
    stack.mailchimp.admin("POST", "members", json={"list_id": audience, "email": someone, "status": "subscribed",
                                                   "merge_fields": {"FNAME": "Not-their-name"}})
    page.click("#preview-export")
    expect(page.locator("#runs-table tbody tr")).to_have_count(2)
    expect(page.locator("#run-live .badge")).to_have_text(EN["status.previewed"], timeout=60_000)
    second_id = page.locator("#runs-table tbody tr").first.get_attribute("id").removeprefix("run-row-")
    second = api(stack, "GET", f"exports/{second_id}").json()
    assert second["counts"]["updated"] == 1 and second["counts"]["created"] == run["counts"]["created"] - 1, second
    assert second["preview"]["segments"]["LapsedBuyers"]["mergeFields"].get("FNAME") == 1, second["preview"]
    expect(page.locator("#preview-changes-table tbody tr").first).to_contain_text("FNAME: 1")
    held = members(stack, audience)
    assert [(m["email_address"], m["merge_fields"].get("FNAME")) for m in held] == [(someone, "Not-their-name")]
    found_second = serious_violations(page)
    shot(page, "preview-updates")
    assert (found, found_second) == ([], [])

    french = new_context(locale="fr-FR").new_page()
    sign_in(french, stack, ADMIN, then=f"/api/console/#/destinations/{destination['id']}?run={second_id}")
    expect(french.locator("#run-live .badge")).to_have_text(FR["status.previewed"])
    expect(french.locator("#preview-note")).to_have_text(FR["run.previewNote"])
    expect(french.locator("#preview-export")).to_have_text(FR["destination.preview"])


def test_a_run_whose_members_failed_offers_a_retry_and_the_page_follows_it(stack, new_context, shot):
    audience = new_audience(stack, "Failing")
    destination = create(stack, displayName="Retry me", segments=["LapsedBuyers"], audienceId=audience, exportOnArrival=False)
    # the local Mailchimp answers 500 to every batch write to this audience: each chunk gives up, its members failed
    # Two runs fail so: only the newer is offered a retry (the API refuses one of a run a newer real run followed).
    stack.mailchimp.admin("POST", "faults", json={"rates": {"500": 1.0}, "path": f"/lists/{audience}$", "method": "POST", "seed": 1})
    try:
        runs = []
        for _ in range(2):
            started = api(stack, "POST", f"destinations/{destination['id']}/exports")
            assert started.status_code == 202, started.text
            runs.append(wait_for_run(stack.host, started.json()["id"], timeout=240))
    finally:
        stack.mailchimp.admin("POST", "faults", json={})
    older, failed = runs
    assert older["counts"]["failed"] > 0 and failed["counts"]["failed"] > 0 and not failed["retriedBy"], runs
    # a preview newer than both: a preview is no real run, so the newer failed run stays the one to retry
    previewed = api(stack, "POST", f"destinations/{destination['id']}/exports", json={"dryRun": True})
    assert previewed.status_code == 202, previewed.text
    assert wait_for_preview(stack, previewed.json()["id"])["status"] == "previewed"

    page = new_context().new_page()
    sign_in(page, stack, ADMIN, then=f"/api/console/#/destinations/{destination['id']}?run={older['id']}")
    expect(page.locator("#run-summary")).to_be_visible()
    expect(page.locator("#runs-table tbody tr")).to_have_count(3)
    # its report is longer than the page's 100 rows: "More" loads the rest, then the focus stays in the report
    report = report_lines(stack, older["id"])
    assert len(report) > 100, len(report)
    expect(page.locator("#report-table tbody tr")).to_have_count(100)
    page.click("#report-more")
    expect(page.locator("#report-table tbody tr")).to_have_count(len(report))
    expect(page.locator("#report-more")).to_have_count(0)
    expect(page.locator("#report-filter")).to_be_focused()
    expect(page.locator("#retry-failed")).to_have_count(0)  # failed members, but a newer real run
    page.locator(f"#run-row-{previewed.json()['id']} a").click()
    expect(page.locator("#preview-note")).to_be_visible()
    expect(page.locator("#retry-failed")).to_have_count(0)
    page.locator(f"#run-row-{failed['id']} a").click()
    stale = new_context().new_page()  # a second window on the same run, to see the API's refusal once it is retried
    sign_in(stale, stack, ADMIN, then=f"/api/console/#/destinations/{destination['id']}?run={failed['id']}")
    retry = page.locator("#retry-failed")
    expect(retry).to_have_text(EN["run.retryFailed"].replace("{n}", f"{failed['counts']['failed']:,}"))
    expect(page.locator("#cancel-export")).to_be_hidden()
    assert serious_violations(page) == []
    shot(page, "failed-run")
    retry.click()
    expect(page.locator("#retry-started")).to_have_text(EN["run.retryStarted"])
    expect(page).to_have_url(re.compile(r"\?run=(?!" + re.escape(failed["id"]) + r"$)"))
    retry_id = re.search(r"\?run=(.+)$", page.url)[1]
    expect(page.locator("#run-retry-of")).to_contain_text(EN["run.retryOf"].split("{run}")[0])
    expect(page.locator("#run-live")).to_contain_text(EN["trigger.retry"])
    expect(page.locator("#run-summary")).to_be_visible(timeout=90_000)
    retried = api(stack, "GET", f"exports/{retry_id}").json()
    assert retried["retryOf"] == failed["id"] and retried["trigger"] == "retry", retried
    assert retried["counts"]["failed"] == 0 and retried["counts"]["created"] == failed["counts"]["failed"], retried
    expect(page.locator(f"#run-row-{retry_id}")).to_contain_text(EN["status.succeeded"])
    expect(page.locator("#retry-failed")).to_have_count(0)
    assert len(members(stack, audience)) == failed["counts"]["failed"]
    shot(page, "retry-finished")

    page.locator("#run-retry-of a").click()  # back to the first run: retried, so no button, and a link to the retry
    expect(page.locator("#run-retried-by")).to_be_visible()
    expect(page.locator("#retry-failed")).to_have_count(0)
    assert api(stack, "GET", f"exports/{failed['id']}").json()["retriedBy"] == retry_id

    stale.click("#retry-failed")  # the API says 409 (retried already): shown where the page shows problems
    expect(stale.locator("#retry-refused")).to_contain_text(EN["run.retryRefused"].split("{error}")[0])
    expect(stale.locator("#retry-refused")).to_have_attribute("role", "alert")
    shot(stale, "retry-refused")


def test_an_admin_erases_an_address_after_confirming_and_sees_it_done(stack, new_context, shot):
    audience = new_audience(stack, "Erased from")
    destination = create(stack, displayName="Erase from me", segments=["LapsedBuyers"], audienceId=audience, exportOnArrival=False)
    started = api(stack, "POST", f"destinations/{destination['id']}/exports")
    run = wait_for_run(stack.host, started.json()["id"], timeout=90)
    assert run["counts"]["created"] > 0, run
    person = members(stack, audience)[0]["email_address"]

    page = new_context().new_page()
    sign_in(page, stack, ADMIN)
    expect(page.locator("#nav-erasures")).to_have_text(EN["nav.erasures"])
    page.click("#nav-erasures")
    expect(page).to_have_url(re.compile(r"#/erasures$"))
    expect(page.locator("#erasures-title")).to_have_text(EN["erasures.title"])
    expect(page.locator("#nav-erasures")).to_have_attribute("aria-current", "page")
    expect(page.locator("#erasures-empty, #erasures-table")).to_be_visible()
    found = {"form": serious_violations(page)}
    page.click("#erasure-review")  # nothing typed: said at the field
    expect(page.locator("#erasure-emails-error")).to_have_text(EN["erasures.required"])
    expect(page.locator("#erasure-emails")).to_be_focused()
    found["form-error"] = serious_violations(page)

    page.fill("#erasure-emails", f"\n  {person.upper()}  \n\n")
    page.click("#erasure-review")
    dialog = page.locator("#erasure-dialog")
    expect(dialog).to_be_visible()
    expect(dialog.locator("#erasure-dialog-text")).to_have_text(EN["erasures.confirmText"].replace("{n}", "1"))
    assert "permanently deletes these" in EN["erasures.confirmText"] and "every audience of every destination" in EN["erasures.confirmText"]
    expect(dialog).to_contain_text(EN["erasures.cannotUndo"])
    expect(page.locator("#cancel-erasure")).to_be_focused()  # the safe choice first
    found["dialog"] = serious_violations(page)
    shot(page, "erasure-confirm")
    page.click("#cancel-erasure")  # going back sends nothing and keeps what was typed
    expect(dialog).to_be_hidden()
    assert api(stack, "GET", "erasures").json()["erasures"] == []
    expect(page.locator("#erasure-emails")).not_to_have_value("")

    page.click("#erasure-review")
    page.click("#confirm-erasure")
    expect(page.locator("#erasure-requested")).to_have_text(EN["erasures.requested"].replace("{n}", "1"))
    expect(page.locator("#erasure-emails")).to_have_value("")  # sent: not kept in the page
    rows = page.locator("#erasures-table tbody tr")
    expect(rows).to_have_count(1)
    expect(rows.first.locator(".badge")).to_have_text(EN["status.done"], timeout=90_000)
    erasure = api(stack, "GET", "erasures").json()["erasures"][0]
    assert erasure["status"] == "done" and erasure["addresses"] == 1, erasure
    outcome = rows.first.locator(f"li[data-audience='{audience}']")
    expect(outcome).to_contain_text(f"{EN['erasures.deleted']}: 1")
    expect(outcome).to_contain_text(f"{EN['erasures.pending']}: 0")
    me = page.evaluate("async () => (await fetch('/api/me')).json()")
    # who asked: the admin's object id, shown as "you" to that admin (a request recorded by name shows the name)
    expect(rows.first.locator(".requested-by")).to_have_text(
        EN["erasures.byYou"] if erasure["requestedBy"] == me["id"] else erasure["requestedBy"])
    assert person not in {m["email_address"] for m in members(stack, audience)}
    assert person.lower() not in page.url.lower()
    assert person.lower() not in page.locator("body").inner_text().lower()
    found["list"] = serious_violations(page)
    shot(page, "erasure-done")
    assert {name: v for name, v in found.items() if v} == {}


def test_an_operator_has_no_erasure_nav_entry_and_the_view_is_for_admins(stack, new_context, shot):
    page = new_context().new_page()
    sign_in(page, stack, OPERATOR)
    expect(page.locator("#destinations-title")).to_be_visible()
    expect(page.locator("#nav-erasures")).to_have_count(0)
    expect(page.locator("#app-nav")).to_have_count(0)
    page.goto(f"{stack.page_url}#/erasures")
    expect(page.locator("h1")).to_have_text(EN["adminOnly.title"])
    expect(page.locator("#erasure-form")).to_have_count(0)
    shot(page, "operator-erasures")


def test_the_re_add_erased_setting_is_a_checkbox_off_by_default_saved_with_the_configuration(stack, new_context, shot):
    destination = create(stack, displayName="Re-add setting", segments=["LapsedBuyers"], exportOnArrival=False)
    assert destination["reAddErased"] is False
    page = new_context().new_page()
    sign_in(page, stack, ADMIN, then=f"/api/console/#/destinations/{destination['id']}/configure")
    expect(page.locator("#configure-form")).to_be_visible()
    page.click("#advanced summary")
    box = page.locator("#re-add-erased")
    expect(box).not_to_be_checked()
    expect(page.locator("label[for=re-add-erased]")).to_have_text(EN["configure.reAddErased"])
    box.check()
    assert serious_violations(page) == []
    shot(page, "re-add-erased")
    page.click("#save-config")
    expect(page).to_have_url(re.compile(rf"#/destinations/{destination['id']}$"))
    assert api(stack, "GET", f"destinations/{destination['id']}").json()["reAddErased"] is True
    page.goto(f"{stack.page_url}#/destinations/{destination['id']}/configure")
    expect(page.locator("#advanced")).to_have_attribute("open", "")
    expect(page.locator("#re-add-erased")).to_be_checked()


def test_a_cancelled_run_still_cancelling_holds_nothing_and_a_preview_never_takes_the_cancel_button(stack, new_context, shot):
    destination, _, page = open_new_destination(stack, new_context, "Cancel then export", "HighValueCustomers")
    # Every Mailchimp call takes 1.5 s: the real run stays running (planning reads the audience first) for seconds.
    stack.mailchimp.admin("POST", "latency", json={"profile": "none", "base_ms": 1500})
    try:
        real_id = export_now(page)
        expect(page.locator("#run-live .badge")).to_have_text(EN["status.running"], timeout=15_000)
        expect(page.locator("#export-now")).to_be_disabled()
        expect(page.locator("#preview-export")).to_be_disabled()

        # a preview started meanwhile (through the API: the page holds Preview while a real run runs) is newer than
        # the real run; shown first in the list and chosen, it does not take the Cancel button
        started = api(stack, "POST", f"destinations/{destination['id']}/exports", json={"dryRun": True})
        assert started.status_code == 202, started.text
        preview_id = started.json()["id"]
        page.reload()
        expect(page.locator("#runs-table tbody tr").first).to_have_attribute("id", f"run-row-{preview_id}")
        expect(page.locator("#run-title")).to_contain_text("Preview of")
        expect(page.locator("#cancel-export")).to_be_visible()
        expect(page.locator("#export-now")).to_be_disabled()
        found = {"preview-and-run": serious_violations(page)}
        shot(page, "preview-while-running")
        page.click("#cancel-export")
        expect(page.locator("#export-cancelling")).to_have_text(EN["destination.cancelling"])
        assert api(stack, "GET", f"exports/{real_id}").json()["status"] in ("cancelling", "cancelled")
        assert api(stack, "GET", f"exports/{preview_id}").json()["status"] not in ("cancelling", "cancelled")

        # at once: Export now and Preview are back while the cancelled run is still being counted
        expect(page.locator("#export-now")).to_be_enabled()
        expect(page.locator("#preview-export")).to_be_enabled()
        expect(page.locator("#cancel-export")).to_be_hidden()
        # its row says Cancelling, or Cancelled once the page's 2-s poll saw it counted (which may happen between an
        # answer of the API and a look at the page): the page is read first, then the API, which it may not be ahead of
        badge = page.locator(f"#run-row-{real_id} .badge")
        expect(badge).to_have_text(re.compile(f"^({re.escape(EN['status.cancelling'])}|{re.escape(EN['status.cancelled'])})$"))
        shown = badge.inner_text()
        status = api(stack, "GET", f"exports/{real_id}").json()["status"]
        assert (shown, status) in ((EN["status.cancelling"], "cancelling"), (EN["status.cancelling"], "cancelled"),
                                   (EN["status.cancelled"], "cancelled")), (shown, status)
        found["cancelling"] = serious_violations(page)
        shot(page, "cancelling-export-enabled")

        page.click("#export-now")  # accepted: it plans after the cancelled run is counted
        expect(page.locator("#export-started")).to_be_visible(timeout=20_000)
        first = page.locator("#runs-table tbody tr").first  # the list is drawn again after the notice shows: wait for it
        expect(first).not_to_have_attribute("id", f"run-row-{preview_id}", timeout=15_000)
        newer_id = first.get_attribute("id").removeprefix("run-row-")
        assert newer_id not in (real_id, preview_id)
        expect(page.locator("#export-now")).to_be_disabled()
        expect(page.locator("#cancel-export")).to_be_visible()
        page.click("#cancel-export")  # the newest real run is the one cancelled
        expect(page.locator("#export-cancelling")).to_be_visible()
        assert api(stack, "GET", f"exports/{newer_id}").json()["status"] in ("cancelling", "cancelled")
    finally:
        stack.mailchimp.admin("POST", "latency", json={"profile": "none"})
    for run_id in (real_id, newer_id):
        assert wait_for_run(stack.host, run_id, timeout=60)["status"] == "cancelled"
    assert wait_for_preview(stack, preview_id)["status"] == "previewed"
    assert found == {"preview-and-run": [], "cancelling": []}


def test_a_poll_answered_after_a_cancel_does_not_bring_the_run_back_as_running(stack, new_context):
    """The page's 2-s poll of the chosen run may be waiting for its answer when Cancel is clicked. That answer (still
    `running`) arrives after the page has drawn the run as cancelling: it must be dropped, not drawn over the newer
    state, which would show the run running again and offer Cancel for a run already cancelled."""
    destination, _, page = open_new_destination(stack, new_context, "Late poll", "HighValueCustomers")
    stack.mailchimp.admin("POST", "latency", json={"profile": "none", "base_ms": 1500})  # the run stays running
    try:
        run_id = export_now(page)
        expect(page.locator("#run-live .badge")).to_have_text(EN["status.running"], timeout=15_000)
        route, late = hold_the_next_answer(page, re.compile(rf"/api/exports/{run_id}$"))()  # the next poll's
        assert json.loads(late.text())["status"] == "running"
        page.click("#cancel-export")
        expect(page.locator("#export-cancelling")).to_have_text(EN["destination.cancelling"])
        expect(page.locator("#cancel-export")).to_be_hidden()
        hand_over_late(page, route, late)
        assert page.locator("#cancel-export").is_hidden(), "a late poll answer offered Cancel again"
        assert page.locator("#run-live .badge").inner_text() != EN["status.running"], "a late poll answer drew the run running"
        page.unroute(re.compile(rf"/api/exports/{run_id}$"))
    finally:
        stack.mailchimp.admin("POST", "latency", json={"profile": "none"})
    assert wait_for_run(stack.host, run_id, timeout=60)["status"] == "cancelled"


def test_erasure_requests_say_who_asked_and_which_audiences_must_be_erased_by_hand(stack, new_context, shot):
    """The list as the API gives it (answered by the page's route, no erasure run): a request of this admin, one of
    another admin, one from a dropped file, and one ended with errors on an audience no destination reaches."""
    page = new_context().new_page()
    sign_in(page, stack, ADMIN)
    expect(page.locator("#destinations-title")).to_be_visible()
    me = page.evaluate("async () => (await fetch('/api/me')).json()")
    other = "5f0c2b9e-1d3a-4e6f-9a8b-7c6d5e4f3a2b"
    unreachable = {"audienceId": "gone-audience", "destinationIds": ["deleted-destination"], "deleted": 0,
                   "alreadyGone": 0, "refused": 0, "pending": 0, "unreachable": 2}
    reached = {"audienceId": "kept-audience", "destinationIds": ["kept"], "deleted": 2, "alreadyGone": 0, "refused": 0,
               "pending": 0}
    erasures = [
        {"id": "e-mine", "status": "completed_with_errors", "createdAt": "2024-05-04T10:00:00Z", "requestedBy": me["id"],
         "source": "http", "addresses": 2, "message": None, "audiences": [reached, unreachable]},
        {"id": "e-other", "status": "done", "createdAt": "2024-05-03T10:00:00Z", "requestedBy": other, "source": "http",
         "addresses": 1, "message": None, "audiences": []},
        {"id": "e-file", "status": "done", "createdAt": "2024-05-02T10:00:00Z", "requestedBy": "storage:erase-2024-05-02.txt",
         "source": "storage", "addresses": 3, "message": None, "audiences": []},
    ]

    def answer(route):
        path = route.request.url.split("/api/", 1)[1].split("?")[0]
        if path == "erasures":
            listed = [{k: v for k, v in e.items() if k != "audiences"} for e in erasures]
            route.fulfill(json={"erasures": listed})
        else:
            route.fulfill(json=next(e for e in erasures if path == f"erasures/{e['id']}"))

    page.route(re.compile(r"/api/erasures(/[^/?]+)?(\?.*)?$"), answer)
    page.click("#nav-erasures")
    rows = page.locator("#erasures-table tbody tr")
    expect(rows).to_have_count(3)
    expect(page.locator("#erasure-row-e-mine .requested-by")).to_have_text(EN["erasures.byYou"])
    expect(page.locator("#erasure-row-e-other .requested-by")).to_have_text(EN["erasures.byAdmin"].replace("{id}", other[:8]))
    expect(page.locator("#erasure-row-e-file .requested-by")).to_have_text(
        EN["erasures.byPlatform"].replace("{file}", "erase-2024-05-02.txt"))
    expect(page.locator("#erasure-row-e-mine .badge")).to_have_text(EN["status.completed_with_errors"])
    gone = page.locator("#erasure-row-e-mine li[data-audience='gone-audience']")
    expect(gone).to_contain_text(f"{EN['erasures.unreachable']}: 2")
    expect(gone.locator(".erasure-unreachable")).to_have_text(EN["erasures.unreachableHint"].replace("{audience}", "gone-audience"))
    kept = page.locator("#erasure-row-e-mine li[data-audience='kept-audience']")
    expect(kept).not_to_contain_text(EN["erasures.unreachable"])
    expect(kept.locator(".erasure-unreachable")).to_have_count(0)
    found = serious_violations(page)
    shot(page, "erasures-who-and-unreachable")
    assert found == []

    french = new_context(locale="fr-FR").new_page()
    sign_in(french, stack, ADMIN)
    expect(french.locator("#destinations-title")).to_be_visible()
    erasures[0]["requestedBy"] = french.evaluate("async () => (await fetch('/api/me')).json()")["id"]
    french.route(re.compile(r"/api/erasures(/[^/?]+)?(\?.*)?$"), answer)
    french.click("#nav-erasures")
    expect(french.locator("#erasure-row-e-mine .requested-by")).to_have_text(FR["erasures.byYou"])
    expect(french.locator("#erasure-row-e-mine li[data-audience='gone-audience']")).to_contain_text(f"{FR['erasures.unreachable']}")


def test_a_late_answer_to_an_older_list_request_does_not_hide_a_request_just_sent(stack, new_context):
    """The erasures view asks for the list when it opens and again once a request is sent. If the first answer comes
    last, it must be dropped: drawn, it would take the request just sent off the list (and keep a second poll going)."""
    page = new_context().new_page()
    sign_in(page, stack, ADMIN)
    first_list = hold_the_next_answer(page, re.compile(r"/api/erasures$"))  # as it was when the view opened
    page.click("#nav-erasures")
    expect(page.locator("#erasures-title")).to_have_text(EN["erasures.title"])
    route, late = first_list()
    page.fill("#erasure-emails", "nobody.here@fabrikam.example")
    page.click("#erasure-review")
    page.click("#confirm-erasure")
    expect(page.locator("#erasure-requested")).to_have_text(EN["erasures.requested"].replace("{n}", "1"))
    newest = api(stack, "GET", "erasures").json()["erasures"][0]["id"]
    assert newest not in late.text()
    row = page.locator(f"#erasure-row-{newest}")
    expect(row).to_be_visible()
    hand_over_late(page, route, late)
    assert row.is_visible(), "a late answer to the first list request took the request just sent off the list"
    page.unroute(re.compile(r"/api/erasures$"))


def test_a_report_answered_after_the_run_was_chosen_again_lists_each_row_once(stack, new_context):
    """Choosing the run shown again loads its per-row report afresh. If the earlier load's answer comes last, it must be
    dropped: added to the newer load's lines, every row of the report would be listed twice at the next redraw."""
    _, _, page = open_new_destination(stack, new_context, "Late report", "HighValueCustomers")
    run_id = export_now(page)
    assert wait_for_run(stack.host, run_id, timeout=90)["status"] in ("succeeded", "completed_with_errors")
    lines = report_lines(stack, run_id, limit=100)
    assert lines, "the sample segment has invalid rows: the report must have some for this test"
    rows = page.locator("#report-table tbody tr")
    expect(rows).to_have_count(len(lines), timeout=20_000)

    pattern = re.compile(rf"/api/exports/{run_id}/errors\?")
    first_load = hold_the_next_answer(page, pattern)
    link = page.locator(f"#run-row-{run_id} th a")
    link.click()  # a fresh load of the report, its answer held back
    route, late = first_load()
    link.click()  # and another, answered at once
    expect(rows).to_have_count(len(lines))
    hand_over_late(page, route, late)
    page.select_option("#report-filter", "validation")  # a redraw from the lines the page holds
    page.select_option("#report-filter", "")
    expect(page.locator("#report-count")).to_have_text(
        EN["report.count"].format(shown=len(lines), loaded=len(lines)))
    expect(rows).to_have_count(len(lines))
    page.unroute(pattern)
