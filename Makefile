# Alpha Panda: `make run` and `make test` work on a fresh machine with only python3.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.DEFAULT_GOAL := help
.PHONY: help venv run test test-unit lint format typecheck check bench bench-backtest clean

help: ## list the targets
	@grep -E '^[a-z-]+:.*?## ' $(MAKEFILE_LIST) | awk 'BEGIN {FS = ":.*?## "}; {printf "  %-18s %s\n", $$1, $$2}'

EXAMPLE_PLUGIN := examples/alpha_panda_example_strategy

# The example strategy plug-in is installed too: the tests run it through its entry point.
$(STAMP): pyproject.toml $(EXAMPLE_PLUGIN)/pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]' -e $(EXAMPLE_PLUGIN)
	touch $(STAMP)

venv: $(STAMP) ## create or update .venv

# `make run` is a demo that should trade at any hour: unless the environment says
# otherwise, the mock feed ticks outside NSE sessions and risk does not enforce them.
run: export ALPHA_PANDA_FEED_SESSIONS_ONLY ?= false
run: export ALPHA_PANDA_MARKET_ENFORCE_SESSIONS ?= false
run: $(STAMP) ## run the whole pipeline on the embedded broker (Ctrl-C stops it)
	$(BIN)/alpha-panda run

test: $(STAMP) ## the whole suite: unit, contract, integration (embedded broker, PostgreSQL, Redis)
	$(BIN)/python -m pytest -q -ra

test-unit: $(STAMP) ## unit and contract tests only (with the example plug-in's)
	$(BIN)/python -m pytest -q tests/unit tests/contract examples

lint: $(STAMP) ## ruff lint and format check, the layering contract (pyproject.toml)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/lint-imports

format: $(STAMP) ## apply ruff formatting and fixes
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

typecheck: $(STAMP) ## mypy on the packages
	$(BIN)/mypy

check: lint typecheck test ## what CI runs: lint, type check, the whole suite

bench: $(STAMP) ## pipeline benchmark against raw aiokafka (prints numbers)
	$(BIN)/python scripts/bench.py

bench-backtest: $(STAMP) ## backtest ticks/s over 1,000,000 ticks (prints; JSON in var/)
	mkdir -p var
	$(BIN)/python scripts/bench_backtest.py --json var/bench_backtest.json

clean: ## remove the virtualenv and runtime data
	rm -rf $(VENV) var .pytest_cache .mypy_cache .ruff_cache
