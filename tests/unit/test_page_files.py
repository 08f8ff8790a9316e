"""Serving the admin page's files: only what web/ holds, with its type, the strict policy and revalidation; paths
shaped like a traversal refused; Mailchimp's OAuth redirect answered with a page for a browser."""
from __future__ import annotations

import os
import re

import azure.functions as func
import pytest

from blueprints import page
from blueprints.page import CSP, load_files, serve

SECURITY = {"Content-Security-Policy": CSP, "X-Content-Type-Options": "nosniff", "Referrer-Policy": "same-origin",
            "X-Frame-Options": "DENY"}


@pytest.fixture
def web(tmp_path):
    root = tmp_path / "web"
    (root / "js" / "views").mkdir(parents=True)
    (root / "i18n").mkdir()
    (root / "index.html").write_text("<!doctype html><title>x</title>")
    (root / "js" / "app.js").write_text("export const a = 1;\n")
    (root / "js" / "views" / "list.js").write_text("export const b = 2;\n")
    (root / "i18n" / "en.json").write_text("{}")
    (root / "app.css").write_text("body{}")
    (root / "logo.svg").write_text("<svg/>")
    (root / ".hidden.js").write_text("secret")
    (root / "notes.md").write_text("not served: unknown type")
    (root / "server.py").write_text("not served")
    (tmp_path / "outside.js").write_text("outside")
    os.symlink(tmp_path / "outside.js", root / "js" / "link.js")
    os.symlink(tmp_path, root / "js" / "dir")
    return load_files(root)


def test_only_regular_files_of_known_types_are_served(web):
    assert sorted(web) == ["app.css", "i18n/en.json", "index.html", "js/app.js", "js/views/list.js", "logo.svg"]


@pytest.mark.parametrize("path, content_type", [
    ("", "text/html; charset=utf-8"), ("index.html", "text/html; charset=utf-8"),
    ("js/app.js", "text/javascript; charset=utf-8"), ("js/views/list.js", "text/javascript; charset=utf-8"),
    ("app.css", "text/css; charset=utf-8"), ("i18n/en.json", "application/json; charset=utf-8"),
    ("logo.svg", "image/svg+xml"),
])
def test_each_file_comes_with_its_type_the_policy_and_an_etag(web, path, content_type):
    answer = serve(path, table=web)
    assert answer.status_code == 200 and answer.headers["Content-Type"] == content_type
    assert {k: answer.headers[k] for k in SECURITY} == SECURITY
    assert answer.headers["Cache-Control"] == "no-cache" and re.fullmatch(r'"[0-9a-f]{32}"', answer.headers["ETag"])
    again = serve(path, if_none_match=f'W/"nope", {answer.headers["ETag"]}', table=web)
    assert again.status_code == 304 and again.get_body() == b"" and again.headers["ETag"] == answer.headers["ETag"]
    assert serve(path, if_none_match='"other"', table=web).status_code == 200


@pytest.mark.parametrize("path", [
    "..", "../outside.js", "js/../../outside.js", "js/..", "./index.html", "js/./app.js", "..\\outside.js",
    "js\\app.js", "/etc/passwd", "js//app.js", "index.html\x00.js", "js/app.js\n", "a" * 201,
])
def test_paths_shaped_like_a_traversal_are_refused(web, path):
    answer = serve(path, table=web)
    assert answer.status_code == 400 and b"refused" in answer.get_body()
    assert answer.headers["Content-Security-Policy"] == CSP and answer.headers["Cache-Control"] == "no-store"


@pytest.mark.parametrize("path", ["js/link.js", "js/dir/outside.js", ".hidden.js", "notes.md", "server.py", "js",
                                  "js/", "INDEX.HTML", "missing.js", "%2e%2e/outside.js"])
def test_anything_else_is_not_found(web, path):
    answer = serve(path, table=web)
    assert answer.status_code in (400, 404) and b"outside" not in answer.get_body()
    assert answer.headers["X-Content-Type-Options"] == "nosniff"


def callback(accept: str) -> func.HttpRequest:
    return func.HttpRequest("GET", "http://localhost/api/mailchimp/oauth/callback?state=x&code=y",
                            headers={"accept": accept}, params={"state": "x", "code": "y"}, body=b"")


def test_a_browser_is_sent_back_to_the_wizard_and_a_failure_is_a_page_without_script():
    assert page.wants_html(callback("text/html,application/xhtml+xml,*/*;q=0.8"))
    assert not page.wants_html(callback("application/json")) and not page.wants_html(callback("*/*"))
    back = page.connected_redirect("ab12cd")
    assert back.status_code == 303
    assert back.headers["Location"] == "/api/console/#/destinations/ab12cd/connect?connected=1"
    failed = page.oauth_problem_page(400, 'the state has expired <script>alert("x")</script>')
    text = failed.get_body().decode()
    assert failed.status_code == 400 and failed.headers["Content-Security-Policy"] == CSP
    assert "<script" not in text and "&lt;script&gt;" in text and "style=" not in text and "<style" not in text
    assert 'href="/api/console/#/destinations"' in text
