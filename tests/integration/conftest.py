"""Fixtures of the integration tests that drive the export service (export_driver.py)."""
from __future__ import annotations

import pytest

from tests.services import start_azurite


@pytest.fixture(scope="module")
def storage():
    """A fresh Azurite for the module: nothing of another module's runs or destinations is visible."""
    server = start_azurite()
    yield server
    server.stop()
