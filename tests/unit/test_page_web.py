"""The admin page's own files (web/): what the strict Content Security Policy allows (no inline script or style, nothing
from another origin), strings in English and French with the same keys, every key the page uses present, every module
it imports there, and the deployment package keeping web/."""
from __future__ import annotations

import fnmatch
import json
import re
import shutil
import subprocess
from html.parser import HTMLParser
from pathlib import Path

import pytest

from blueprints.page import CONTENT_TYPES, CSP, PAGE_PATH, WEB_ROOT, load_files, serve

ROOT = WEB_ROOT.parent
SCRIPTS = sorted(WEB_ROOT.rglob("*.js"))
STRINGS = {lang: json.loads((WEB_ROOT / "i18n" / f"{lang}.json").read_text(encoding="utf-8")) for lang in ("en", "fr")}


class Tags(HTMLParser):
    """Every start tag with its attributes, and the text inside <script> and <style> elements."""

    def __init__(self) -> None:
        super().__init__()
        self.tags: list[tuple[str, dict[str, str | None]]] = []
        self.inline: list[str] = []
        self._inside: str | None = None

    def handle_starttag(self, tag, attrs):
        self.tags.append((tag, dict(attrs)))
        if tag in ("script", "style"):
            self._inside = tag

    def handle_endtag(self, tag):
        if tag == self._inside:
            self._inside = None

    def handle_data(self, data):
        if self._inside and data.strip():
            self.inline.append(f"<{self._inside}>{data.strip()[:40]}")


def parse(html: str) -> Tags:
    tags = Tags()
    tags.feed(html)
    return tags


def test_every_file_of_web_is_served_and_nothing_is_left_out():
    on_disk = {p.relative_to(WEB_ROOT).as_posix() for p in WEB_ROOT.rglob("*") if p.is_file()}
    assert set(load_files()) == on_disk, "a file of web/ has a type the page does not serve"
    assert {"index.html", "js/app.js", "css/app.css", "i18n/en.json", "i18n/fr.json"} <= on_disk


def test_the_shell_has_no_inline_script_style_or_handler_and_loads_only_its_own_files():
    answer = serve("")
    assert answer.status_code == 200 and answer.headers["Content-Security-Policy"] == CSP
    html = parse(answer.get_body().decode("utf-8"))
    assert html.inline == []
    for tag, attrs in html.tags:
        assert "style" not in attrs, tag
        assert not [name for name in attrs if name.startswith("on")], (tag, attrs)
        for name in ("src", "href"):
            value = attrs.get(name)
            if value is None or value.startswith("#") or (tag == "a" and not value.startswith(("http", "//"))):
                continue
            assert value.startswith(PAGE_PATH), (tag, value)  # the page's own files, nothing from elsewhere
            assert value[len(PAGE_PATH):] in load_files(), value
    scripts = [attrs for tag, attrs in html.tags if tag == "script"]
    assert scripts == [{"type": "module", "src": f"{PAGE_PATH}js/app.js"}]
    assert ("html", {"lang": "en"}) in html.tags


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda p: p.relative_to(WEB_ROOT).as_posix())
def test_scripts_build_the_page_with_the_dom_and_call_only_this_origin(script: Path):
    text = re.sub(r"^\s*//.*$", "", script.read_text(encoding="utf-8"), flags=re.M)  # code, not comments
    for forbidden in ("innerHTML", "outerHTML", "insertAdjacentHTML", "document.write", "eval(", "new Function",
                      "setTimeout('", 'setTimeout("', ".style.", "'style'", '"style"', "cssText", "localStorage"):
        assert forbidden not in text, forbidden
    assert not re.search(r"https?://", text), "no request leaves the page's origin"
    for module in re.findall(r"from\s+'([^']+)'", text):
        assert module.startswith("./") or module.startswith("../"), module
        assert (script.parent / module).resolve().is_file(), f"{script.name} imports {module}, which does not exist"


def test_every_fetch_sends_the_page_header_and_same_origin_credentials():
    api = (WEB_ROOT / "js" / "api.js").read_text(encoding="utf-8")
    assert "'X-Requested-With': 'XMLHttpRequest'" in api and "credentials: 'same-origin'" in api
    calls = {script.name: len(re.findall(r"\bfetch\(", script.read_text(encoding="utf-8"))) for script in SCRIPTS}
    assert {name: n for name, n in calls.items() if n} == {"api.js": 1, "i18n.js": 1}
    assert "credentials: 'same-origin'" in (WEB_ROOT / "js" / "i18n.js").read_text(encoding="utf-8")


def test_the_style_sheet_loads_nothing_from_elsewhere():
    for sheet in WEB_ROOT.rglob("*.css"):
        text = sheet.read_text(encoding="utf-8")
        assert "@import" not in text and not re.search(r"url\(\s*['\"]?(https?:)?//", text), sheet


