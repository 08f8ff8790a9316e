"""The admin page in a real browser: Debian's Chromium driven by Playwright, against one stack for the module (a fresh
Azurite holding sample segments, the session's local Mailchimp, and the real function_app in the local host behind its
App Service Authentication, with Mailchimp OAuth pointed at the local Mailchimp, as tests/e2e/test_page_routes.py
sets it up).

Every browser context the tests open is watched: console messages that report a Content Security Policy violation,
uncaught page errors, and every request's address (nothing may leave 127.0.0.1). test_csp_* reads what was seen.
Screenshots go to tests/browser/artifacts/ (git-ignored), emptied when the module starts.
"""
from __future__ import annotations

import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator
from urllib.parse import quote, urlsplit

import pytest
from azure.storage.blob import BlobServiceClient

from shared.sample_segments import SampleStats, write_sample_export
from tests.services import FunctionsHost, LocalMailchimp, free_port, start_azurite, start_functions_host

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--no-first-run"]
ARTIFACTS = Path(__file__).resolve().parent / "artifacts"
# Sample segments (shared/sample_segments.py, Customer Insights' CDM layout). 4 % invalid emails, so a run's per-row
# report is never empty; 400 rows in chunks of 50 give the progress bar 8 steps.
ROWS = {"HighValueCustomers": 400, "LapsedBuyers": 150}
INVALID_RATE = 0.04
CHUNK_SIZE = 50
ADMIN = {"name": "Ada Admin", "email": "ada.admin@contoso.example", "roles": ["Exports.Admin"]}
NOBODY = {"name": "Nina Norole", "email": "nina.norole@contoso.example", "roles": []}


@dataclass
class Stack:
    host: FunctionsHost
    mailchimp: LocalMailchimp
    stats: dict[str, SampleStats]
    log: Path

    @property
    def origin(self) -> str:
        return self.host.origin

    @property
    def page_url(self) -> str:
        return f"{self.host.origin}/api/console/"


@dataclass
class Observed:
    """What the browser did across the module: CSP reports, page errors, requests to anywhere but 127.0.0.1."""
    csp: list[str] = field(default_factory=list)
    console_errors: list[str] = field(default_factory=list)
    page_errors: list[str] = field(default_factory=list)
    requests: int = 0
    elsewhere: list[str] = field(default_factory=list)


def chromium_missing() -> str | None:
    return None if CHROMIUM.exists() else f"{CHROMIUM} is missing: `make test` or `make chromium` (as root) or `sudo apt-get install chromium` adds it"


def require_chromium() -> None:
    """Called where a browser test module starts: without Chromium the module is skipped, saying why; under CI=1 (as
    .ci/run sets it) its tests fail instead (chromium_required), and the rest of the suite still runs."""
    reason = chromium_missing()
    if reason and os.environ.get("CI") != "1":
        print(f"\nbrowser tests skipped: {reason}")
        pytest.skip(reason, allow_module_level=True)


@pytest.fixture(scope="module", autouse=True)
def chromium_required() -> None:
    reason = chromium_missing()
    if reason:
        pytest.fail(f"browser tests (CI=1): {reason}", pytrace=False)


