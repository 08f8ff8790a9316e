"""Session-wide real services. Each test resets what it uses; none shares state through module globals."""
from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.services import Azurite, LocalMailchimp, start_azurite, start_local_mailchimp  # noqa: E402


@pytest.fixture(scope="session")
def azurite() -> Azurite:
    server = start_azurite()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def mailchimp_server() -> LocalMailchimp:
    server = start_local_mailchimp()
    yield server
    server.stop()


@pytest.fixture
def mailchimp(mailchimp_server: LocalMailchimp) -> LocalMailchimp:
    """The local Mailchimp, reset to its demo account and audience, with no faults and no latency."""
    mailchimp_server.reset()
    return mailchimp_server
