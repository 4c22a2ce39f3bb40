# The two commands: `make demo` and `make test`. Each creates .venv if missing and installs what it needs
# with the locked versions in constraints.txt.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# what `make demo` needs: the package without its dev extras (pytest, mypy, playwright ...): ~90 s
# instead of ~113 s on a fresh clone here, of the demo's 3-minute budget
RUNTIME_STAMP := $(VENV)/.installed-runtime
export PREFECT_SERVER_ANALYTICS_ENABLED ?= false
export DO_NOT_TRACK ?= 1

.PHONY: install test check demo bench format lock clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

$(STAMP): pyproject.toml constraints.txt | $(BIN)/python
	$(BIN)/python -m pip install -q --disable-pip-version-check -c constraints.txt -e '.[dev]'
	@touch $(STAMP) $(RUNTIME_STAMP)

$(RUNTIME_STAMP): pyproject.toml constraints.txt | $(BIN)/python
	$(BIN)/python -m pip install -q --disable-pip-version-check -c constraints.txt -e .
	@touch $(RUNTIME_STAMP)

install: $(STAMP)

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
bench: $(STAMP)
	@mkdir -p bench-results
	RUNBOOK_HOME=$${RUNBOOK_HOME:-$(CURDIR)/.runbook} $(BIN)/runbook bench ingest --vs-alertmanager --json > bench-results/ingest.json || true
	RUNBOOK_HOME=$${RUNBOOK_HOME:-$(CURDIR)/.runbook} $(BIN)/runbook bench ingest --ledger postgres --vs-alertmanager --json > bench-results/ingest-postgres.json || true
	RUNBOOK_HOME=$${RUNBOOK_HOME:-$(CURDIR)/.runbook} $(BIN)/runbook bench mitigate-db --json > bench-results/mitigate-db.json || true
	RUNBOOK_HOME=$${RUNBOOK_HOME:-$(CURDIR)/.runbook} $(BIN)/runbook bench latency --json > bench-results/latency.json || true
	RUNBOOK_HOME=$${RUNBOOK_HOME:-$(CURDIR)/.runbook} $(BIN)/runbook bench overhead --json > bench-results/overhead.json || true
	RUNBOOK_HOME=$${RUNBOOK_HOME:-$(CURDIR)/.runbook} $(BIN)/runbook bench scale --json > bench-results/scale.json || true
	@ls -l bench-results

# Re-lock after changing dependencies in pyproject.toml.
lock:
	$(BIN)/python -m pip freeze --exclude-editable | grep -v '^runbook' > constraints.txt

clean:
	rm -rf $(VENV) .runbook .pytest_cache .mypy_cache .ruff_cache
