# Parley developer commands.  `make test` is exactly what CI runs (.ci/run).
#
#   make run     run the service locally (Redis, web, worker): python -m parley.local
#   make test    install everything the tests need, then run pytest
#   make bench   run the benchmarks (python -m bench)
#   make lint    ruff and mypy (installs them into .venv)
#
# Variables: PYTHON (interpreter for the venv, default python3), ARGS (extra
# arguments for run/bench, e.g. make run ARGS="--port 9000 --workers 2"),
# PYTEST_ARGS (e.g. make test PYTEST_ARGS="-x -k restart").

SHELL := /bin/bash
.DEFAULT_GOAL := help

PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip --disable-pip-version-check -q
ARGS ?=
PYTEST_ARGS ?=

.PHONY: help run test bench lint redis-server chromium clean

help:
	@sed -n 's/^#   //p' $(MAKEFILE_LIST)

# -- virtualenv and installs (stamp files make repeated runs instant) -------------------

$(PY):
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else 1)' 2>/dev/null || { \
	  echo "error: Parley needs Python 3.11 or newer; '$(PYTHON)' is $$($(PYTHON) --version 2>&1 || echo missing)." >&2; \
	  echo "       Run again with PYTHON=/path/to/python3.11 (e.g. make test PYTHON=python3.11)." >&2; \
	  exit 1; }
	@echo "creating $(VENV) with $$($(PYTHON) --version)"
	@$(PYTHON) -m venv $(VENV) || { rm -rf $(VENV); \
	  echo "error: '$(PYTHON) -m venv' failed; on Debian/Ubuntu install python3-venv." >&2; exit 1; }

# Reinstalled when pyproject.toml changes (or the stamp is missing).
$(VENV)/.installed-local: pyproject.toml | $(PY)
	@echo "installing parley[local] into $(VENV)"
	@$(PIP) install -e '.[local]'
	@touch $@

$(VENV)/.installed-lint: pyproject.toml | $(PY)
	@echo "installing parley[test,lint] into $(VENV)"
	@$(PIP) install -e '.[test,lint]'
	@touch $@

$(VENV)/.installed-test: pyproject.toml | $(PY)
	@echo "installing parley[test] into $(VENV)"
	@$(PIP) install -e '.[test]'
	@touch $@

# The integration tests run a real Redis: Debian's redis-server.
redis-server:
	@if command -v redis-server >/dev/null 2>&1; then \
	  :; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	  echo "redis-server not found: installing Debian's redis-server package"; \
	  export DEBIAN_FRONTEND=noninteractive; \
	  apt-get update -qq && apt-get install -y -qq --no-install-recommends redis-server >/dev/null \
	    && command -v redis-server >/dev/null \
	    || { echo "error: apt-get install redis-server failed" >&2; exit 1; }; \
	  echo "installed $$(redis-server --version)"; \
	else \
	  echo "error: the integration tests need a real Redis server and redis-server is not on PATH." >&2; \
	  echo "       Install it, then run make test again:" >&2; \
	  echo "         Debian/Ubuntu: sudo apt-get install redis-server" >&2; \
	  echo "         macOS:         brew install redis" >&2; \
	  exit 1; \
	fi

# The browser tests (tests/browser) drive Debian's chromium through Playwright (never `playwright install`).
chromium:
	@if [ -n "$$PARLEY_TEST_CHROMIUM" ] || command -v chromium >/dev/null 2>&1; then \
	  :; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	  echo "chromium not found: installing Debian's chromium package"; \
	  export DEBIAN_FRONTEND=noninteractive; \
	  apt-get update -qq && apt-get install -y -qq --no-install-recommends chromium fonts-dejavu-core >/dev/null \
	    && command -v chromium >/dev/null \
	    || { echo "error: apt-get install chromium failed" >&2; exit 1; }; \
	  echo "installed $$(chromium --version)"; \
	else \
	  echo "error: the browser tests need Chromium and chromium is not on PATH." >&2; \
	  echo "       Install it (Debian/Ubuntu: sudo apt-get install chromium), or point" >&2; \
	  echo "       PARLEY_TEST_CHROMIUM at a Chromium or Chrome binary, then run make test again." >&2; \
	  exit 1; \
	fi

# -- commands ---------------------------------------------------------------------------

run: $(VENV)/.installed-local
	$(PY) -m parley.local $(ARGS)

test: $(VENV)/.installed-test redis-server chromium
	$(PY) -m pytest $(PYTEST_ARGS)

bench: $(VENV)/.installed-test
	$(PY) -m bench $(ARGS)

# mypy runs no code, so it cannot follow the editable install's import hook, and no search path
# names api/ as parley.api. (setuptools' other editable modes do not help: `compat` puts the
# checkout on sys.path, which breaks the mapping; `strict` builds a link tree under build/, and
# mypy would report errors in it.) So mypy is handed every module with its installed name and its
# real file, from setup.py's map (`modules()`): errors name the files you edit (api/main.py), and
# each module is checked once, under the name it is imported by (shared/tools/ as parley.tools
# only; the repository root plays the namespace `parley`); tests/ come in by `-p tests`.
# The price: mypy's command line cannot say "this file is that module", so this calls what is
# behind it (process_options, run_build, BuildSource with a module name, the hidden
# --fast-module-lookup that resolves imports from those sources) and tells mypy's file cache that
# the root has an __init__.py, which that lookup wants on every level. None of it is documented
# API: a mypy upgrade (the lint extra pins <2) may need this block adjusted; it fails loudly then.
define MYPY_WITH_ROOMS
import os, runpy, sys, time
from mypy.fscache import FileSystemCache
from mypy.main import process_options, run_build
from mypy.modulefinder import BuildSource
from mypy.util import count_stats
rooms = runpy.run_path("setup.py", run_name="setup")["modules"]()
fscache = FileSystemCache()
sources, options = process_options(["--fast-module-lookup", *sys.argv[1:]], fscache=fscache)
parley = [BuildSource("__init__.py", "parley", text=""), *(BuildSource(path, name) for name, path in rooms.items())]
fscache.stat_or_none_cache["__init__.py"] = os.stat("setup.py")
print(f"mypy: the {len(rooms)} modules of parley.* (setup.py's map) and", *sys.argv[1:], flush=True)
_, messages, blockers = run_build(parley + sources, options, fscache, time.time(), sys.stdout, sys.stderr)
errors, _, files = count_stats(messages)
print(f"Found {errors} errors in {files} files" if errors else "Success: no issues found", f"({len(parley + sources)} source files)")
sys.exit(1 if errors or blockers else 0)
endef
export MYPY_WITH_ROOMS

lint: $(VENV)/.installed-lint
	@status=0; \
	 if $(PY) -m ruff --version >/dev/null 2>&1; then RUFF="$(PY) -m ruff"; \
	 elif command -v ruff >/dev/null 2>&1; then RUFF=ruff; \
	 else RUFF=; echo "ruff is not installed (pip install ruff): skipped"; fi; \
	 if [ -n "$$RUFF" ]; then echo "ruff check ."; $$RUFF check . || status=1; fi; \
	 if $(PY) -m mypy --version >/dev/null 2>&1; then \
	  $(PY) -c "$$MYPY_WITH_ROOMS" -p tests || status=1; \
	 else echo "mypy is not installed (pip install mypy): skipped"; fi; \
	 exit $$status

clean:
	rm -rf $(VENV) build dist *.egg-info .pytest_cache .ruff_cache .mypy_cache
