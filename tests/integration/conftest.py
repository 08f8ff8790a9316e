"""Fixtures of the integration tests that drive the export service (export_driver.py)."""
from __future__ import annotations

import pytest


@pytest.fixture(scope="module")
def storage(storage_accounts):
    """Empty storage for the module, a storage account of its own on the session's Azurite (tests/conftest.py,
    StorageAccounts): nothing of another module's runs or destinations is visible."""
    account = storage_accounts.fresh()
    yield account
    storage_accounts.empty(account)
