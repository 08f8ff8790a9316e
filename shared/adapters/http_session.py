"""A requests session that takes its settings from the environment once per host instead of at every request."""
from __future__ import annotations

import os
from typing import Any
from urllib.parse import urlsplit

import requests
from requests.sessions import merge_setting
from requests.utils import get_environ_proxies


class EnvironmentOnce(requests.Session):
    """requests.Session, but the proxies (HTTP(S)_PROXY, NO_PROXY) and CA bundle (REQUESTS_CA_BUNDLE, CURL_CA_BUNDLE)
    it takes from the environment are read once per scheme and host. requests reads them at every request, scanning
    all of os.environ twice for proxies: about a third of the CPU of a storage call (0.3-0.9 ms), which the app makes
    some 20 of per chunk. The environment does not change while the app runs; what is used from it stays the same."""

    def __init__(self) -> None:
        super().__init__()
        self._environment: dict[tuple[str, str], tuple[dict[str, str], str | None]] = {}

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