def test_english_and_french_have_the_same_keys_and_placeholders():
    en, fr = STRINGS["en"], STRINGS["fr"]
    assert sorted(en) == sorted(fr)
    for key in en:
        assert set(re.findall(r"\{(\w+)\}", en[key])) == set(re.findall(r"\{(\w+)\}", fr[key])), key
        assert en[key].strip() and fr[key].strip(), key


def used_keys() -> set[str]:
    """Keys the page uses: t('...') calls, string literals of a key's namespace (maps of statuses), data-i18n."""
    namespaces = {key.split(".")[0] for key in STRINGS["en"]}
    used: set[str] = set()
    for script in SCRIPTS:
        text = re.sub(r"^\s*//.*$", "", script.read_text(encoding="utf-8"), flags=re.M)
        used |= set(re.findall(r"(?<![\w.$])t\(\s*'([^']+)'", text))
        used |= {literal for literal in re.findall(r"'([a-z][a-zA-Z]*(?:\.[a-zA-Z0-9_]+)+)'", text)
                 if literal.split(".")[0] in namespaces}
    used |= set(re.findall(r'data-i18n(?:-aria-label)?="([^"]+)"', (WEB_ROOT / "index.html").read_text(encoding="utf-8")))
    return used


def test_every_key_the_page_uses_exists_and_every_key_is_used():
    used = used_keys()
    assert len(used) > 200
    assert sorted(used - set(STRINGS["en"])) == []
    assert sorted(set(STRINGS["en"]) - used) == []
    # t() is given a literal key, a choice between literal keys, or an entry of a map of literal keys (which the
    # namespace scan above sees), never a key built from pieces
    allowed = re.compile(r"(STATUS_KEYS|TRIGGER_KEYS|METHOD_KEYS|COUNT_KEYS|SOURCE_KEYS)\[|key$|el\.getAttribute\('data-i18n|"
                         r"\w+ \? '[\w.]+' : '[\w.]+'$")
    for script in SCRIPTS:
        for argument in re.findall(r"(?<![\w.$])t\(\s*([^'\s)][^,)]*)", script.read_text(encoding="utf-8")):
            assert allowed.match(argument.strip()), (script.name, argument)


def test_the_wizard_steps_are_reachable_by_url_hash():
    app = (WEB_ROOT / "js" / "app.js").read_text(encoding="utf-8")
    for step in ("'destinations'", "'new'", "'connect'", "'configure'"):
        assert step in app
    for view, ids in {"connect.js": ("display-name", "consent-agree", "audience-id", "connect-audience",
                                     "authenticate-mailchimp", "api-key", "add-self", "export-user-email", "next-step"),
                      "configure.js": ("map-email", "add-attribute", "tag-prefix", "status-for-new", "save-config",
                                       "save-and-export", "profile-total"),
                      "destination.js": ("export-now", "cancel-export", "toggle-schedule", "toggle-arrival",
                                         "delete-destination", "confirm-delete", "run-progress", "report-filter",
                                         "download-csv"),
                      "destinations.js": ("add-destination", "destinations-table")}.items():
        text = (WEB_ROOT / "js" / "views" / view).read_text(encoding="utf-8")
        for element_id in ids:
            assert re.search(rf"id: '{element_id}'|id: `{element_id}`|id: '{element_id}'", text) or f"'{element_id}'" in text, (view, element_id)


@pytest.mark.skipif(shutil.which("node") is None, reason="Node.js is not installed (make install needs it for Azurite)")
def test_every_script_parses_as_an_es_module():
    for script in SCRIPTS:
        checked = subprocess.run(["node", "--experimental-default-type=module", "--check", str(script)],
                                 capture_output=True, text=True, timeout=60)
        assert checked.returncode == 0, f"{script}: {checked.stderr[-500:]}"


def test_the_deployment_package_keeps_web():
    patterns = [line.strip() for line in (ROOT / ".funcignore").read_text().splitlines()
                if line.strip() and not line.startswith("#")]

    def ignored(path: str) -> bool:
        parts = path.split("/")
        return any(fnmatch.fnmatch(path, p) or fnmatch.fnmatch(path, p.rstrip("/") + "/*")
                   or any(fnmatch.fnmatch(part, p.rstrip("/")) for part in parts) for p in patterns)

    assert ignored("tests/unit/x.py") and ignored("node_modules/a/b.js")  # the check itself works
    for name in load_files():
        assert not ignored(f"web/{name}"), name
    assert not ignored("blueprints/page.py")


def test_every_type_served_is_one_a_browser_will_not_sniff():
    assert all(value for value in CONTENT_TYPES.values())
    assert serve("js/app.js").headers["Content-Type"] == "text/javascript; charset=utf-8"
    assert serve("i18n/fr.json").headers["X-Content-Type-Options"] == "nosniff"
