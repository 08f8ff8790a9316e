"""The local stack (`make up/down/clean`, scripts/stack.py) in a temporary folder on free ports: owner-only files,
no bearer token in `ps`, `up` on a running stack starting only what is missing, and the local Mailchimp keeping its
audiences across down/up as Azurite keeps its data, until `clean` wipes both."""
from __future__ import annotations

import json
import os
import shutil
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests
from azure.core.exceptions import ResourceExistsError
from azure.storage.blob import BlobServiceClient

from mailchimp_local.persist import load
from mailchimp_local.world import Settings
from scripts import stack
from tests.services import ROOT, free_port, start_local_mailchimp, wait_until

DEMO_KEY = "0123456789abcdef0123456789abcdef-us6"
AUTH = ("any", DEMO_KEY)


@pytest.fixture
def layout(tmp_path: Path, monkeypatch) -> stack.Layout:
    mailchimp, functions = free_port(), free_port()
    layout = stack.Layout(local=tmp_path / ".local", settings=tmp_path / "local.settings.json",
                          azurite_ports=(free_port(), free_port(), free_port()), mailchimp_port=mailchimp,
                          functions_port=functions)
    settings = json.loads((ROOT / "local.settings.example.json").read_text())
    values = settings["Values"]
    for name in values:
        monkeypatch.delenv(name, raising=False)  # the test's own settings, not the developer's environment
    values.update({
        "AzureWebJobsStorage": layout.azurite_connection_string,
        "MAILCHIMP_API_BASE_URL": f"http://127.0.0.1:{mailchimp}/3.0",
        "LOCAL_SECRETS_DIR": str(layout.local / "secrets"),
        "EXPORT_SCHEDULE": "0 0 0 1 1 *",
        "MAILCHIMP_OAUTH_REDIRECT_URI": f"http://127.0.0.1:{functions}/api/mailchimp/oauth/callback",
    })
    for name in ("AUTHORIZE", "TOKEN", "METADATA"):
        values[f"MAILCHIMP_OAUTH_{name}_URL"] = f"http://127.0.0.1:{mailchimp}/oauth2/{name.lower()}"
    layout.settings.write_text(json.dumps(settings))
    yield layout
    stack.down(layout, quiet=True)


def private(path: Path) -> bool:
    return stat.S_IMODE(path.stat().st_mode) & 0o077 == 0


def new_audience(layout: stack.Layout, name: str) -> str:
    answer = requests.post(f"{layout.mailchimp_url}/__admin/audiences", json={"api_key": DEMO_KEY, "name": name}, timeout=10)
    answer.raise_for_status()
    audience = answer.json()["id"]
    member = requests.post(f"{layout.mailchimp_url}/__admin/members", timeout=10,
                           json={"list_id": audience, "email": "ann@contoso.com", "tags": ["Vip"]})
    member.raise_for_status()
    return audience


def audience_exists(layout: stack.Layout, audience: str) -> bool:
    return requests.get(f"{layout.mailchimp_url}/3.0/lists/{audience}", auth=AUTH, timeout=10).status_code == 200


def blobs(layout: stack.Layout) -> BlobServiceClient:
    return BlobServiceClient.from_connection_string(layout.azurite_connection_string)


