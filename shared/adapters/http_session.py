"""The requests layer under the storage SDKs: a session that takes its settings from the environment once per host
instead of at every request, and connection pools that reuse no connection idle for longer than its server announced it
keeps one open (50 s if it announced nothing)."""
from __future__ import annotations

import copy
import logging
import os
import re
import time
from typing import Any
from urllib.parse import urlsplit

import requests
from requests.adapters import HTTPAdapter
from requests.models import PreparedRequest
from requests.sessions import merge_setting
from requests.utils import get_environ_proxies, get_netrc_auth
from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool

log = logging.getLogger(__name__)

# Seconds a pooled connection may sit idle and still be reused when its server announces no shorter keep-alive: under
# the 4-minute idle timeout of Azure's load balancer (learn.microsoft.com/azure/load-balancer/load-balancer-tcp-reset)
# and the 90-120 s at which HTTP front ends commonly close idle connections. Azurite announces 5 s (Keep-Alive:
# timeout=5) and closes at 6 s: its connections get 4 s (idle_limit).
IDLE_SECONDS = 50.0
_ANNOUNCED = re.compile(r'(?:^|[\s,;])timeout\s*=\s*"?(\d{1,6}(?:\.\d{1,6})?)(?![\d.])', re.IGNORECASE)


def _as_is(request: PreparedRequest) -> PreparedRequest:
    """The auth of a request its host's netrc entry (none) says nothing for: requests then looks no further."""
    return request


class EnvironmentOnce(requests.Session):
    """requests.Session, but the proxies (HTTP(S)_PROXY, NO_PROXY) and CA bundle (REQUESTS_CA_BUNDLE, CURL_CA_BUNDLE)
    it takes from the environment are read once per scheme and host. requests reads them at every request, scanning
    all of os.environ twice for proxies: about a third of the CPU of a storage call (0.3-0.9 ms), which the app makes
    some 20 of per chunk. The environment does not change while the app runs; what is used from it stays the same.
    So is the netrc file (NETRC, ~/.netrc) requests looks for at every request without auth of its own: 2 % of a
    host's CPU in a scheduled refresh (sampled with py-spy), in file-system lookups that find nothing."""

    def __init__(self) -> None:
        super().__init__()
        self._environment: dict[tuple[str, str], tuple[dict[str, str], str | None]] = {}
        self._netrc: dict[tuple[str, str], Any] = {}

    def prepare_request(self, request: requests.Request) -> PreparedRequest:
        """As requests does it, with the netrc entry of the URL's scheme and host looked up once. Where the netrc names
        nobody, a no-op auth stands in (so requests looks no further), unless the URL holds credentials of its own,
        which requests then takes. That auth makes requests measure the body once more: the bodies sent here are
        bytes (a file-like body that cannot be measured would raise)."""
        if self.trust_env and not request.auth and not self.auth:
            parts = urlsplit(request.url)
            key = parts[:2]
            if key not in self._netrc:
                self._netrc[key] = get_netrc_auth(request.url) or _as_is
            auth = self._netrc[key]
            if auth is not _as_is or not (parts.username or parts.password):
                request = copy.copy(request)  # the caller's request is left as it was
                request.auth = auth
        return super().prepare_request(request)

    def merge_environment_settings(self, url: str, proxies: dict[str, str] | None, stream: bool | None, verify: Any,
                                   cert: Any) -> dict[str, Any]:
        if not self.trust_env or (proxies and proxies.get("no_proxy")):  # a no_proxy of the call's own: as requests
            return super().merge_environment_settings(url, proxies, stream, verify, cert)
        host = urlsplit(url)[:2]
        found = self._environment.get(host)
        if found is None:
            found = get_environ_proxies(url), os.environ.get("REQUESTS_CA_BUNDLE") or os.environ.get("CURL_CA_BUNDLE")
            self._environment[host] = found
        environment_proxies, bundle = found
        if proxies is not None:
            for scheme, proxy in environment_proxies.items():
                proxies.setdefault(scheme, proxy)
        if verify is True or verify is None:
            verify = bundle or verify
        return {"proxies": merge_setting(proxies, self.proxies), "stream": merge_setting(stream, self.stream),
                "verify": merge_setting(verify, self.verify), "cert": merge_setting(cert, self.cert)}


