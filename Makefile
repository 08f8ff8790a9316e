# One-command entry points. Everything installs from this repository's own files.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python

.PHONY: install chromium run up down sample test test-unit test-deep bench clean

install: $(VENV)/.installed node_modules/.installed

## The browser tests (make test only) use Debian's Chromium; installed with apt-get when missing and this user may (CI runs as root).
chromium:
	@test -x /usr/bin/chromium || { test "$$(id -u)" = 0 && (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null) || echo "Chromium is missing: sudo apt-get install chromium (browser tests need it)"; }

$(VENV)/.installed: requirements.txt requirements-dev.txt
	@test -x $(PY) || $(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "$(PYTHON) is Python " + sys.version.split()[0] + ": the app needs 3.11 or newer (3.11 is what Azure runs it on and what is tested); run make PYTHON=python3.11 ...")'
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -r requirements-dev.txt
	touch $@

node_modules/.installed: package.json package-lock.json
	npm ci --no-audit --no-fund --loglevel=error
	touch $@

## See an export happen: start everything, export a generated 20,000-profile segment, show the result, keep the stack up until Ctrl-C.
run: install
	$(PY) -m scripts.stack demo

## Start / stop the local stack in the background (writes .local/stack.env).
up: install
	$(PY) -m scripts.stack up

down:
	@test -x $(PY) && $(PY) -m scripts.stack down || true

## Drop a generated segment snapshot into the running stack (ROWS=5000 SEGMENT=HighValueCustomers).
sample: install
	$(PY) -m scripts.stack sample --rows $(or $(ROWS),5000) --segment $(or $(SEGMENT),HighValueCustomers)

## The whole test suite: offline infra checks (checkov, shellcheck, azure-functions-doctor), then pytest, which starts its own
## Azurite, local Mailchimp and Functions hosts on free ports, in TEST_WORKERS parallel sessions (pytest-xdist; most of
## the suite waits on those services, so 4 workers pay even on 2 cores; tests/conftest.py says what stays together).
TEST_WORKERS ?= 4

test: install chromium
	bash scripts/check_infra.sh
	$(PY) -m pytest -n $(TEST_WORKERS) --dist loadgroup

test-unit: install
	$(PY) -m pytest tests/unit

## The crash and invariant sweeps in depth (not part of `make test`, which runs a spread of them within its 15 minutes):
## a crash before and after every call of the replayed exports, and 200 Hypothesis examples of exports interleaved
## with changes by hand. 17-42 minutes here (2 cores; README.md, Tests, gives the runs).
test-deep: install
	EXPORT_CRASH_POINTS=all EXPORT_INVARIANT_EXAMPLES=200 $(PY) -m pytest -n $(TEST_WORKERS) --dist loadgroup \
	  tests/integration/test_export_service_replay.py tests/integration/test_export_crash_sweep_existing_audience.py \
	  tests/integration/test_export_invariants.py

## The connector at each of BENCH_ROWS, with a 1 %-changed refresh after its first run, and the plain official-SDK
## script (bench/sdk_plain.py) on the same rows where there are at most BENCH_SDK_MAX_ROWS (the script's time grows
## with the rows, one call after another: about 45 minutes for 1,000,000 with the realistic latency profile).
BENCH_ROWS ?= 100000 1000000
BENCH_SDK_MAX_ROWS ?= 100000

bench: install
	@echo "make bench on $$(git describe --always --dirty 2>/dev/null || echo 'an unknown commit'), $$(date -u '+%Y-%m-%d %H:%M UTC')"
	$(PY) bench/mailchimp_client.py
	$(PY) bench/planning.py
	for rows in $(BENCH_ROWS); do \
	  if [ $$rows -le $(BENCH_SDK_MAX_ROWS) ]; then sdk=--sdk; else sdk=--no-sdk; fi; \
	  $(PY) bench/export_end_to_end.py --rows $$rows --refresh-changed 1 $$sdk || exit 1; done

## Stop the stack and delete its data: Azurite's and the local Mailchimp's state, secrets, sign-in tokens, logs.
clean:
	@if test -x $(PY); then $(PY) -m scripts.stack clean; else rm -rf .local; fi
