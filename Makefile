# TelemetryPulse: every command of SPEC §1. Targets run from the repo root; the local stack is the dev kit's
# (`python -m devkit`, devkit/local_stack.py: state in .devstack/, Kafka jars cached in ~/.cache/telemetrypulse).

PYTHON ?= python3.11
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.install-stamp
DEVSTACK := $(PY) -m devkit
PYTEST_ARGS ?=
SUDO := $(if $(filter 0,$(shell id -u)),,sudo)

.PHONY: install run test up down bench bench-quick faults lint migrate

install: $(STAMP) /usr/bin/chromium

$(PY):
	$(PYTHON) -m venv $(VENV)

# Re-installed only when pyproject.toml changes (the stamp is newer otherwise).
$(STAMP): pyproject.toml | $(PY)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[test]'
	touch $@

# The browser test drives Debian's Chromium; CI machines start without it.
/usr/bin/chromium:
	$(SUDO) apt-get update -q
	DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -q --no-install-recommends chromium

up: install
	$(DEVSTACK) up

down: install
	$(DEVSTACK) down

# Starts the stack if absent and stops afterwards only what it started (also on failure);
# exits with pytest's code.
test: install
	$(DEVSTACK) with-stack -- $(PY) -m pytest -p no:cacheprovider $(PYTEST_ARGS)

faults: install
	$(DEVSTACK) with-stack -- $(PY) -m pytest -p no:cacheprovider tests/faults $(PYTEST_ARGS)

bench: install
	$(DEVSTACK) with-stack -- $(PY) -m bench

# For iterating on the engine (≤ 3 min): throughput on both datasets beside the baselines, and a shortened keep-up
# phase (with its rate ladder); writes bench/results/quick.md.
bench-quick: install
	$(DEVSTACK) with-stack -- $(PY) -m bench --quick --phases throughput,keepup

# Stack, migrations, worker + API + simulator; Ctrl-C stops everything this started.
run: install
	$(DEVSTACK) run

migrate: install
	$(VENV)/bin/telemetrypulse migrate

lint: install
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
