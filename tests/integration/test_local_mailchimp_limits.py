"""The local Mailchimp's connection cap, seeded faults and latency."""
from __future__ import annotations

import threading
import time
from typing import Any

import pytest
import requests

from tests.integration.test_local_mailchimp import LIST, Api, api, problem  # noqa: F401  (api is a fixture)
from tests.services import LocalMailchimp, wait_until


def hold_connections(mailchimp: LocalMailchimp, api: Api, count: int) -> list[threading.Thread]:
    """`count` pings held in flight by a slow fault (until a reset wakes them)."""
    mailchimp.admin("POST", "faults", json={"rates": {"slow": 1}, "slow_seconds": 60, "path": "/ping$",
                                            "limit": count})
    threads = [threading.Thread(target=Api(mailchimp).call, args=("GET", "/ping")) for _ in range(count)]
    for thread in threads:
        thread.start()
    wait_until(lambda: mailchimp.stats()["in_flight"] == count, f"{count} requests in flight", timeout=10)
    return threads


def test_a_request_over_the_cap_gets_429_at_once_and_is_not_counted_in_flight(mailchimp: LocalMailchimp,
                                                                               api: Api) -> None:
    mailchimp.admin("POST", "connection-cap", json={"cap": 3})
    held = hold_connections(mailchimp, api, 3)
    body = problem(api.call("GET", f"/lists/{LIST}"), 429, "Too Many Requests")
    assert "3 simultaneous connections" in body["detail"]
    other_key = mailchimp.admin("POST", "accounts", json={}).json()["api_key"]
    assert Api(mailchimp, other_key).ok("GET", "/ping")  # the cap is per account
    stats = mailchimp.stats()
    assert (stats["in_flight"], stats["max_concurrent"], stats["rejected_over_cap"]) == (3, 3, 1)
    assert stats["by_status"] == {"200": 1, "429": 1}  # the held ones are not answered yet
    mailchimp.reset()  # wakes the held requests
    for thread in held:
        thread.join(timeout=10)
        assert not thread.is_alive()


def statuses(api: Api, calls: int) -> list[int]:
    return [api.call("GET", "/ping").status_code for _ in range(calls)]


def test_faults_by_rate_are_reproducible_with_a_seed(mailchimp: LocalMailchimp, api: Api) -> None:
    plan = {"seed": 42, "rates": {"429": 0.2, "500": 0.2, "502": 0.2}, "path": "/ping"}
    mailchimp.admin("POST", "faults", json=plan)
    first = statuses(api, 40)
    assert api.ok("GET", f"/lists/{LIST}")  # other paths are not faulted
    injected = mailchimp.stats()["faults"]["injected"]
    mailchimp.reset()
    mailchimp.admin("POST", "faults", json=plan)
    assert statuses(api, 40) == first
    assert {200, 429, 500, 502} == set(first)
    assert injected == {"429": first.count(429), "500": first.count(500), "502": first.count(502), "slow": 0,
                        "403": 0, "apply_then_timeout": 0, "apply_then_drop": 0, "apply_then_502": 0}
    mailchimp.admin("POST", "faults", json={**plan, "seed": 43})
    assert statuses(api, 40) != first


def test_each_fault_answers_like_mailchimp_does(mailchimp: LocalMailchimp, api: Api) -> None:
    for kind in ("429", "500", "502", "403"):
        mailchimp.admin("POST", "faults", json={"rates": {kind: 1}})
        response = api.call("GET", "/ping")
        assert response.status_code == int(kind)
        if kind in ("429", "500"):
            problem(response, int(kind), {"429": "Too Many Requests", "500": "Internal Server Error"}[kind])
        elif kind == "502":
            assert response.headers["Content-Type"].startswith("text/html") and b"502 Bad Gateway" in response.content
        else:
            assert response.content == b""
    assert mailchimp.stats()["requests_total"] == 4  # the admin calls in between were neither faulted nor counted


