"""A run record never keeps a customer's address: run records outlive the destination (DELETE keeps them, for audit)
and operators read them. ExportService on the in-memory ports of tests/unit/export_fakes.py over real files."""
from __future__ import annotations

import logging
from pathlib import Path

from tests.unit.export_fakes import drain, make, write_snapshot


def test_a_snapshot_that_loses_its_header_before_planning_fails_without_its_columns_in_the_run_record(tmp_path: Path,
                                                                                                      caplog) -> None:
    # the header is there when the export starts, gone when it is planned: the first row's address and name are now
    # the snapshot's "columns", and the mapping's Email is not among them
    write_snapshot(tmp_path, "Seg", "2026/11/28/1700", ["amy.fourth@contoso.com"])
    svc, _ = make(tmp_path, ["Seg"])
    run = svc.start("d1", "http")
    (tmp_path / "Seg/2026/11/28/1700/part-0.csv").write_text("amy.fourth@contoso.com,Amy\r\n")

    with caplog.at_level(logging.INFO):
        drain(svc)

    failed = svc.get_run(run.id)
    assert failed.status == "failed"
    assert "amy.fourth" not in repr(failed) and "Amy" not in failed.message
    assert "amy.fourth" not in caplog.text
    # what the admin needs: which mapped columns, how many the snapshot has, what to check, and nothing was sent
    assert "mapped column(s) ['Email', 'FirstName'] missing" in failed.message, failed.message
    assert "among the snapshot's 2 column(s)" in failed.message and "header row" in failed.message
    assert "nothing was sent" in failed.message
