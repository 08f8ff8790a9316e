"""Retries, no-retries, credentials errors, secrecy and the connection cap, against the real local Mailchimp."""
from __future__ import annotations

import logging
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from shared.emails import subscriber_hash
from shared.mailchimp import (Credentials, MailchimpAuthError, MailchimpNotFound, MailchimpRequestError,
                              MailchimpUnavailable, RetryPolicy)
from shared.mailchimp.transport import Transport
from tests.integration.test_mailchimp_client import (KEY, LIST, QUICK_RETRY, make_client, member, put_member,
                                                     requests_made)
from tests.services import free_port, start_local_mailchimp

WRONG_KEY = "fedcba9876543210fedcba9876543210-us6"


def faults(mailchimp, kind: str, limit: int, **extra) -> None:
    mailchimp.admin("POST", "faults", json={"rates": {kind: 1.0}, "limit": limit, **extra})


@pytest.mark.parametrize("kind", ["429", "500", "502", "403"])
def test_retryable_answers_are_retried_then_succeed(mailchimp, kind, caplog):
    faults(mailchimp, kind, limit=2)
    with make_client(mailchimp) as client, caplog.at_level(logging.WARNING, "shared.mailchimp"):
        assert client.get_audience(LIST).id == LIST
    stats = mailchimp.stats()
    assert stats["requests_total"] == 3
    assert stats["by_status"] == {kind: 2, "200": 1}
    assert len([r for r in caplog.records if "retry" in r.getMessage()]) == 2


def test_slow_answer_times_out_and_is_retried(mailchimp):
    faults(mailchimp, "slow", limit=1, slow_seconds=5)
    with make_client(mailchimp, timeout=(10.0, 0.3)) as client:  # connect 10 s: taken for the read's, it would wait 5
        started = time.monotonic()
        assert client.get_audience(LIST).id == LIST
        assert time.monotonic() - started < 3.5  # did not wait for the slow answer (5 s); room for a loaded machine
    assert mailchimp.stats()["faults"]["injected"]["slow"] == 1


def test_connection_refused_is_retried_until_mailchimp_is_up(caplog):
    port = free_port()
    late: list = []
    starter = threading.Timer(0.5, lambda: late.append(start_local_mailchimp(port=port)))
    starter.start()
    try:
        patient = RetryPolicy(attempts=40, max_seconds=30, base_backoff=0.05, max_backoff=0.3)
        with make_client(f"http://127.0.0.1:{port}/3.0", retry=patient) as client, \
                caplog.at_level(logging.WARNING, "shared.mailchimp"):
            client.ping()
        assert any("could not connect" in r.getMessage() for r in caplog.records)
        starter.join()
        assert requests_made(late[0]) == 1  # only the attempt that succeeded reached the server
    finally:
        starter.join()
        for server in late:
            server.stop()


def test_retries_are_bounded_and_then_unavailable(mailchimp):
    faults(mailchimp, "500", limit=100)
    with make_client(mailchimp) as client, pytest.raises(MailchimpUnavailable, match="gave up after 4 attempt"):
        client.ping()
    assert requests_made(mailchimp) == 4


def test_total_retry_time_is_bounded(mailchimp):
    faults(mailchimp, "429", limit=100)
    slow_backoff = RetryPolicy(attempts=50, max_seconds=0.5, base_backoff=0.2, max_backoff=0.2)
    with make_client(mailchimp, retry=slow_backoff) as client, pytest.raises(MailchimpUnavailable):
        started = time.monotonic()
        client.ping()
    # no retry starts that would end past 0.5 s; the last answer may take a while on a loaded machine, and unbounded
    # retries would take 50 attempts, 49 backoffs of 0.2 s: about 10 s
    assert time.monotonic() - started < 3.0
    assert requests_made(mailchimp) < 50


def test_not_found_is_not_retried(mailchimp):
    with make_client(mailchimp) as client, pytest.raises(MailchimpNotFound):
        client.get_audience("nope000000")
    assert requests_made(mailchimp) == 1


def test_bad_request_is_not_retried(mailchimp):
    with make_client(mailchimp) as client:
        client.create_tag(LIST, "VIP")
        with pytest.raises(MailchimpRequestError) as caught:
            client.create_tag(LIST, "VIP")
    assert caught.value.status == 400 and "already exists" in str(caught.value)
    assert requests_made(mailchimp) == 2


def test_method_not_allowed_is_not_retried(mailchimp):
    """No client operation sends an unsupported method, so the transport underneath is driven directly."""
    transport = Transport(Credentials.from_api_key(KEY, base_url=mailchimp.api_root), max_connections=2, gate=None,
                          retry=QUICK_RETRY, timeout=(2.0, 5.0))
    with pytest.raises(MailchimpRequestError) as caught:
        transport.call("PATCH", "/lists/{list_id}/segments", path={"list_id": LIST}, body={})
    transport.close()
    assert caught.value.status == 405
    assert requests_made(mailchimp) == 1


def test_bad_request_names_the_field(mailchimp):
    with make_client(mailchimp) as client, pytest.raises(MailchimpRequestError, match="type") as caught:
        client.create_merge_field(LIST, "SCORE", "Score", "percentage")
    assert caught.value.status == 400


