"""The benchmark scripts still run: `make bench` is not part of `make test`, and a bench that broke with the code it
measures (a removed function it called) would only show when someone reproduces a README figure. Small sizes: this
checks that they run and what they report, not how fast."""
from __future__ import annotations

import re
import subprocess
import sys

import pytest

from tests.services import ROOT


@pytest.mark.parametrize("refresh", [[], ["--refresh-changed", "1"], ["--refresh-changed", "1", "--memo"],
                                     ["--refresh-changed", "1", "--memo", "--segments", "1"]])
def test_the_planning_benchmark_runs_each_way_at_a_small_size(refresh: list[str]) -> None:
    done = subprocess.run([sys.executable, "bench/planning.py", "--rows", "3000", "--audience", "500", *refresh],
                          cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert re.search(r"^planned 3,000 rows -> [\d,]+ members", done.stdout, re.M), done.stdout
    assert "RESULT:" in done.stdout
    known = int(re.search(r"rows known from the memo \(skipped unread\): ([\d,]+)", done.stdout)[1].replace(",", ""))
    assert (known > 2000) if "--memo" in refresh else known == 0, done.stdout