def test_the_next_n_batch_subscribe_calls_can_be_failed(mailchimp: LocalMailchimp, api: Api) -> None:
    mailchimp.admin("POST", "faults", json={"rates": {"500": 1}, "method": "POST", "path": f"/lists/{LIST}$",
                                            "limit": 3})
    member = [{"email_address": "ann@shop.io", "status": "subscribed"}]
    assert api.call("POST", f"/lists/{LIST}/segments", json={"name": "VIP"}).status_code == 200
    results = [api.call("POST", f"/lists/{LIST}", json={"members": member}).status_code for _ in range(4)]
    assert results == [500, 500, 500, 200]
    assert api.members()["total_items"] == 1  # the failed calls wrote nothing


def test_a_slow_reply_still_does_the_work(mailchimp: LocalMailchimp, api: Api) -> None:
    """A client that gives up on a slow call must expect Mailchimp to have applied it anyway."""
    mailchimp.admin("POST", "faults", json={"rates": {"slow": 1}, "slow_seconds": 0.5, "limit": 1})
    with pytest.raises(requests.Timeout):
        api.call("POST", f"/lists/{LIST}", json={"members": [{"email_address": "ann@shop.io", "status": "subscribed"}]},
                 timeout=0.1)
    wait_until(lambda: api.members()["total_items"] == 1, "the abandoned write to land", timeout=10)


@pytest.mark.parametrize("plan, field_hint", [({"rates": {"418": 0.5}}, "rates"), ({"rates": {"500": 2}}, "rates.500"),
                                              ({"rates": {"500": 0.6, "429": 0.6}}, "more than 1"),
                                              ({"limit": -1}, "limit"), ({"path": "("}, "path")])
def test_a_wrong_fault_plan_is_refused_with_its_reason(mailchimp: LocalMailchimp, plan: dict, field_hint: str) -> None:
    response = requests.post(f"{mailchimp.url}/__admin/faults", json=plan, timeout=10)
    assert response.status_code == 400 and field_hint in response.json()["errors"][0]["message"]


def served_seconds(mailchimp: LocalMailchimp, api: Api, method: str, path: str, **kwargs: Any) -> float:
    before = mailchimp.stats()["service_seconds"]
    api.call(method, path, **kwargs)
    return mailchimp.stats()["service_seconds"] - before


def test_latency_is_a_base_plus_a_cost_per_member_and_changes_at_run_time(mailchimp: LocalMailchimp,
                                                                          api: Api) -> None:
    set_to = mailchimp.admin("POST", "latency", json={"profile": "realistic", "base_ms": 50,
                                                      "per_member_written_ms": 2}).json()
    assert set_to == {"profile": "realistic", "base_ms": 50, "per_member_written_ms": 2, "per_member_read_ms": 0.05}
    assert served_seconds(mailchimp, api, "GET", "/ping") >= 0.05
    members = [{"email_address": f"m{i}@shop.io", "status": "subscribed"} for i in range(100)]
    assert served_seconds(mailchimp, api, "POST", f"/lists/{LIST}", json={"members": members}) >= 0.25
    mailchimp.admin("POST", "latency", json={"profile": "none"})
    assert mailchimp.stats()["latency"] == {"profile": "none", "base_ms": 0, "per_member_written_ms": 0,
                                            "per_member_read_ms": 0}
    problem(requests.post(f"{mailchimp.url}/__admin/latency", json={"profile": "slowish"}, timeout=10),
            400, "Invalid Resource")


def test_stats_say_when_the_first_request_arrived_and_can_be_zeroed_alone(mailchimp: LocalMailchimp, api: Api) -> None:
    """A benchmark's "time to first Mailchimp call" (and first write): zero the counters, start a run, read
    first_request_at (first_write_at)."""
    assert (mailchimp.stats()["first_request_at"], mailchimp.stats()["first_write_at"]) == (None, None)
    mailchimp.admin("POST", "latency", json={"profile": "none", "base_ms": 200})
    before = time.time()
    api.ok("GET", "/ping")
    answered = time.time()
    api.ok("GET", f"/lists/{LIST}")
    stats = mailchimp.stats()
    assert before <= stats["first_request_at"] <= answered - 0.19  # when it arrived, 200 ms before its answer
    assert stats["first_write_at"] is None  # nothing written yet
    writing = time.time()
    api.batch([{"email_address": "first@shop.io", "status": "subscribed"}])
    assert writing <= mailchimp.stats()["first_write_at"] <= time.time() - 0.19
    mailchimp.admin("GET", "stats")  # admin calls are not counted
    assert mailchimp.stats()["first_request_at"] == stats["first_request_at"]
    assert mailchimp.admin("POST", "stats/reset").json() == {"reset": "stats"}
    zeroed = mailchimp.stats()
    assert (zeroed["first_request_at"], zeroed["first_write_at"], zeroed["requests_total"],
            zeroed["service_seconds"]) == (None, None, 0, 0)
    assert zeroed["latency"]["base_ms"] == 200  # only the counters: settings and data stay
    assert api.ok("GET", f"/lists/{LIST}")["id"] == LIST
    assert mailchimp.stats()["first_request_at"] > stats["first_request_at"]


