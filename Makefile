# hrms_pipelines — everything runs from a local virtual environment in .venv/.
# Needs only Python 3.11+, make and the package index.

PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
LOCAL  := $(PY) -m hrms_pipelines.local run --

.PHONY: demo dev test install bench clean

$(VENV)/.installed: pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "Python 3.11+ is needed; run: make PYTHON=python3.11 ...")'
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[test]'
	@touch $@

install: $(VENV)/.installed

## Apply the migrations, seed and import the sample company on the embedded PostgreSQL.
demo: install
	$(LOCAL) $(PY) -m hrms_pipelines.demo

## Open the Dagster UI (webserver + daemon) on http://127.0.0.1:3000 ; Ctrl-C stops everything.
dev: install
	$(LOCAL) $(VENV)/bin/dagster dev -w workspace.yaml -h 127.0.0.1 -p 3000

## Run the whole test suite against a real (embedded) PostgreSQL.
test: install
	$(PY) -m pytest $(PYTEST_ARGS)

## Run every benchmark under bench/ (each prints its figure beside a baseline and the ratio).
bench: install
	for script in bench/*_bench.py; do $(LOCAL) $(PY) $$script || exit 1; done

clean:
	rm -rf $(VENV) .hrms
