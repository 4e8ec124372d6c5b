# Every target sets up .venv on first use, so `make run` and `make test` work on a fresh machine.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp
PORT ?= 8080
WORKERS ?= 10

.DEFAULT_GOAL := help

$(STAMP): pyproject.toml requirements.lock
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -r requirements.lock
	$(BIN)/python -m pip install -q --no-deps -e .
	@touch $(STAMP)

.PHONY: help setup run test lint durations bench loadtest emulator toolserver lock
help: ## show this help
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk 'BEGIN{FS=":.*## "}{printf "  make %-10s %s\n", $$1, $$2}'

setup: $(STAMP) ## create .venv and install the locked dependencies

# /stats is on the operations listener: VOICEBOT_OPS_PORT, default 127.0.0.1:9464.
run: $(STAMP) ## serve calls on :8080 (emulator when GEMINI_API_KEY is unset); /stats on 127.0.0.1:9464
	$(BIN)/voicebot serve --port $(PORT)

# End-to-end tests mostly wait on real-time audio, so WORKERS (default 10) xdist workers share
# two cores, each kind of test on its own (tests/roles.py): gw0 runs the cpu_heavy tests one at
# a time, gw1 the unit tests one at a time, the other eight the calls, so at most two tests
# want a core at once beside the calls; once their kind is done, gw0 and gw1 take calls too.
# tests/schedule.py deals each kind to its workers, the long tests first (tests/durations.json).
# Workers are forks of one process that imported the code (tests/xdist_workers.py). About
# 1 min 30 s on 2 cores at the usual speed (README, Tests).
# tests/warm_caches.py first writes the bytecode (and pytest's rewritten test modules) that
# every worker would otherwise compile again, since PYTHONDONTWRITEBYTECODE stops them writing it.
test: $(STAMP) ## run the offline test suite (unit + end-to-end over loopback, WORKERS=10)
	$(BIN)/python -m tests.warm_caches
	$(BIN)/pytest -n $(WORKERS) --dist worksteal

durations: $(STAMP) ## re-measure the long tests into tests/durations.json (the suite's schedule)
	$(BIN)/python -m tests.warm_caches
	$(BIN)/pytest -n $(WORKERS) --dist worksteal --store-durations

lint: $(STAMP) ## ruff + mypy
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

emulator: $(STAMP) ## run the Live API emulator on its own (prints its url and ca_file)
	$(BIN)/voicebot emulator

toolserver: $(STAMP) ## the example booking service of appointments.yaml's HTTP tools, on :8095
	$(BIN)/python -m sim.tool_server

loadtest: $(STAMP) ## 50 simulated calls against a server on :$(PORT)
	$(BIN)/voicebot loadtest --url http://127.0.0.1:$(PORT) --calls 50 --concurrency 25 --report loadtest-report

bench: $(STAMP) ## capacity on phone lines vs our bare relay baseline (~30 min, by hand; BENCH_ARGS=--quick: ~5)
	$(BIN)/python -m sim.bench $(BENCH_ARGS)

lock: ## re-resolve requirements.lock from pyproject.toml
	rm -rf .lockenv && $(PYTHON) -m venv .lockenv
	.lockenv/bin/pip install -q --upgrade pip && .lockenv/bin/pip install -q -e '.[dev,fast]'
	.lockenv/bin/pip freeze --exclude-editable | grep -v '^voicebot' > requirements.lock
	rm -rf .lockenv
