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
# `make docs` (and `make test`) add the `docs` extra.
DOCS_STAMP := $(VENV)/.docs-extra.stamp

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
	test-sqlite test-services-shared test-solo demo lint typecheck fmt bench clean

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
# (.venv) on SQLite + LocMem, the storage tests on the database cache, the suite on
# PostgreSQL + Redis without the tests marked backend_independent; the fast suite on every other supported Python x Django
# (noxfile.py) and a virtualenv without Celery; the wheel and the sdist, checked by twine.
# In two parts, so that both cores stay busy (one after the other it took 33 minutes, most
# of them with one core idle while a test waited for its processes, servers or browser):
# 1. at once (.ci/parallel; each log is printed whole when its part ends): typecheck, docs,
#    test-sqlite (test-default then test-serverless), test-services-shared and the matrix
#    (two sessions at a time beside the suites, not three: fewer processes per core; run
#    at niceness 10 its sessions starved past the wall-clock windows of some tests, e.g.
#    the admin's 29-30 s countdown), all without the tests marked solo;
# 2. alone: the tests marked solo (fleets of processes, outages under load: they assert
#    bounds that need a machine not busy with other tests) on both variants, then the dist.
# The two suites of part 1 run at the same time, so the PostgreSQL + Redis one has a Redis
# database, a PostgreSQL test database and a loopback port range of its own (SHARED_*
# below; tests flush their Redis database). Every test runs where it ran before.
# (The docs extra is installed first: pip must not touch .venv while the suites run.)
test: venv $(DOCS_STAMP)
	@$(BIN)/python -c "import django, sys; print('main combination: Python', sys.version.split()[0], '+ Django', django.get_version())"
	MAKE="$(MAKE)" MATRIX_JOBS=$${MATRIX_JOBS:-2} .ci/parallel typecheck docs test-sqlite \
		test-services-shared test-matrix
	$(MAKE) --no-print-directory test-solo
	$(MAKE) --no-print-directory dist

# Part 1's SQLite + LocMem suite (test-default then test-serverless), without the solo tests.
test-sqlite: venv
	$(MAKE) --no-print-directory test-default DEFAULT_ARGS='-m "not solo"'
	$(MAKE) --no-print-directory test-serverless SERVERLESS_ARGS='-m "not solo"'

# Part 1's PostgreSQL + Redis suite, without the solo tests, on a Redis database, a
# PostgreSQL test database and loopback ports of its own (test-sqlite runs at the same time).
SHARED_REDIS_URL ?= redis://127.0.0.1:6379/14
SHARED_POSTGRES_TEST_NAME ?= test_circuitbreaker_shared
SHARED_TEST_PORTS ?= 18500-18599
test-services-shared: venv
	CB_REDIS_URL=$(SHARED_REDIS_URL) CB_POSTGRES_TEST_NAME=$(SHARED_POSTGRES_TEST_NAME) \
		CB_TEST_PORTS=$(SHARED_TEST_PORTS) $(MAKE) --no-print-directory test-services \
		SERVICES_ARGS='-m "not backend_independent and not solo" $(PYTEST_ARGS)'

# Part 2: the solo tests alone, on SQLite + LocMem, on the database cache and on
# PostgreSQL + Redis.
test-solo: venv
	$(MAKE) --no-print-directory test-default DEFAULT_ARGS='-m solo'
	$(MAKE) --no-print-directory test-serverless SERVERLESS_ARGS='-m solo'
	$(MAKE) --no-print-directory test-services \
		SERVICES_ARGS='-m "solo and not backend_independent" $(PYTEST_ARGS)'

DEFAULT_ARGS ?=
test-default: venv
	CB_DATABASE=sqlite CB_CACHE=locmem $(BIN)/pytest $(DEFAULT_ARGS) $(PYTEST_ARGS)

# The storage-level tests again on the demo's server-less default: the database cache,
# whose incr is not atomic (the counters move to the CircuitCounter table); and the peers'
# scenarios (tests/test_peer_*.py), which must hold on every backend.
SERVERLESS_TESTS := tests/test_store.py tests/test_hot_path.py tests/test_breaker.py \
	tests/test_multiprocess.py tests/test_sync.py tests/test_peer_scenarios.py \
	tests/test_peer_resilience4j.py tests/test_peer_polly.py tests/test_peer_polly_v7.py \
	tests/test_peer_python.py
SERVERLESS_ARGS ?=
test-serverless: venv
	CB_DATABASE=sqlite CB_CACHE=database $(BIN)/pytest $(SERVERLESS_ARGS) $(PYTEST_ARGS) \
		$(SERVERLESS_TESTS)

# The fast suite on every other supported combination, and the no-Celery virtualenv:
# nox's sessions tagged matrix, MATRIX_JOBS (default 3) at a time.
test-matrix: venv
	.ci/matrix $(NOX_ARGS)

# The wheel and sdist in dist/, checked by twine (README renders as the long description).
dist: venv
	rm -rf dist
	$(BIN)/python -m build --outdir dist .
	$(BIN)/twine check --strict dist/*

# Skipped with a message when a service is down, unless REQUIRE_SERVICES=1. The tests
# marked backend_independent (their result does not depend on CB_DATABASE / CB_CACHE:
# layout, docs, text, the pure core, packaging, browser, demo, Redis topologies) ran in
# test-default.
SERVICES_ARGS ?= -m "not backend_independent" $(PYTEST_ARGS)
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

$(DOCS_STAMP): pyproject.toml | venv
	$(BIN)/python -m pip install -e '.[docs]'
	touch $@

docs: venv $(DOCS_STAMP)
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict

clean:
	rm -rf $(VENV) .nox .ci/logs site build dist *.egg-info .pytest_cache .ruff_cache .mypy_cache \
		.hypothesis test-results .pytest-*.sqlite3* var
	find . -name __pycache__ -type d -prune -exec rm -rf {} +
