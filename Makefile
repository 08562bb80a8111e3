# The two commands a newcomer needs:  make run  and  make test.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin

.PHONY: run test lint format venv bench clean

venv: $(VENV)/.installed

$(VENV)/.installed: requirements.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --disable-pip-version-check -r requirements.txt
	touch $@

# Gateway + admin on http://127.0.0.1:8000 with a demo workspace, key and mock provider (SQLite, no Redis).
run: venv
	DEBUG=true $(BIN)/python manage.py migrate --noinput
	DEBUG=true $(BIN)/python manage.py run_demo

# The whole test suite against whatever DATABASE_URL / REDIS_URL say (default: embedded SQLite).
test: venv
	$(BIN)/pytest

lint: venv
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

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
