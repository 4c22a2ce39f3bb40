# The two commands: `make demo` and `make test`. Each creates .venv if missing and installs what it needs
# with the locked versions in constraints.txt.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# what `make demo` needs: the package without its dev extras (pytest, mypy, playwright ...): ~90 s
# instead of ~113 s on a fresh clone here, of the demo's 3-minute budget
RUNTIME_STAMP := $(VENV)/.installed-runtime
# the Prefect server's own installation for `make bench` (scale): Python 3.13, where Prefect's datetimes
# are the standard library's instead of pendulum's (11-17 % less server CPU in a storm, README)
# (the first python3.13 that runs: on PATH, or one pyenv installed)
SERVER_PYTHON ?= $(shell for p in python3.13 $(wildcard $(HOME)/.pyenv/versions/3.13*/bin/python3.13); do \
	$$p -c '' 2>/dev/null && { command -v $$p; break; }; done)
SERVER_VENV ?= .venv-server
export PREFECT_SERVER_ANALYTICS_ENABLED ?= false
export DO_NOT_TRACK ?= 1

.PHONY: install test check demo bench server-venv format lock clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

$(STAMP): pyproject.toml constraints.txt | $(BIN)/python
	$(BIN)/python -m pip install -q --disable-pip-version-check -c constraints.txt -e '.[dev]'
	@touch $(STAMP) $(RUNTIME_STAMP)

$(RUNTIME_STAMP): pyproject.toml constraints.txt | $(BIN)/python
	$(BIN)/python -m pip install -q --disable-pip-version-check -c constraints.txt -e .
	@touch $(RUNTIME_STAMP)

install: $(STAMP)

# the server's installation: this project's locked prefect and prefect-redis on $(SERVER_PYTHON)
$(SERVER_VENV)/.installed: constraints.txt
	@test -n "$(SERVER_PYTHON)" || { echo "server-venv: no python3.13 found; set SERVER_PYTHON=/path/to/python3.13"; exit 2; }
	$(SERVER_PYTHON) -m venv $(SERVER_VENV)
	$(SERVER_VENV)/bin/python -m pip install -q --disable-pip-version-check -c constraints.txt prefect prefect-redis
	@touch $@

server-venv: $(SERVER_VENV)/.installed

test: $(STAMP)
	$(BIN)/pytest

check: $(STAMP)
	$(BIN)/ruff format --check .
	$(BIN)/ruff check .
	$(BIN)/mypy runbook flows tasks blocks

format: $(STAMP)
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

demo: $(RUNTIME_STAMP)
	RUNBOOK_HOME=$${RUNBOOK_HOME:-$(CURDIR)/.runbook} $(BIN)/runbook drill

# Every benchmark, one JSON object each, into bench-results/ (gitignored); minutes, not seconds. A
# bench that misses its target exits 1; the others run anyway (read the JSON files).
# bench scale runs its Prefect server from $(SERVER_VENV) when a Python 3.13 is found, else from .venv
bench: $(STAMP) $(if $(SERVER_PYTHON),$(SERVER_VENV)/.installed)
	@mkdir -p bench-results
	RUNBOOK_HOME=$${RUNBOOK_HOME:-$(CURDIR)/.runbook} $(BIN)/runbook bench ingest --vs-alertmanager --json > bench-results/ingest.json || true
	RUNBOOK_HOME=$${RUNBOOK_HOME:-$(CURDIR)/.runbook} $(BIN)/runbook bench ingest --ledger postgres --vs-alertmanager --json > bench-results/ingest-postgres.json || true
	RUNBOOK_HOME=$${RUNBOOK_HOME:-$(CURDIR)/.runbook} $(BIN)/runbook bench mitigate-db --json > bench-results/mitigate-db.json || true
	RUNBOOK_HOME=$${RUNBOOK_HOME:-$(CURDIR)/.runbook} $(BIN)/runbook bench latency --json > bench-results/latency.json || true
	RUNBOOK_HOME=$${RUNBOOK_HOME:-$(CURDIR)/.runbook} $(BIN)/runbook bench overhead --json > bench-results/overhead.json || true
	RUNBOOK_HOME=$${RUNBOOK_HOME:-$(CURDIR)/.runbook} $(BIN)/runbook bench scale --json $(if $(SERVER_PYTHON),--server-prefect $(SERVER_VENV)/bin/prefect) > bench-results/scale.json || true
	@ls -l bench-results

# Re-lock after changing dependencies in pyproject.toml.
lock:
	$(BIN)/python -m pip freeze --exclude-editable | grep -v '^runbook' > constraints.txt

clean:
	rm -rf $(VENV) $(SERVER_VENV) .runbook .pytest_cache .mypy_cache .ruff_cache