@pytest.fixture(scope="module")
def stack(mailchimp_server: LocalMailchimp, tmp_path_factory) -> Iterator[Stack]:
    folder = tmp_path_factory.mktemp("browser")
    mailchimp_server.reset()
    storage = start_azurite()
    host = None
    try:
        container = BlobServiceClient.from_connection_string(storage.connection_string).get_container_client("segments")
        container.create_container()
        stats = write_sample_export(lambda name, data: container.upload_blob(name, data, overwrite=True), ROWS,
                                    rows_per_partition=200, invalid_rate=INVALID_RATE)
        port = free_port()
        mc = mailchimp_server.url
        host = start_functions_host({
            "FUNCTIONS_WORKER_RUNTIME": "python", "AzureWebJobsStorage": storage.connection_string,
            "SEGMENTS_CONTAINER": "segments", "MAILCHIMP_API_BASE_URL": mailchimp_server.api_root,
            "MAILCHIMP_MAX_CONNECTIONS": "10", "EXPORT_SCHEDULE": "0 0 0 1 1 *",
            # 1 s of retries per Mailchimp call, as the e2e tests that make Mailchimp fail use: the retry test's chunks
            # give up after 5 deliveries of that (host.json's visibilityTimeout between them), 10 s sooner per run than with 3
            "LOCAL_SECRETS_DIR": str(folder / "secrets"), "MAILCHIMP_RETRY_SECONDS": "1",
            "EXPORT_CHUNK_SIZE": str(CHUNK_SIZE),
            "MAILCHIMP_OAUTH_CLIENT_ID": "demo-client", "MAILCHIMP_OAUTH_CLIENT_SECRET": "demo-client-secret",
            "MAILCHIMP_OAUTH_REDIRECT_URI": f"http://127.0.0.1:{port}/api/mailchimp/oauth/callback",
            "MAILCHIMP_OAUTH_AUTHORIZE_URL": f"{mc}/oauth2/authorize", "MAILCHIMP_OAUTH_TOKEN_URL": f"{mc}/oauth2/token",
            "MAILCHIMP_OAUTH_METADATA_URL": f"{mc}/oauth2/metadata",
        }, port=port, log=folder / "host.log", settings_path=folder / "host.settings.json")
        yield Stack(host, mailchimp_server, stats, folder / "host.log")
    finally:
        if host is not None:
            host.stop()
        storage.stop()
        mailchimp_server.reset()


@pytest.fixture(scope="module")
def observed() -> Observed:
    return Observed()


@pytest.fixture(scope="module")
def browser():
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        yield chromium
        chromium.close()


@pytest.fixture(scope="module")
def artifacts() -> Path:
    shutil.rmtree(ARTIFACTS, ignore_errors=True)
    ARTIFACTS.mkdir(parents=True)
    return ARTIFACTS


def _local(url: str) -> bool:
    parts = urlsplit(url)
    return parts.scheme in ("data", "blob", "about") or parts.hostname == "127.0.0.1"


@pytest.fixture
def new_context(browser, observed: Observed, stack: Stack) -> Iterator[Callable]:
    """Open a browser context (kwargs as browser.new_context), watched for CSP reports, page errors and requests
    leaving 127.0.0.1; every context is closed when the test ends."""
    contexts = []

    def open_context(**kwargs):
        context = browser.new_context(**{"viewport": {"width": 1280, "height": 900}, **kwargs})
        context.set_default_timeout(10_000)

        def on_console(message):
            text = message.text
            if "Content Security Policy" in text or "Content-Security-Policy" in text:
                observed.csp.append(f"{message.page.url if message.page else '?'}: {text}")
            elif message.type == "error":
                observed.console_errors.append(text)

        def on_request(request):
            observed.requests += 1
            if not _local(request.url):
                observed.elsewhere.append(request.url)

        context.on("console", on_console)
        context.on("weberror", lambda error: observed.page_errors.append(str(error.error)))
        context.on("request", on_request)
        contexts.append(context)
        return context

    yield open_context
    for context in contexts:
        context.close()


class Shots:
    """Numbered full-page screenshots of one test in the artifacts folder."""

    def __init__(self, folder: Path, test: str) -> None:
        self.folder, self.test, self.count = folder, test, 0

    def __call__(self, page, step: str) -> Path:
        self.count += 1
        path = self.folder / f"{self.test}-{self.count:02d}-{step}.png"
        tall = page.evaluate("document.documentElement.scrollHeight") > 3000  # a long report: what is in view
        page.screenshot(path=str(path), full_page=not tall)
        return path


@pytest.fixture
def shot(artifacts: Path, request) -> Shots:
    return Shots(artifacts, request.node.name.removeprefix("test_")[:40])


def sign_in(page, stack: Stack, who: dict, then: str = "/api/console/") -> None:
    """Through the local App Service sign-in form (/.auth/login/aad), as `who` (name, email, roles)."""
    page.goto(f"{stack.origin}/.auth/login/aad?post_login_redirect_uri={quote(then, safe='')}")
    fill_sign_in_form(page, who)


def fill_sign_in_form(page, who: dict) -> None:
    page.fill("#name", who["name"])
    page.fill("#email", who["email"])
    for role in who["roles"]:
        page.check(f"input[name=role][value='{role}']")
    page.click("button[type=submit]")
