"""EnvironmentOnce takes the same proxies and CA bundle from the environment as requests.Session does, read once per
host instead of at every request; the storage transport's pools reuse no connection idle long enough for the server
to be closing it."""
from __future__ import annotations

import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import SimpleNamespace
from typing import Callable, Iterator

import pytest
import requests
from hypothesis import given, settings
from hypothesis import strategies as st
from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool

import shared.adapters.http_session as http_session
from shared.adapters.http_session import EnvironmentOnce
from shared.adapters.storage import requests_transport

URLS = ("http://127.0.0.1:10000/devstoreaccount1/c/b", "https://us6.api.mailchimp.com/3.0/lists/x",
        "https://account.blob.core.windows.net/work/runs/1", "http://localhost:8765/3.0/")
ENVIRONMENTS = [
    {},
    {"HTTPS_PROXY": "http://proxy.example:3128", "HTTP_PROXY": "http://proxy.example:3128"},
    {"HTTPS_PROXY": "http://proxy.example:3128", "NO_PROXY": "127.0.0.1,localhost,.windows.net"},
    {"ALL_PROXY": "socks5://proxy.example:1080", "no_proxy": "*"},
    {"REQUESTS_CA_BUNDLE": "/etc/ssl/bundle.pem"},
    {"CURL_CA_BUNDLE": "/etc/ssl/curl.pem", "HTTPS_PROXY": "http://proxy.example:3128"},
]
PROXY_VARIABLES = ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "NO_PROXY", "REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE")


@pytest.fixture
def environment(monkeypatch: pytest.MonkeyPatch):
    def set_to(values: dict[str, str]) -> None:
        for name in PROXY_VARIABLES:
            monkeypatch.delenv(name, raising=False)
            monkeypatch.delenv(name.lower(), raising=False)
        for name, value in values.items():
            monkeypatch.setenv(name, value)
    return set_to


@pytest.mark.parametrize("values", ENVIRONMENTS)
@pytest.mark.parametrize("url", URLS)
def test_the_settings_are_those_requests_takes_from_the_environment(environment, values, url) -> None:
    environment(values)
    for verify in (None, True, False, "/own/bundle.pem"):
        for proxies in ({}, {"https": "http://own.example:8080"}):
            expected = requests.Session().merge_environment_settings(url, dict(proxies), None, verify, None)
            assert EnvironmentOnce().merge_environment_settings(url, dict(proxies), None, verify, None) == expected


def test_the_environment_is_read_once_per_host(environment) -> None:
    environment({"HTTPS_PROXY": "http://proxy.example:3128"})
    session = EnvironmentOnce()
    first = session.merge_environment_settings(URLS[1], {}, None, None, None)
    environment({})
    assert session.merge_environment_settings(URLS[1] + "/members", {}, None, None, None) == first
    assert session.merge_environment_settings(URLS[2], {}, None, None, None)["proxies"] == {}  # another host


def test_a_session_not_trusting_the_environment_takes_nothing_from_it(environment) -> None:
    environment({"HTTPS_PROXY": "http://proxy.example:3128", "REQUESTS_CA_BUNDLE": "/etc/ssl/bundle.pem"})
    session = EnvironmentOnce()
    session.trust_env = False
    assert session.merge_environment_settings(URLS[1], {}, None, None, None) == {
        "proxies": {}, "stream": False, "verify": True, "cert": None}


def test_the_netrc_file_gives_the_same_auth_as_requests_and_is_read_once_per_host(tmp_path, monkeypatch) -> None:
    netrc = tmp_path / "netrc"
    netrc.write_text("machine us6.api.mailchimp.com login anystring password from-netrc\n")
    netrc.chmod(0o600)
    monkeypatch.setenv("NETRC", str(netrc))
    looked_up: list[str] = []
    real = requests.utils.get_netrc_auth

    def counted(url: str, raise_errors: bool = False) -> object:
        looked_up.append(url)
        return real(url, raise_errors)

    for module in ("requests.sessions", "shared.adapters.http_session"):  # whichever of them the session asks
        monkeypatch.setattr(f"{module}.get_netrc_auth", counted)
    session = EnvironmentOnce()
    urls = [*URLS, "http://user:from-url@127.0.0.1:10000/c", "https://us6.api.mailchimp.com/3.0/"]
    for url in urls:
        for method in ("GET", "PUT"):
            request = requests.Request(method, url, data=b"body")
            got = session.prepare_request(request)
            assert request.auth is None  # the caller's request is left as it was
            expected = requests.Session().prepare_request(requests.Request(method, url, data=b"body"))
            assert dict(got.headers) == dict(expected.headers) and got.body == expected.body, url
            assert ("Authorization" in got.headers) == ("mailchimp" in url or "from-url" in url)
    hosts = {requests.utils.urlparse(url)[:2] for url in urls}
    requests_own = len(urls) * 2  # one for each requests.Session above
    assert len(looked_up) - requests_own == len(hosts) + 2  # once a host; the URL with credentials each time
    own = session.prepare_request(requests.Request("GET", URLS[1], auth=("user", "own")))  # a call's own auth wins
    assert own.headers["Authorization"] == requests.Session().prepare_request(
        requests.Request("GET", URLS[1], auth=("user", "own"))).headers["Authorization"]


