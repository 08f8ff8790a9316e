"""HTTP triggers through a real devhost process: routing, parameters, keys, errors and concurrency."""
from __future__ import annotations

from collections.abc import Iterator
import json
import socket
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from urllib.parse import urlsplit

import pytest
import requests

from devhost.http_server import MAX_BODY_BYTES
from devhost.launcher import RunningHost
from tests.devhost_app.harness import KEY, SampleApp
from tests.services import Azurite


@pytest.fixture(scope="module")
def host(tmp_path_factory: pytest.TempPathFactory, azurite: Azurite) -> Iterator[RunningHost]:
    app = SampleApp.create(tmp_path_factory.mktemp("http"), azurite, SAMPLE_OVERRIDDEN="from the environment")
    running = app.start()
    yield running
    running.stop()


def call(host: RunningHost, method: str, path: str, **kwargs) -> requests.Response:
    return requests.request(method, host.url + path, timeout=15, **kwargs)


def test_route_params_query_headers_and_body_reach_the_function(host: RunningHost) -> None:
    response = call(host, "POST", "/api/items/42/widget?color=blue&size=", data=b'{"n": 1}',
                    headers={"x-functions-key": KEY, "X-Sample": "hello"})
    assert response.status_code == 201
    assert response.headers["x-echo"] == "yes"
    assert response.headers["Content-Type"].startswith("application/json")
    seen = response.json()
    assert seen["method"] == "POST"
    assert seen["url"] == f"{host.url}/api/items/42/widget?color=blue&size="
    assert seen["route_params"] == {"id": "42", "name": "widget"}
    assert seen["params"] == {"color": "blue", "size": ""}
    assert seen["header"] == "hello"
    assert seen["body"] == '{"n": 1}'
    assert seen["function"] == "echo"


def test_optional_parameter_may_be_left_out(host: RunningHost) -> None:
    response = call(host, "GET", "/api/items/7", headers={"x-functions-key": KEY})
    assert response.status_code == 200
    assert response.json()["route_params"] == {"id": "7"}


def test_chunked_request_body_is_read_whole(host: RunningHost) -> None:
    response = call(host, "POST", "/api/items/1", data=iter([b"first,", b"second"]), headers={"x-functions-key": KEY})
    assert response.json()["body"] == "first,second"


def raw_post(host: RunningHost, headers: str, *body: bytes) -> tuple[int, bytes]:
    """POST /api/items/1 over a bare socket (requests cannot send broken framing): the status and the body answered.

    The client sends nothing after `body` (it shuts its side), and every answer here closes the connection, so the
    answer is read to the end."""
    port = urlsplit(host.url).port
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(f"POST /api/items/1 HTTP/1.1\r\nHost: 127.0.0.1\r\nx-functions-key: {KEY}\r\n"
                     f"Connection: close\r\n{headers}\r\n".encode())
        try:
            for part in body:
                sock.sendall(part)
            sock.shutdown(socket.SHUT_WR)
        except OSError:  # the host answered and closed before taking all of it: read what it answered
            pass
        answer = b""
        while data := sock.recv(1 << 16):
            answer += data
    head, _, content = answer.partition(b"\r\n\r\n")
    return int(head.split(b" ", 2)[1]), content


CHUNKED = "Transfer-Encoding: chunked\r\n"


def test_chunked_body_with_extensions_and_trailers_is_read_whole(host: RunningHost) -> None:
    status, content = raw_post(host, CHUNKED, b"6;name=value\r\nfirst,\r\n6\r\nsecond\r\n0\r\nX-Trailer: 1\r\n\r\n")
    assert status == 201 and json.loads(content)["body"] == "first,second"


def test_chunked_body_announcing_more_than_the_limit_is_refused_before_it_is_sent(host: RunningHost) -> None:
    assert raw_post(host, CHUNKED, f"{MAX_BODY_BYTES + 1:x}\r\n".encode()) == (413, b"")


def test_chunked_body_whose_chunks_add_up_past_the_limit_is_refused(host: RunningHost) -> None:
    half = MAX_BODY_BYTES // 2 + 1
    status = raw_post(host, CHUNKED, f"{half:x}\r\n".encode(), b"x" * half, f"\r\n{half:x}\r\n".encode())
    assert status == (413, b"")


@pytest.mark.parametrize("size_line", [b"-5", b"-0", b"zz", b"0x10", b"1_0", b"+5", b" ", b"\xff", b"1" * 17,
                                       pytest.param(b"5" + b"0" * 70_000, id="line-over-64KiB")])
def test_negative_or_malformed_chunk_size_is_a_400(host: RunningHost, size_line: bytes) -> None:
    assert raw_post(host, CHUNKED, size_line + b"\r\nhello\r\n0\r\n\r\n") == (400, b"")