def idle_limit(keep_alive: str | None) -> float:
    """Seconds a connection may sit idle and still be reused, from the keep-alive timeout its server announced with its
    last answer (`Keep-Alive: timeout=N`; the smallest if several): a second under N (half of N under 2 s), and never
    more than IDLE_SECONDS. A value the server could not mean (over six digits before or after a point) is ignored: an
    advisory header never fails a request the server has done."""
    announced = [float(value) for value in _ANNOUNCED.findall(keep_alive or "")]
    if not announced:
        return IDLE_SECONDS
    timeout = min(announced)
    return min(IDLE_SECONDS, timeout - min(1.0, timeout / 2))


class _IdleLimited:
    """A urllib3 pool that closes, instead of reusing, a connection idle for longer than its server keeps one open
    (idle_limit). urllib3 checks that a pooled connection is still open before reusing it, but a server closing it as
    idle at that moment resets the request sent on it ("Connection reset by peer", "Remote end closed connection
    without response"). Against Azurite, 35 of 1,024 table writes sent just as it closed their connections (idle 6 s)
    failed so; none did with this limit. The tables SDK does not retry a POST or PATCH (insert, merge, batch) after a
    connection error (azure-core retries those methods on a 500, 503 or 504 answer only; the blob and queue SDKs retry
    any method): the handler failed, to do its work again on the message's next delivery. A connection closed here is
    opened again, as urllib3 does with one it finds closed."""

    def _make_request(self, conn: Any, *args: Any, **kwargs: Any) -> Any:
        response = super()._make_request(conn, *args, **kwargs)  # type: ignore[misc]
        conn.idle_limit = idle_limit(response.headers.get("Keep-Alive"))
        return response

    def _get_conn(self, timeout: float | None = None) -> Any:
        connection = super()._get_conn(timeout)  # type: ignore[misc]
        idle_since = getattr(connection, "idle_since", None)
        if idle_since is not None and connection.sock is not None:
            idle = time.monotonic() - idle_since
            if idle > getattr(connection, "idle_limit", IDLE_SECONDS):
                log.debug("storage connection idle %.1f s, over its server's limit: opened again", idle)
                connection.close()
        return connection

    def _put_conn(self, connection: Any) -> None:
        if connection is not None:
            connection.idle_since = time.monotonic()
        super()._put_conn(connection)  # type: ignore[misc]


class _IdleLimitedHTTPPool(_IdleLimited, HTTPConnectionPool):
    pass


class _IdleLimitedHTTPSPool(_IdleLimited, HTTPSConnectionPool):
    pass


_IDLE_LIMITED_POOLS = {"http": _IdleLimitedHTTPPool, "https": _IdleLimitedHTTPSPool}


class IdleLimitedAdapter(HTTPAdapter):
    """requests' adapter, with pools that reuse no connection idle for longer than its server keeps one open
    (_IdleLimited), also through an HTTP(S) proxy. A SOCKS proxy keeps urllib3's own pools: not limited."""

    def init_poolmanager(self, *args: Any, **kwargs: Any) -> None:
        super().init_poolmanager(*args, **kwargs)
        self.poolmanager.pool_classes_by_scheme = _IDLE_LIMITED_POOLS

    def proxy_manager_for(self, proxy: str, **proxy_kwargs: Any) -> Any:
        manager = super().proxy_manager_for(proxy, **proxy_kwargs)
        if not proxy.lower().startswith("socks"):
            manager.pool_classes_by_scheme = _IDLE_LIMITED_POOLS
        return manager