# "Mailchimp applied the batch but the answer never arrived": the apply_then_* faults do the work, then lose the answer.

BATCH = f"/lists/{LIST}$"


def subscribe_one(api: Api, email: str, **kwargs: Any) -> requests.Response:
    return api.call("POST", f"/lists/{LIST}", json={"members": [{"email_address": email, "status": "subscribed"}]},
                    **kwargs)


def is_member(api: Api, email: str) -> bool:
    return api.call("GET", f"/lists/{LIST}/members/{email}").status_code == 200


def test_apply_then_timeout_writes_and_then_holds_the_answer_past_the_read_timeout(mailchimp: LocalMailchimp,
                                                                                     api: Api) -> None:
    mailchimp.admin("POST", "faults", json={"rates": {"apply_then_timeout": 1}, "slow_seconds": 1.5,
                                            "method": "POST", "path": BATCH, "limit": 1})
    with pytest.raises(requests.ReadTimeout):
        subscribe_one(api, "ann@shop.io", timeout=0.3)
    assert is_member(api, "ann@shop.io")  # already written when the client gave up, not later
    assert mailchimp.stats()["in_flight"] == 1  # the abandoned call still holds its connection
    wait_until(lambda: mailchimp.stats()["by_status"].get("dropped") == 1, "the held call to be dropped", timeout=10)
    stats = mailchimp.stats()
    assert (stats["in_flight"], stats["faults"]["injected"]["apply_then_timeout"]) == (0, 1)
    assert subscribe_one(api, "bob@shop.io", timeout=5).status_code == 200  # the limit is spent


def test_apply_then_timeout_never_answers_even_a_patient_client(mailchimp: LocalMailchimp, api: Api) -> None:
    mailchimp.admin("POST", "faults", json={"rates": {"apply_then_timeout": 1}, "slow_seconds": 0.2,
                                            "method": "POST", "path": BATCH, "limit": 1})
    with pytest.raises(requests.ConnectionError):
        subscribe_one(api, "ann@shop.io", timeout=5)
    assert is_member(api, "ann@shop.io")


def test_apply_then_drop_and_apply_then_502_lose_the_answer_of_a_call_they_applied(mailchimp: LocalMailchimp,
                                                                                    api: Api) -> None:
    mailchimp.admin("POST", "faults", json={"rates": {"apply_then_drop": 1}, "method": "POST", "path": BATCH,
                                            "limit": 2})
    for email in ("ann@shop.io", "bob@shop.io"):
        with pytest.raises(requests.ConnectionError):
            subscribe_one(api, email)
        assert is_member(api, email)
    mailchimp.admin("POST", "faults", json={"rates": {"apply_then_502": 1}, "method": "POST", "path": BATCH,
                                            "limit": 1})
    response = subscribe_one(api, "cy@shop.io")
    assert response.status_code == 502 and response.headers["Content-Type"].startswith("text/html")
    assert is_member(api, "cy@shop.io")
    again = subscribe_one(api, "cy@shop.io")  # a retry finds the write done: the contact exists
    assert again.status_code == 200 and again.json()["errors"][0]["error_code"] == "ERROR_CONTACT_EXISTS"
    stats = mailchimp.stats()
    assert stats["by_status"]["dropped"] == 2 and stats["by_status"]["502"] == 1
    assert stats["faults"]["injected"]["apply_then_drop"] == 0  # the plan was replaced, and counts with it
    assert stats["members_written"] == 4
