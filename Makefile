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
# Bytecode compiled at install: every `dagster` process (the CLI, a run worker, the webserver) then
# starts without compiling Dagster from source, even where PYTHONDONTWRITEBYTECODE is set (as in many
# container images), which otherwise costs each process seconds of CPU.
export UV_COMPILE_BYTECODE    := 1

.PHONY: demo dev test install install-docs lock bench docs screenshots plots clean

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

# The `docs` extra (mkdocs-material, matplotlib) on top of the default set, for `make docs`, `make
# plots` and `make test` (whose test_docs.py builds the manual). `uv sync` is exact, so a later plain
# install removes it again; this stamp is then older than .installed and the next target re-adds it.
$(VENV)/.installed-docs: $(VENV)/.installed
	@$(UV) sync --locked --extra test --extra docs --quiet
	@touch $@

install-docs: $(VENV)/.installed-docs

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

## Run the whole test suite against a real (embedded) PostgreSQL (with the docs extra: the manual's build is a test),
## on one pytest-xdist worker per core (at most 4), each with its own embedded servers; TEST_WORKERS=0 runs it in one process.
## Bytecode caches are written (PYTHONDONTWRITEBYTECODE cleared): the test processes and the hundred `dagster`
## subprocesses the tests start would otherwise each recompile the project and pytest's rewritten test modules.
TEST_WORKERS ?= $(shell $(PYTHON) -c 'import os; print(min(4, len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1))')
test: install-docs
	PYTHONDONTWRITEBYTECODE= $(PY) -m pytest -n $(TEST_WORKERS) --dist loadgroup $(PYTEST_ARGS)

## Run every benchmark under bench/ (each prints its figure beside a baseline and the ratio).
bench: install
	for script in bench/*_bench.py; do $(LOCAL) $(PY) $$script || exit 1; done

## Build the manual (docs/ -> site/) with mkdocs-material; --strict: a broken link or a missing page fails.
docs: install-docs
	NO_MKDOCS_2_WARNING=1 $(VENV)/bin/mkdocs build --strict --site-dir site

## Retake the UI screenshots in docs/images/ with the browser tests (Debian's Chromium at /usr/bin/chromium).
screenshots: install
	HRMS_SCREENSHOTS_DIR=$(CURDIR)/docs/images $(PY) -m pytest hrms_pipelines_tests/e2e -x -q $(PYTEST_ARGS)

## Redraw the benchmark plots in docs/images/ from the benches' JSON. By default the committed runs in
## bench/results/: today's nightly bench and the same bench on the tree before change capture (f13bf73,
## bench/before/nightly_bench_f13bf73.py), drawn dashed. NIGHTLY_JSON=FILE draws another nightly run
## (made first, at 10k and 100k events, when FILE does not exist); NIGHTLY_BEFORE_JSON= (empty) draws
## no before line; PEERS_JSON=FILE adds the peers plot (bench/peers_bench.py --json).
NIGHTLY_JSON        ?= bench/results/nightly-today.json
NIGHTLY_BEFORE_JSON ?= bench/results/nightly-before-change-capture.json
PEERS_JSON          ?=
plots: install-docs
	@mkdir -p $(dir $(NIGHTLY_JSON))
	test -s $(NIGHTLY_JSON) || $(LOCAL) $(PY) bench/nightly_bench.py --sizes 10000 100000 --repeat 2 --no-first-import --json $(NIGHTLY_JSON)
	$(PY) docs/plots.py --nightly $(NIGHTLY_JSON) $(if $(NIGHTLY_BEFORE_JSON),--nightly-before $(NIGHTLY_BEFORE_JSON)) \
		$(if $(PEERS_JSON),--peers $(PEERS_JSON)) --out docs/images

clean:
	rm -rf $(VENV) .hrms site
