# hrms_pipelines — everything runs from a local virtual environment in .venv/.
# Needs only Python 3.11+, make and the package index. Dependencies are locked in uv.lock: after
# adding or changing one in pyproject.toml, run `make lock` and commit uv.lock with it.

PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
UV     := $(VENV)/bin/uv
LOCAL  := $(PY) -m hrms_pipelines.local run --

# uv installs into this project's .venv, whichever virtual environment the shell has active
# (UV_PROJECT_ENVIRONMENT; `--active` would pick the shell's), and never downloads a Python of its
# own. uv reads no pip configuration: packages come from PyPI, at the URLs and hashes in uv.lock.
export UV_PROJECT_ENVIRONMENT := $(CURDIR)/$(VENV)
export UV_PYTHON_DOWNLOADS    := never

.PHONY: demo dev test install lock bench clean

# Installs exactly uv.lock: every package pinned, hash-checked, the project itself editable.
# `--locked` (not `--frozen`): uv checks that uv.lock still matches pyproject.toml and refuses to
# install when it does not; `--frozen` would install the stale lock without a word.
$(VENV)/.installed: pyproject.toml uv.lock
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "Python 3.11+ is needed; run: make PYTHON=python3.11 ...")'
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	@$(PY) tools/bootstrap_uv.py
	@$(UV) sync --locked --extra test --quiet || { \
	  echo "make install: uv sync --locked failed (see above). If uv.lock \"needs to be updated\", pyproject.toml" >&2; \
	  echo "changed without a new lock: run 'make lock' and commit uv.lock with pyproject.toml." >&2; exit 1; }
	@touch $@

install: $(VENV)/.installed

## Refresh uv.lock after changing dependencies in pyproject.toml, then commit uv.lock with it.
## Keeps every other pin; `make lock UV_LOCK_ARGS=--upgrade` (or `--upgrade-package NAME`) moves them.
lock:
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	@$(PY) tools/bootstrap_uv.py
	$(UV) lock $(UV_LOCK_ARGS)

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