def test_up_makes_every_file_owner_only_and_keeps_the_tokens_out_of_ps(layout):
    env = stack.up(layout)
    admin, operator = stack.headers_of(env["AUTH_HEADER"]), stack.headers_of(env["OPERATOR_AUTH_HEADER"])
    url = f"{env['FUNCTIONS_URL']}/destinations"
    assert requests.get(url, headers=admin, timeout=10).status_code == 200
    assert requests.get(url, headers=operator, timeout=10).status_code == 200
    assert requests.post(url, headers=operator, json={}, timeout=10).status_code == 403  # not an admin
    assert requests.get(url, timeout=10).status_code == 401
    me = requests.get(f"{env['FUNCTIONS_URL']}/me", headers=admin, timeout=10).json()
    assert me["roles"] == ["Exports.Admin"]
    assert stack.read_env(layout.env) == env  # as `source` reads it: quoted values keep their spaces
    sourced = subprocess.run(["bash", "-c", f'source "{layout.env}" && printf %s "$AUTH_HEADER"'], capture_output=True,
                             text=True, check=True).stdout
    assert sourced == env["AUTH_HEADER"]
    for path in (layout.env, layout.tokens, layout.pids, layout.functions_settings, *layout.logs.iterdir()):
        assert private(path), f"{path} is readable by others: {oct(path.stat().st_mode)}"
    for folder in (layout.local, layout.logs, layout.local / "azurite"):
        assert private(folder), f"{folder} is open to others: {oct(folder.stat().st_mode)}"
    listing = subprocess.run(["ps", "-eo", "args"], capture_output=True, text=True, check=True).stdout
    tokens = [header["Authorization"].removeprefix("Bearer ") for header in (admin, operator)]
    assert not any(token in listing for token in tokens)
    for pid in stack.running(layout).values():
        if Path(f"/proc/{pid}").exists():
            command_line = Path(f"/proc/{pid}/cmdline").read_text(errors="replace")
            assert not any(token in command_line for token in tokens)
    again = stack.up(layout)  # the same tokens on the next `up`: stack.env stays valid
    assert again["AUTH_HEADER"] == env["AUTH_HEADER"]
    stack.down(layout)
    assert layout.mailchimp_state.exists() and private(layout.mailchimp_state)


def test_up_on_a_running_stack_starts_only_what_is_not_running(layout, capsys):
    stack.up(layout)
    before = stack.running(layout)
    assert set(before) == {"azurite", "mailchimp", "functions"}
    audience = new_audience(layout, "Kept while running")
    stack.up(layout)
    assert stack.running(layout) == before  # nothing restarted
    assert audience_exists(layout, audience)

    capsys.readouterr()
    stack.down(layout, only={"mailchimp"})  # one service died
    assert capsys.readouterr().out == "stopped mailchimp; left running: azurite, functions\n"
    stack.up(layout)
    after = stack.running(layout)
    assert after["mailchimp"] != before["mailchimp"]
    assert (after["azurite"], after["functions"]) == (before["azurite"], before["functions"])
    assert audience_exists(layout, audience)  # the restarted local Mailchimp loaded its state
    capsys.readouterr()
    stack.demo(40, layout, keep=False)  # the demo on a stack up before it exports, then leaves it up, and says so
    shown = capsys.readouterr().out
    assert "tag 'HighValueCustomers': 40 members" in shown  # it exported
    assert shown.endswith("left running (up before the demo): azurite, mailchimp, functions\n")
    assert stack.running(layout) == after


def test_stop_does_not_wait_on_a_service_that_another_process_started_and_has_not_reaped():
    """A service that `make run` started and `make down` stopped stays a zombie while `make run` waits in the page:
    it has stopped, and `down` goes on at once instead of waiting out the stop's timeout."""
    if not Path("/proc/self/stat").exists() and shutil.which("ps") is None:
        pytest.skip("neither /proc nor ps here: a stop cannot tell a zombie from a running service, and waits")
    holder = subprocess.Popen([sys.executable, "-c", "import subprocess, time\n"
                               "service = subprocess.Popen(['sleep', '600'], start_new_session=True)\n"
                               "print(service.pid, flush=True)\ntime.sleep(600)"], stdout=subprocess.PIPE, text=True)
    try:
        service = int(holder.stdout.readline())
        started = time.monotonic()
        stack._stop(service, 20.0)
        assert time.monotonic() - started < 5
        if Path("/proc").is_dir():  # the case this is about: stopped, not reaped
            assert Path(f"/proc/{service}/stat").read_text().rpartition(")")[2].split()[0] == "Z"
    finally:
        holder.kill()
        holder.wait()