def test_wrong_key_is_an_auth_error_at_once(mailchimp):
    with make_client(mailchimp, WRONG_KEY) as client, pytest.raises(MailchimpAuthError) as caught:
        client.ping()
    assert "must be renewed" in str(caught.value) and caught.value.status == 401
    assert requests_made(mailchimp) == 1


def test_revoked_key_asks_for_a_new_one(mailchimp):
    key = mailchimp.admin("POST", "accounts", json={"name": "Second"}).json()["api_key"]
    with make_client(mailchimp, key) as client:
        client.ping()
        mailchimp.admin("POST", "revoke", json={"api_key": key})
        with pytest.raises(MailchimpAuthError, match="new API key"):
            client.ping()


def provoke_every_error(mailchimp) -> list[Exception]:
    caught = []
    attempts = [
        (WRONG_KEY, lambda c: c.ping(), None),
        (KEY, lambda c: c.get_audience("nope000000"), None),
        (KEY, lambda c: c.create_merge_field(LIST, "SCORE", "Score", "percentage"), None),
        (KEY, lambda c: c.ping(), "500"),
        (KEY, lambda c: c.ping(), "403"),
    ]
    for key, call, fault in attempts:
        mailchimp.admin("POST", "faults", json={"rates": {fault: 1.0}} if fault else {})
        with make_client(mailchimp, key) as client:
            try:
                call(client)
            except Exception as exc:  # noqa: BLE001 - collecting every kind on purpose
                caught.append(exc)
    return caught


def test_no_secret_in_errors_or_logs(mailchimp, caplog):
    with caplog.at_level(logging.DEBUG):
        errors = provoke_every_error(mailchimp)
    assert [type(e).__name__ for e in errors] == ["MailchimpAuthError", "MailchimpNotFound",
                                                  "MailchimpRequestError", "MailchimpUnavailable",
                                                  "MailchimpUnavailable"]
    for secret in (KEY, WRONG_KEY, KEY.split("-")[0], WRONG_KEY.split("-")[0]):
        for error in errors:
            assert secret not in str(error) and secret not in repr(error)
        assert secret not in caplog.text
    assert "GET /lists/{list_id}" in caplog.text  # log lines name the path template, status and attempt


def test_no_email_or_hash_in_logs_or_refusals(mailchimp, caplog):
    put_member(mailchimp, "known@example.com")
    with make_client(mailchimp) as client, caplog.at_level(logging.DEBUG):
        results = client.upsert_members(LIST, [member("fake@example.com"), member("known@example.com", FNAME="K")],
                                        status_for_new="subscribed", existing_as_of=None)
        client.archive_member(LIST, "known@example.com")
    assert results[0].outcome.value == "refused" and "looks fake" in results[0].reason
    assert "example.com" not in results[0].reason
    assert "example.com" not in caplog.text
    assert "/members/{subscriber_hash}" in caplog.text
    assert subscriber_hash("known@example.com") not in caplog.text


def test_gate_is_entered_for_every_attempt(mailchimp):
    faults(mailchimp, "429", limit=2)
    entered = []

    class Gate:
        def __enter__(self):
            entered.append(time.monotonic())

        def __exit__(self, *exc):
            return False

    with make_client(mailchimp, gate=Gate) as client:
        client.ping()
    assert len(entered) == 3


def push(mailchimp, clients, threads: int = 30, calls: int = 3) -> list[Exception]:
    """`threads` threads, spread over `clients`, each making `calls` reads at the same moment."""
    start = threading.Barrier(threads)
    failures: list[Exception] = []

    def work(i: int) -> None:
        start.wait()
        for _ in range(calls):
            try:
                clients[i % len(clients)].get_audience(LIST)
            except Exception as exc:  # noqa: BLE001 - reported below
                failures.append(exc)

    with ThreadPoolExecutor(threads) as pool:
        list(pool.map(work, range(threads)))
    return failures


def test_connection_cap_holds_across_clients_and_30_threads(mailchimp):
    mailchimp.admin("POST", "latency", json={"profile": "none", "base_ms": 40})
    clients = [make_client(mailchimp, max_connections=10) for _ in range(3)]
    try:
        assert push(mailchimp, clients) == []
    finally:
        for c in clients:
            c.close()
    stats = mailchimp.stats()
    assert stats["max_concurrent"] == 10
    assert "429" not in stats["by_status"] and stats["rejected_over_cap"] == 0
    assert stats["requests_total"] == 90


def test_without_the_cap_the_server_would_refuse(mailchimp):
    """Control for the test above: the same push with a client cap above Mailchimp's gets 429s."""
    mailchimp.admin("POST", "latency", json={"profile": "none", "base_ms": 40})
    once = RetryPolicy(attempts=1, max_seconds=1)
    with make_client(mailchimp, max_connections=30, retry=once) as client:
        failures = push(mailchimp, [client])
    assert failures and all(isinstance(f, MailchimpUnavailable) for f in failures)
    assert mailchimp.stats()["rejected_over_cap"] > 0
