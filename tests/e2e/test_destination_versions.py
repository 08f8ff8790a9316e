"""Conditional destination writes over HTTP: GET answers the settings' version as ETag; PATCH and DELETE with an
If-Match that is no longer current are refused with 412 and change nothing; export bookkeeping is no change."""
from __future__ import annotations

from tests.e2e.conftest import create_destination


def test_if_match_protects_a_change_computed_from_an_old_read(start_host, mailchimp):
    host = start_host()
    destination = create_destination(host)
    path = f"destinations/{destination['id']}"
    read = host.call("GET", path)
    old = read.headers["ETag"]
    assert old.startswith('"') and old.endswith('"')

    withdrawn = host.call("PATCH", path, json={"consent": {"accepted": False}}, headers={"If-Match": old})
    assert withdrawn.status_code == 200, withdrawn.text
    current = host.call("GET", path).headers["ETag"]
    assert current != old

    stale = host.call("PATCH", path, json={"consent": {"accepted": True}}, headers={"If-Match": old})
    assert stale.status_code == 412 and "If-Match" in stale.json()["error"] and current in stale.json()["error"]
    assert host.call("GET", path).json()["consent"]["accepted"] is False
    assert host.call("DELETE", path, headers={"If-Match": old}).status_code == 412
    assert host.call("GET", path).status_code == 200

    renamed = host.call("PATCH", path, json={"displayName": "Renamed"}, headers={"If-Match": current})
    assert renamed.status_code == 200 and renamed.json()["displayName"] == "Renamed"
    assert host.call("DELETE", path, headers={"If-Match": host.call("GET", path).headers["ETag"]}).status_code == 204
    assert host.call("DELETE", path).status_code == 204  # still idempotent without If-Match
