# The two commands a newcomer needs:  make run  and  make test.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin

.PHONY: run manage test test-fast lint format venv bench clean

venv: $(VENV)/.installed

# Development install (runtime + tests, lint, SDKs, Playwright); again when either file changes.
$(VENV)/.installed: requirements.txt requirements-dev.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --disable-pip-version-check -r requirements-dev.txt
	touch $@

# Gateway + admin on http://127.0.0.1:$(PORT) with a demo workspace, key and mock provider (SQLite,
# no Redis); the mock provider listens on $(MOCK_PORT). Another port: make run PORT=8001.
PORT      ?= 8000
MOCK_PORT ?= 9100
run: venv
	DEBUG=true $(BIN)/python manage.py migrate --noinput
	DEBUG=true $(BIN)/python manage.py run_demo --port $(PORT) --mock-port $(MOCK_PORT)

# Any management command with this checkout's settings, e.g. make manage ARGS=createsuperuser.
# (`.venv/bin/python manage.py ...` is the same: the secret make run generated is in var/.)
ARGS ?= help
manage: venv
	$(BIN)/python manage.py $(ARGS)

# The whole test suite against whatever DATABASE_URL / REDIS_URL say (default: embedded SQLite),
# spread over TEST_WORKERS processes (pytest-xdist; each has its own test database and Redis keys).
TEST_WORKERS ?= 2
test: venv
	$(BIN)/pytest -n $(TEST_WORKERS)

# The quick loop while developing: the same without the browser tests, the fault drills
# (tests/browser, tests/reliability) and the slow tests (long generated-input runs, tests that
# start processes: tests/conftest.py SLOW_FILES; tests that wait seconds on a real timer). CI runs the whole suite (make test).
# Only the slow tests use hypothesis and schemathesis, so their pytest plugins stay unloaded;
# compiled (and assertion-rewritten) modules are kept under var/pycache, even when
# PYTHONDONTWRITEBYTECODE is set, so each worker does not compile every test file again;
# --dist worksteal: a worker that finishes early takes tests from the other one's queue.
test-fast: venv
	PYTHONPYCACHEPREFIX=$(CURDIR)/var/pycache PYTHONDONTWRITEBYTECODE= $(BIN)/pytest -n $(TEST_WORKERS) \
		--dist worksteal -p no:schemathesis -p no:hypothesispytest -m "not browser and not reliability and not slow"

lint: venv
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/lint-imports

format: venv
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

# Portico vs direct vs LiteLLM's proxy and Portkey's gateway (installed on first use into
# $$TMPDIR/portico-bench-peers), production setup: a fresh Postgres database on
# 127.0.0.1:5432, Redis 127.0.0.1:6379/15, Celery worker + beat. Then the memory check.
# Results in bench/out/. Extra options: make bench BENCH_ARGS="--workers 1,2 --wait-quiet 300"
BENCH_ARGS ?=
bench: venv
	$(BIN)/python bench/gateway_overhead.py --peers $(BENCH_ARGS)
	$(BIN)/python bench/bench_memory.py

clean:
	rm -rf $(VENV) var staticfiles
