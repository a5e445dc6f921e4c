# Developer entry points. Everything runs from the virtualenv in .venv, which `make demo`
# and `make venv` create and refresh whenever pyproject.toml changes.
#
# .venv is the main combination of the supported matrix: Python 3.13 + the newest Django it
# takes (6.1). PYTHON picks another interpreter (make venv PYTHON=python3.12); by default the
# first Python 3.13 found in pyenv's versions or on PATH, else python3. A .venv that exists
# keeps its interpreter (rm -rf .venv to change it).
define FIND_PYTHON
for p in "$${PYENV_ROOT:-$$HOME/.pyenv}"/versions/3.13.*/bin/python3.13 python3.13; do \
	if "$$p" -c "" >/dev/null 2>&1; then echo "$$p"; exit 0; fi; \
done; echo python3
endef
PYTHON ?= $(shell $(FIND_PYTHON))
VENV := .venv
BIN := $(VENV)/bin
PYTEST_ARGS ?=
# Passed to nox by test-matrix, e.g. NOX_ARGS="--error-on-missing-interpreters" (CI).
NOX_ARGS ?=

# Two stamps in the one virtualenv: `make demo` installs the package with the `demo` extra
# only (what the demo runs on); `make venv`/`make test` add the `dev` extra (test tools,
# linters, nox, build, twine).
DEMO_STAMP := $(VENV)/.installed-demo.stamp
DEV_STAMP := $(VENV)/.installed-dev.stamp

# Exit 0 when PostgreSQL (127.0.0.1:5432) and Redis (127.0.0.1:6379) both accept
# a TCP connection; otherwise name the unreachable ones and exit 1.
define CHECK_SERVICES
import socket, sys
down = []
for name, port in (("PostgreSQL", 5432), ("Redis", 6379)):
    try:
        socket.create_connection(("127.0.0.1", port), timeout=2).close()
    except OSError:
        down.append(f"{name} at 127.0.0.1:{port}")
if down:
    print("unreachable: " + ", ".join(down))
    sys.exit(1)
endef
export CHECK_SERVICES

.PHONY: venv demo-venv docs test test-default test-serverless test-services test-matrix dist \
	demo lint typecheck fmt bench clean

venv: $(DEV_STAMP)

demo-venv: $(DEMO_STAMP)

$(VENV)/bin/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --upgrade pip

$(DEMO_STAMP): pyproject.toml | $(VENV)/bin/python
	$(BIN)/python -m pip install -e '.[demo]'
	touch $@

$(DEV_STAMP): pyproject.toml | $(VENV)/bin/python
	$(BIN)/python -m pip install -e '.[dev,demo]'
	touch $@

# What CI runs: mypy (typecheck) and the docs site; the whole suite on the main combination
# (.venv) on SQLite + LocMem, the storage tests on the database cache, the whole suite on
# PostgreSQL + Redis; then the fast suite on every other supported Python x Django
# (noxfile.py) and a virtualenv without Celery; then the wheel and the sdist, checked by twine.
test: venv
	@$(BIN)/python -c "import django, sys; print('main combination: Python', sys.version.split()[0], '+ Django', django.get_version())"
	$(MAKE) --no-print-directory typecheck
	$(MAKE) --no-print-directory docs
	$(MAKE) --no-print-directory test-default
	$(MAKE) --no-print-directory test-serverless
	$(MAKE) --no-print-directory test-services
	$(MAKE) --no-print-directory test-matrix
	$(MAKE) --no-print-directory dist

test-default: venv
	CB_DATABASE=sqlite CB_CACHE=locmem $(BIN)/pytest $(PYTEST_ARGS)

# The storage-level tests again on the demo's server-less default: the database cache,
# whose incr is not atomic (the counters move to the CircuitCounter table).
SERVERLESS_TESTS := tests/test_store.py tests/test_hot_path.py tests/test_breaker.py \
	tests/test_multiprocess.py tests/test_sync.py
test-serverless: venv
	CB_DATABASE=sqlite CB_CACHE=database $(BIN)/pytest $(PYTEST_ARGS) $(SERVERLESS_TESTS)

# The fast suite on every other supported combination, and the no-Celery virtualenv:
# nox's sessions tagged matrix, MATRIX_JOBS (default 3) at a time.
test-matrix: venv
	.ci/matrix $(NOX_ARGS)

# The wheel and sdist in dist/, checked by twine (README renders as the long description).
dist: venv
	rm -rf dist
	$(BIN)/python -m build --outdir dist .
	$(BIN)/twine check --strict dist/*

# Skipped with a message when a service is down, unless REQUIRE_SERVICES=1. The packaging
# tests do not depend on the backends: test-default ran them.
SERVICES_ARGS ?= -m "not packaging" $(PYTEST_ARGS)
test-services: venv
	@if $(BIN)/python -c "$$CHECK_SERVICES"; then \
		echo "CB_DATABASE=postgres CB_CACHE=redis $(BIN)/pytest $(SERVICES_ARGS)"; \
		CB_DATABASE=postgres CB_CACHE=redis $(BIN)/pytest $(SERVICES_ARGS); \
	elif [ "$${REQUIRE_SERVICES:-}" = "1" ]; then \
		echo "test-services: REQUIRE_SERVICES=1 but a service is down" >&2; \
		exit 1; \
	else \
		echo "test-services: skipped (set REQUIRE_SERVICES=1 to make this an error)"; \
	fi

demo: demo-venv
	$(BIN)/python -m demo_project.launcher

lint: venv
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(MAKE) --no-print-directory typecheck

# mypy with django-stubs on the package ([tool.mypy] in pyproject.toml).
typecheck: venv
	$(BIN)/python -m mypy

fmt: venv
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

# Side-by-side benchmarks against the peers; writes docs/benchmarks.md and docs/*.png.
# Uses wrk for the HTTP part when installed (apt-get install wrk), else a Python load
# generator. Redis: $(CB_BENCH_REDIS_URL), default redis://127.0.0.1:6379/8. BENCH_ARGS are
# passed on (e.g. BENCH_ARGS="--parts overhead,fleet").
BENCH_ARGS ?=
BENCH_STAMP := $(VENV)/.bench-extra.stamp

$(BENCH_STAMP): pyproject.toml $(DEV_STAMP)
	$(BIN)/python -m pip install -e '.[dev,demo,bench]'
	touch $@

bench: venv $(BENCH_STAMP)
	$(BIN)/python -m benchmarks $(BENCH_ARGS)

# The documentation site from docs/ and mkdocs.yml, into site/; warnings are errors.
DOCS_STAMP := $(VENV)/.docs-extra.stamp

$(DOCS_STAMP): pyproject.toml | venv
	$(BIN)/python -m pip install -e '.[docs]'
	touch $@

docs: venv $(DOCS_STAMP)
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict

clean:
	rm -rf $(VENV) .nox site build dist *.egg-info .pytest_cache .ruff_cache .mypy_cache \
		.hypothesis test-results .pytest-*.sqlite3* var
	find . -name __pycache__ -type d -prune -exec rm -rf {} +