def waiting_demo(layout, log: Path) -> subprocess.Popen:
    """The demo (`make run`) in a process of its own, once its export is done and it waits in the page."""
    shape = json.dumps({"local": str(layout.local), "settings": str(layout.settings), "azurite_ports": layout.azurite_ports,
                        "mailchimp_port": layout.mailchimp_port, "functions_port": layout.functions_port})
    with open(log, "wb") as output:
        demo = subprocess.Popen([sys.executable, "-c", "import json, sys\nfrom pathlib import Path\nfrom scripts import stack\n"
                                 "shape = json.loads(sys.argv[1])\n"
                                 "stack.demo(40, stack.Layout(local=Path(shape['local']), settings=Path(shape['settings']), "
                                 "azurite_ports=tuple(shape['azurite_ports']), mailchimp_port=shape['mailchimp_port'], "
                                 "functions_port=shape['functions_port']))", shape],
                                cwd=ROOT, stdout=output, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        wait_until(lambda: "The stack keeps running" in log.read_text() or demo.poll() is not None, "the demo's export",
                   timeout=300)
        assert demo.poll() is None, log.read_text()
        assert set(stack.running(layout)) == set(stack.SERVICES)
    except BaseException:
        demo.terminate()
        demo.wait()
        raise
    return demo


def test_a_process_whose_name_is_cut_inside_a_character_neither_hides_a_group_nor_breaks_a_stop(tmp_path):
    """Linux cuts a command's name at 15 bytes, maybe inside a UTF-8 character: reading the process table as text
    raised out of `make down` (its later services never stopped) whenever any such process ran on the machine."""
    if not Path("/proc/self/stat").exists():
        pytest.skip("no Linux /proc here: the states come from ps")
    named = tmp_path / ("é" * 9)  # 18 bytes: the 15 kept end inside the eighth é
    shutil.copy(shutil.which("sleep") or "/bin/sleep", named)
    odd = subprocess.Popen([str(named), "60"], start_new_session=True)
    try:
        wait_until(lambda: stack._group_states(odd.pid) == ["S"], "the process asleep (it may still run just after exec)",
                   timeout=10)
        assert stack._group_alive(odd.pid)
        started = time.monotonic()
        stack._stop(odd.pid, 20.0)
        assert time.monotonic() - started < 5 and odd.poll() is not None
    finally:
        if odd.poll() is None:
            odd.kill()
            odd.wait()


def test_down_stops_a_demo_waiting_in_the_page_at_once_and_the_demo_ends(layout, tmp_path):
    """`make run` in the background (where Ctrl-C cannot reach it), then `make down`: every service stops within
    seconds, Azurite included (`down` cut off by a timeout while it waited on the local Mailchimp, already stopped but
    not yet reaped, left Azurite running), and the demo, whose services are gone, ends instead of waiting for ever."""
    log = tmp_path / "demo.log"
    demo = waiting_demo(layout, log)
    try:
        started = time.monotonic()
        stack.down(layout)
        assert time.monotonic() - started < 30  # it waited 10 s on the host, 60 s on the local Mailchimp, 10 s on Azurite
        assert not any(stack._answers(layout, name) for name in stack.SERVICES)
        assert demo.wait(timeout=30) == 0, log.read_text()
        assert "the stack was stopped" in log.read_text()
    finally:
        if demo.poll() is None:
            demo.terminate()
            demo.wait()


def test_the_local_mailchimp_keeps_its_audiences_across_down_and_up_like_azurite_and_clean_wipes_both(layout):
    stack.up(layout)
    audience = new_audience(layout, "Kept across restarts")
    container = blobs(layout).get_container_client("segments")
    try:
        container.create_container()
    except ResourceExistsError:  # the host's blob-event source made it already
        pass
    container.upload_blob("Kept/part.csv", b"Email\r\nann@contoso.com\r\n")
    stack.down(layout)
    assert stack.running(layout) == {}

    stack.up(layout)
    assert audience_exists(layout, audience)
    members = requests.get(f"{layout.mailchimp_url}/__admin/lists/{audience}/members", timeout=10).json()["members"]
    assert [(m["email_address"], [t["name"] for t in m["tags"]]) for m in members] == [("ann@contoso.com", ["Vip"])]
    assert container.get_blob_client("Kept/part.csv").download_blob().readall().startswith(b"Email")

    stack.clean(layout)
    assert not layout.local.exists() and stack.running(layout) == {}
    stack.up(layout)
    assert not audience_exists(layout, audience)
    assert not container.get_blob_client("Kept/part.csv").exists()


def test_the_state_file_keeps_members_tags_archived_and_deleted_addresses_and_new_tags_get_new_ids(tmp_path):
    state = tmp_path / "state.json"
    first = start_local_mailchimp("--state-file", str(state))
    try:
        root, list_id = first.api_root, "a1b2c3d4e5"
        batch = requests.post(f"{root}/lists/{list_id}", auth=AUTH, timeout=10, json={"update_existing": True, "members": [
            {"email_address": f"m{i}@contoso.com", "status": "subscribed", "merge_fields": {"FNAME": f"N{i}"}} for i in range(5)]})
        assert batch.ok, batch.text
        tag = requests.post(f"{root}/lists/{list_id}/segments", auth=AUTH, timeout=10,
                            json={"name": "Vip", "static_segment": ["m0@contoso.com", "m1@contoso.com"]})
        assert tag.ok, tag.text
        requests.post(f"{first.url}/__admin/members", timeout=10,
                      json={"list_id": list_id, "email": "m2@contoso.com", "archived": True}).raise_for_status()
        requests.post(f"{first.url}/__admin/members", timeout=10,
                      json={"list_id": list_id, "email": "gone@contoso.com", "permanently_deleted": True}).raise_for_status()
        dump = first.admin("GET", f"lists/{list_id}/members").json()
        tags_before = requests.get(f"{root}/lists/{list_id}/segments", auth=AUTH, timeout=10).json()["segments"]
    finally:
        first.stop()  # SIGTERM: saved on the way out
    assert private(state)
    second = start_local_mailchimp("--state-file", str(state))
    try:
        assert second.admin("GET", f"lists/{list_id}/members").json() == dump
        root = second.api_root
        assert requests.get(f"{root}/lists/{list_id}/segments", auth=AUTH, timeout=10).json()["segments"] == tags_before
        other = requests.post(f"{root}/lists/{list_id}/segments", auth=AUTH, timeout=10, json={"name": "New", "static_segment": []})
        assert other.ok and other.json()["id"] not in {t["id"] for t in tags_before}
    finally:
        second.stop()
    assert os.path.exists(state)


def test_writes_are_on_disk_soon_after_they_land_so_a_sigkill_loses_nothing(tmp_path):
    """The state file is written behind the requests (about 0.2 s after the last change), not every 30 s: a local
    Mailchimp killed without a chance to save (`kill -9`, a crash, a laptop lid) still has what it answered for."""
    state = tmp_path / "state.json"
    list_id = "a1b2c3d4e5"

    def killed(server) -> None:
        os.killpg(server.process.pid, signal.SIGKILL)
        server.process.wait()

    def saved_members() -> dict[str, str]:
        """Address -> status of the members the state file holds now, read as a restarted server reads it."""
        world = load(Settings(), state)
        members = world.audiences[list_id].members.values() if world and list_id in world.audiences else ()
        return {m.email: "archived" if m.archived else m.status for m in members}

    def saved_soon_after(answered: float) -> None:
        """The save is waited for (it fsyncs twice, which a loaded machine's disk may hold up), and must have been
        written within 5 s of the answer (the keeper writes 0.2 s after the last change; the rest is room for a loaded
        machine): a keeper that saved only every 30 s, or at shutdown (which SIGKILL skips), fails either way. The
        file's time is its write's, before the fsyncs, and the rename keeps it."""
        assert state.stat().st_mtime - answered < 5, state.stat().st_mtime - answered

    first = start_local_mailchimp("--state-file", str(state))
    try:
        batch = requests.post(f"{first.api_root}/lists/{list_id}", auth=AUTH, timeout=10, json={"update_existing": True, "members": [
            {"email_address": f"k{i}@contoso.com", "status": "subscribed", "tags": ["Kept"]} for i in range(50)]})
        answered = time.time()
        assert batch.ok and batch.json()["total_created"] == 50, batch.text
        time.sleep(1.5)  # past the write-behind delay, and any second save a change during the batch started
        wait_until(lambda: len(saved_members()) == 50, "the write-behind save", timeout=10)
        saved_soon_after(answered)
    finally:
        killed(first)

    second = start_local_mailchimp("--state-file", str(state))
    try:
        members = second.admin("GET", f"lists/{list_id}/members").json()["members"]
        assert sorted(m["email_address"] for m in members) == sorted(f"k{i}@contoso.com" for i in range(50))
        assert all([t["name"] for t in m["tags"]] == ["Kept"] for m in members)
        # a later change (an archive) is kept as well, not only the first one
        gone = requests.delete(f"{second.api_root}/lists/{list_id}/members/k0@contoso.com", auth=AUTH, timeout=10)
        answered = time.time()
        assert gone.status_code == 204, gone.text
        time.sleep(1.5)
        wait_until(lambda: saved_members().get("k0@contoso.com") == "archived", "the write-behind save", timeout=10)
        saved_soon_after(answered)
    finally:
        killed(second)

    third = start_local_mailchimp("--state-file", str(state))
    try:
        members = {m["email_address"]: m for m in third.admin("GET", f"lists/{list_id}/members").json()["members"]}
        assert len(members) == 50 and members["k0@contoso.com"]["status"] == "archived"
    finally:
        third.stop()
    assert private(state) and not list(tmp_path.glob("*.tmp"))


def test_an_admin_can_export_a_segment_to_an_audience_of_their_own_account(layout):
    """docs/threat-model.md, an admin: whoever holds Exports.Admin can point a destination at a Mailchimp account of
    their own, accept the consent themselves and export a segment there; the app cannot tell that account from the
    company's (it names them as the one who accepted). The stack's real host, Azurite and local Mailchimp, as an attacker would use
    them."""
    env = stack.up(layout)
    mailchimp = layout.mailchimp_url
    theirs = requests.post(f"{mailchimp}/__admin/accounts", json={"name": "Not the company"}, timeout=10).json()
    audience = requests.post(f"{mailchimp}/__admin/audiences", json={"api_key": theirs["api_key"], "name": "Copied"},
                             timeout=10).json()["id"]
    stack.sample(env, 40, "HighValueCustomers", layout)
    headers = stack.headers_of(env["AUTH_HEADER"])
    created = requests.post(f"{env['FUNCTIONS_URL']}/destinations", headers=headers, timeout=60, json={
        "displayName": "Mine", "consent": {"accepted": True}, "audienceId": audience,
        "mailchimp": {"apiKey": theirs["api_key"]}, "segments": ["HighValueCustomers"],
        "mapping": {"email": "Email", "mergeFields": {"FNAME": "FirstName", "LNAME": "LastName"}},
        "exportOnArrival": False, "schedule": {"enabled": False}})
    assert created.status_code == 201, created.text
    started = requests.post(f"{env['FUNCTIONS_URL']}/destinations/{created.json()['id']}/exports", headers=headers,
                            timeout=60)
    assert started.status_code == 202, started.text
    run_url = f"{env['FUNCTIONS_URL']}/exports/{started.json()['id']}"
    run: dict = {}

    def finished() -> bool:
        nonlocal run
        run = requests.get(run_url, headers=headers, timeout=30).json()
        return run["status"] in ("succeeded", "completed_with_errors", "failed", "cancelled")

    wait_until(finished, "the export", timeout=120)
    assert run["status"] in ("succeeded", "completed_with_errors") and run["counts"]["created"] >= 30, run
    assert run["startedBy"] == created.json()["consent"]["acceptedBy"] == "ada.admin@contoso.example"
    copied = requests.get(f"{mailchimp}/__admin/lists/{audience}/members", timeout=10).json()["members"]
    assert len(copied) == run["counts"]["created"]  # the segment's people, in an audience the company does not own
    assert all("HighValueCustomers" in {t["name"] for t in m["tags"]} for m in copied)