def test_chunk_not_ended_by_crlf_or_cut_short_is_a_400(host: RunningHost) -> None:
    assert raw_post(host, CHUNKED, b"3\r\nhello\r\n0\r\n\r\n") == (400, b"")  # 5 bytes in a chunk of 3
    assert raw_post(host, CHUNKED, b"10\r\nshort") == (400, b"")  # the client stops mid-chunk


@pytest.mark.parametrize("length", ["-1", "abc", "1_0", "+3", "0x3", "3, 4"])
def test_negative_or_malformed_content_length_is_a_400(host: RunningHost, length: str) -> None:
    assert raw_post(host, f"Content-Length: {length}\r\n", b"abc") == (400, b"")


def test_two_different_content_lengths_are_a_400(host: RunningHost) -> None:
    assert raw_post(host, "Content-Length: 3\r\nContent-Length: 5\r\n", b"abcde") == (400, b"")


def test_sized_body_over_the_limit_is_a_413(host: RunningHost) -> None:
    assert raw_post(host, f"Content-Length: {MAX_BODY_BYTES + 1}\r\n") == (413, b"")


@pytest.mark.parametrize("method, path", [
    ("GET", "/api/items/abc"),  # fails the :int constraint
    ("GET", "/api/nowhere"),
    ("PUT", "/api/items/1"),  # route exists, method does not
    ("GET", "/items/1"),  # no route prefix
])
def test_unmatched_requests_answer_404(host: RunningHost, method: str, path: str) -> None:
    assert call(host, method, path, headers={"x-functions-key": KEY}).status_code == 404


@pytest.mark.parametrize("path", ["/api/items/1", "/api/ops/ping"])
def test_function_and_admin_routes_need_the_key(host: RunningHost, path: str) -> None:
    assert call(host, "GET", path).status_code == 401
    assert call(host, "GET", path, headers={"x-functions-key": "wrong"}).status_code == 401
    assert call(host, "GET", path, params={"code": "wrong"}).status_code == 401
    assert call(host, "GET", path, headers={"x-functions-key": KEY}).status_code in (200, 204)
    assert call(host, "GET", path, params={"code": KEY}).status_code in (200, 204)


def test_anonymous_routes_need_no_key(host: RunningHost) -> None:
    health = call(host, "GET", "/api/health")
    assert (health.status_code, health.text, health.headers["Content-Type"]) == (200, "ok", "text/plain; charset=utf-8")
    assert call(host, "GET", "/api/files/exports/Spring%20Sale/part-1.csv").text == "exports/Spring Sale/part-1.csv"
    assert call(host, "GET", "/api/files").text == "<none>"


def test_a_failing_function_answers_500_without_details(host: RunningHost) -> None:
    response = call(host, "GET", "/api/boom")
    assert (response.status_code, response.content) == (500, b"")
    assert "function=boom trigger=http outcome=failed error=RuntimeError" in host.log()


def test_requests_are_served_concurrently(host: RunningHost) -> None:
    # The function only answers 200 when a second request reaches it while the first is still waiting.
    with ThreadPoolExecutor(2) as pool:
        answers = list(pool.map(lambda _: call(host, "GET", "/api/rendezvous"), range(2)))
    assert [(a.status_code, a.text) for a in answers] == [(200, "met"), (200, "met")]


def test_settings_file_fills_the_environment_but_existing_variables_win(host: RunningHost) -> None:
    assert call(host, "GET", "/api/settings").json() == {
        "SAMPLE_FROM_FILE": "from the settings file", "SAMPLE_OVERRIDDEN": "from the environment"}


def test_log_has_one_line_per_invocation_without_key_or_query(host: RunningHost) -> None:
    call(host, "GET", "/api/items/99", params={"code": KEY, "email": "someone@example.com"})
    log = host.log()
    assert "function=echo trigger=http outcome=succeeded" in log
    assert KEY not in log
    assert "someone@example.com" not in log and "email=" not in log


def test_listing_at_startup_shows_routes_and_auth(host: RunningHost) -> None:
    log = host.log()
    assert "echo: [GET,POST] /api/items/{id:int}/{name?} (function)" in log
    assert "health: [GET] /api/health (anonymous)" in log


def test_route_prefix_comes_from_host_json(tmp_path: Path, azurite: Azurite) -> None:
    running = SampleApp.create(tmp_path, azurite, http={"routePrefix": ""}).start()
    try:
        assert call(running, "GET", "/health").text == "ok"
        assert call(running, "GET", "/api/health").status_code == 404
    finally:
        running.stop()
