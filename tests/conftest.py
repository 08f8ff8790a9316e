"""Session-wide real services. Each test resets what it uses; none shares state through module globals."""
from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.services import Azurite, LocalMailchimp, start_azurite, start_local_mailchimp, table_service  # noqa: E402


# --- parallel runs (pytest-xdist: `make test` runs `pytest -n 4 --dist loadgroup`) --------------------------------------
# Each worker is a session of its own: its own Azurite and local Mailchimp (session fixtures above), on free ports, with
# its own tmp_path. Tests are handed out one by one, except these, which stay together on one worker, in file order:
# - every test of a module that uses a module- or class-scoped fixture (a stack, a driver, an Azurite for the module):
#   its tests share that fixture's state, and the session's local Mailchimp its module fixtures wrote to, as when run
#   alone; spread over workers, another module's test could reset that Mailchimp between two of them;
# - the browser tests (both modules): they write their screenshots to one folder, tests/browser/artifacts/, which each
#   module empties when it starts.
_SHARED_SCOPES = {"module", "class", "package"}


def _xdist_group(item: pytest.Item) -> str | None:
    module = item.nodeid.split("::", 1)[0]
    if module.startswith("tests/browser/"):
        return "tests/browser"
    fixtures = getattr(item, "_fixtureinfo", None)
    for definitions in (fixtures.name2fixturedefs.values() if fixtures else ()):
        if any(definition.scope in _SHARED_SCOPES for definition in definitions):
            return module
    return None


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "xdist_group(name): run on one xdist worker with the other tests of that group")


@pytest.hookimpl(tryfirst=True)  # before xdist reads the marks (its own hook appends the group to each node id)
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        group = _xdist_group(item)
        if group:
            item.add_marker(pytest.mark.xdist_group(group))


@pytest.fixture(scope="session")
def azurite() -> Azurite:
    server = start_azurite()
    yield server
    server.stop()


class StorageAccounts:
    """Empty storage accounts, one per caller: the accounts of one Azurite (each has its own containers, queues and
    tables, so nothing one caller writes is seen by another), and a new Azurite when they are used up. Starting an
    Azurite takes about 2 s; the e2e tests, which each want empty storage, used to start one per test."""

    PER_AZURITE = 60

    def __init__(self) -> None:
        self.server: Azurite | None = None
        self.unused: list[str] = []

    def fresh(self) -> Azurite:
        if not self.unused:
            self.close()
            self.server = start_azurite(extra_accounts=self.PER_AZURITE)
            self.unused = list(self.server.accounts[1:])
        return self.server.for_account(self.unused.pop(0))

    @staticmethod
    def empty(account: Azurite) -> None:
        """Delete what the account holds (never used again; this keeps the shared Azurite's memory small)."""
        from azure.storage.blob import BlobServiceClient
        from azure.storage.queue import QueueServiceClient

        from azure.core.exceptions import AzureError

        blobs = BlobServiceClient.from_connection_string(account.connection_string)
        queues = QueueServiceClient.from_connection_string(account.connection_string)
        tables = table_service(account.connection_string)
        try:
            for container in blobs.list_containers():
                blobs.delete_container(container.name)
            for queue in queues.list_queues():
                queues.delete_queue(queue.name)
            for table in tables.list_tables():
                tables.delete_table(table.name)
        except AzureError:
            pass  # housekeeping only: the account is never handed out again

    def close(self) -> None:
        if self.server is not None:
            self.server.stop()
            self.server = None


@pytest.fixture(scope="session")
def storage_accounts() -> StorageAccounts:
    accounts = StorageAccounts()
    yield accounts
    accounts.close()


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