class _KeepAlive(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keeps the connection open between requests, as Azurite does
    announced: str | None = None  # the Keep-Alive header it answers with, if any

    def do_GET(self) -> None:  # noqa: N802 - http.server's naming
        self.send_response(200)
        if self.announced:
            self.send_header("Keep-Alive", self.announced)
        self.send_header("Content-Length", "2")
        self.end_headers()
        self.wfile.write(b"ok")

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def keep_alive_server() -> Iterator[Callable[[str | None], tuple[str, list[int]]]]:
    """Starts local HTTP/1.1 servers keeping connections open, announcing the given Keep-Alive header; gives each one's
    URL and the connections it accepted (their client ports)."""
    servers: list[ThreadingHTTPServer] = []

    def start(announced: str | None) -> tuple[str, list[int]]:
        accepted: list[int] = []

        class Server(ThreadingHTTPServer):
            daemon_threads = True

            def get_request(self):  # type: ignore[no-untyped-def]
                connection, address = super().get_request()
                accepted.append(address[1])
                return connection, address

        server = Server(("127.0.0.1", 0), type("Handler", (_KeepAlive,), {"announced": announced}))
        servers.append(server)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        return f"http://127.0.0.1:{server.server_address[1]}/", accepted

    yield start
    for server in servers:
        server.shutdown()
        server.server_close()


@pytest.fixture
def clock(monkeypatch) -> list[float]:
    """The pools' monotonic clock, set by the test: no sleeping, no margin a loaded machine could eat."""
    now = [1000.0]
    monkeypatch.setattr(http_session, "time", SimpleNamespace(monotonic=lambda: now[0]))
    return now


@pytest.mark.parametrize(("announced", "limit"), [("timeout=5", 4.0), ("timeout=5, max=1000", 4.0),
                                                  (None, http_session.IDLE_SECONDS), ("timeout=600", http_session.IDLE_SECONDS),
                                                  ("max=100", http_session.IDLE_SECONDS)])
def test_the_storage_transport_reuses_a_connection_only_while_idle_for_less_than_its_server_keeps_one_open(
        keep_alive_server, clock, announced, limit) -> None:
    url, accepted = keep_alive_server(announced)
    with requests_transport().session as session:
        assert session.get(url).text == "ok"
        for idle in (0.1, limit * 0.6, limit * 0.6, limit - 0.05):  # idle time, not age, counts
            clock[0] += idle
            assert session.get(url).text == "ok"
        assert len(accepted) == 1
        clock[0] += limit + 0.05
        assert session.get(url).text == "ok"
        assert len(accepted) == 2  # idle past the limit: closed, and a new one opened
        assert session.get(url).text == "ok"
        assert len(accepted) == 2  # and that one reused in turn


def test_the_idle_limit_is_a_second_under_the_keep_alive_a_server_announces() -> None:
    assert http_session.idle_limit("timeout=5") == 4.0  # Azurite, which closes at 6 s
    assert http_session.idle_limit("Timeout = 2, max=5") == http_session.idle_limit('timeout="2"') == 1.0
    assert http_session.idle_limit("timeout=1") == 0.5  # half of it under 2 s: not a new connection per request
    assert http_session.idle_limit("timeout=5, timeout=2") == 1.0  # headers joined: the smallest
    assert http_session.idle_limit("timeout=1.5") == 0.75 and http_session.idle_limit("timeout=6.5") == 5.5
    assert http_session.idle_limit("timeout=900") == http_session.IDLE_SECONDS
    for meaningless in (None, "", "max=5", "max-timeout=3", "timeout=abc", "timeout=-5", "5", "timeout=5.5.5",
                        "timeout=" + "9" * 400, "timeout=1234567"):
        assert http_session.idle_limit(meaningless) == http_session.IDLE_SECONDS, meaningless


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=60) | st.builds(lambda a, n, b: f"{a}timeout={n}{b}", st.text(max_size=10),
                                         st.integers(-5, 10**400).map(str), st.text(max_size=10)))
def test_whatever_a_server_announces_the_limit_is_a_few_seconds_and_never_an_error(header) -> None:
    assert 0.0 <= http_session.idle_limit(header) <= http_session.IDLE_SECONDS


@pytest.mark.parametrize("proxy", [None, "http://proxy.example:3128"])
@pytest.mark.parametrize("url", ["https://account.blob.core.windows.net/", "http://127.0.0.1:10000/devstoreaccount1"])
def test_every_pool_of_the_storage_transport_is_idle_limited_also_through_a_proxy(proxy, url) -> None:
    adapter = requests_transport().session.get_adapter(url)
    manager = adapter.proxy_manager_for(proxy) if proxy else adapter.poolmanager
    pool = manager.connection_from_url(url)  # no request is sent
    expected = HTTPSConnectionPool if url.startswith("https") else HTTPConnectionPool
    assert isinstance(pool, expected) and isinstance(pool, http_session._IdleLimited)
