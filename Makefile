# Developer entry points. Everything runs from the virtualenv in .venv, which
# `make venv` creates and refreshes whenever pyproject.toml changes.

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
PYTEST_ARGS ?=

# The stamp name records whether the package existed at install time, so the
# editable install is redone once when circuitbreaker_app/ first appears.
STAMP := $(VENV)/.installed-$(if $(wildcard circuitbreaker_app/__init__.py),pkg,nopkg).stamp

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

.PHONY: venv docs test test-default test-serverless test-services demo lint fmt bench clean

venv: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --upgrade pip
	$(BIN)/python -m pip install -e '.[dev,demo]'
	rm -f $(VENV)/.installed-*.stamp
	touch $@

# Whole suite on the defaults (SQLite + LocMem), then on PostgreSQL + Redis.
test: venv
	$(MAKE) --no-print-directory docs
	$(MAKE) --no-print-directory test-default
	$(MAKE) --no-print-directory test-serverless
	$(MAKE) --no-print-directory test-services

test-default: venv
	CB_DATABASE=sqlite CB_CACHE=locmem $(BIN)/pytest $(PYTEST_ARGS)

# The storage-level tests again on the demo's server-less default: the database cache,
# whose incr is not atomic (the counters move to the CircuitCounter table).
SERVERLESS_TESTS := tests/test_store.py tests/test_hot_path.py tests/test_breaker.py \
	tests/test_multiprocess.py tests/test_sync.py
test-serverless: venv
	CB_DATABASE=sqlite CB_CACHE=database $(BIN)/pytest $(PYTEST_ARGS) $(SERVERLESS_TESTS)

# Skipped with a message when a service is down, unless REQUIRE_SERVICES=1.
test-services: venv
	@if $(BIN)/python -c "$$CHECK_SERVICES"; then \
		echo "CB_DATABASE=postgres CB_CACHE=redis $(BIN)/pytest $(PYTEST_ARGS)"; \
		CB_DATABASE=postgres CB_CACHE=redis $(BIN)/pytest $(PYTEST_ARGS); \
	elif [ "$${REQUIRE_SERVICES:-}" = "1" ]; then \
		echo "test-services: REQUIRE_SERVICES=1 but a service is down" >&2; \
		exit 1; \
	else \
		echo "test-services: skipped (set REQUIRE_SERVICES=1 to make this an error)"; \
	fi

demo: venv
	$(BIN)/python -m demo_project.launcher

lint: venv
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

fmt: venv
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

# Side-by-side benchmarks against the peers; writes docs/benchmarks.md and docs/*.png.
# Uses wrk for the HTTP part when installed (apt-get install wrk), else a Python load
# generator. Redis: $(CB_BENCH_REDIS_URL), default redis://127.0.0.1:6379/8. BENCH_ARGS are
# passed on (e.g. BENCH_ARGS="--parts overhead,fleet").
BENCH_ARGS ?=
BENCH_STAMP := $(VENV)/.bench-extra.stamp

$(BENCH_STAMP): pyproject.toml $(STAMP)
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
	rm -rf $(VENV) site build dist *.egg-info .pytest_cache .ruff_cache .mypy_cache \
		.hypothesis test-results .pytest-*.sqlite3* var
	find . -name __pycache__ -type d -prune -exec rm -rf {} +
