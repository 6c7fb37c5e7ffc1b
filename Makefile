# Profile Enrichment: two commands do everything on a fresh machine.
#   make run    venv + pinned deps, demo data, the pipeline, an export
#   make test   lint (ruff, sqlfluff), pytest, and a full dbt build on small generated data
SHELL := /bin/bash
.DEFAULT_GOAL := help

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
PE := $(BIN)/profile-enrichment

# Demo data for `make run`: sized so a first run is a few minutes, most of it installing.
DEMO_CUSTOMERS ?= 5000
DEMO_DAYS ?= 730
DEMO_SEED ?= 7
DEMO_RAW := data/raw

export DBT_PROFILES_DIR := $(CURDIR)
export DBT_SEND_ANONYMOUS_USAGE_STATS := false
export DO_NOT_TRACK := 1

.PHONY: help venv run report chromium postgres java test test-slow test-engines lint fmt pytest e2e bench docs clean distclean

help:  ## list the targets
	@grep -E '^[a-z0-9-]+:.*##' $(MAKEFILE_LIST) | sed 's/:.*## /\t/' | column -t -s $$'\t'

$(STAMP): pyproject.toml requirements.lock requirements-test.txt
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "Python 3.11+ is required, found " + sys.version.split()[0])'
	@test -d $(VENV) || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check --upgrade "pip>=24"
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -c requirements.lock -e '.[dev,bench]'
	$(BIN)/python -m pip install --quiet --disable-pip-version-check --no-deps -r requirements-test.txt
	@touch $(STAMP)

venv: $(STAMP)  ## create .venv and install the pinned dependencies

# The other engines' dbt adapters (dbt-postgres, dbt-spark + pyspark ~460 MB): only for
# `make test-engines` (and users of those targets); `make run` stays lean.
ENGINES_STAMP := $(VENV)/.engines-installed
$(ENGINES_STAMP): $(STAMP)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -c requirements.lock -e '.[dev,bench,postgres,spark]'
	@touch $(ENGINES_STAMP)

run: $(STAMP)  ## demo data, the whole pipeline, an export and the HTML report
	$(PE) generate --customers $(DEMO_CUSTOMERS) --days $(DEMO_DAYS) --seed $(DEMO_SEED) --out $(DEMO_RAW) --if-changed
	$(PE) run --raw $(DEMO_RAW)

report: $(STAMP)  ## rewrite the HTML model report (data/reports/index.html)
	$(PE) report

lint: $(STAMP)  ## ruff + sqlfluff (dbt templater, in-memory ci target)
	$(BIN)/ruff check src tests python_models
	$(BIN)/ruff format --check src tests python_models
	$(BIN)/sqlfluff lint models macros tests --processes 2

fmt: $(STAMP)  ## auto-format Python and fix SQL style
	$(BIN)/ruff format src tests python_models
	$(BIN)/ruff check --fix src tests python_models
	$(BIN)/sqlfluff fix models tests --processes 2

pytest: $(STAMP) chromium  ## the pytest suite (includes end-to-end dbt runs on small data)
	$(BIN)/pytest -q -m "not slow and not engines and not spark"

test-slow: $(STAMP)  ## the slow tests: SIGKILL crash safety of run and export (~10 min)
	$(BIN)/pytest -q -m slow -s

e2e: $(STAMP)  ## a full dbt build on small generated data, in memory
	$(PE) generate --customers 1500 --days 540 --seed 11 --out data/ci/raw --if-changed
	$(PE) run --raw data/ci/raw --target ci

# The report's browser test renders it in real headless Chromium (Debian's package).
chromium:  ## install Debian's chromium when missing (the report's browser test needs it)
	@command -v chromium >/dev/null 2>&1 || { \
		echo "installing chromium (apt-get)"; \
		SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
		$$SUDO apt-get update -qq && \
		DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq --no-install-recommends chromium; }

test: lint chromium pytest e2e  ## lint, the pytest suite and an end-to-end run (CI runs it first)

# The engine tests start their own PostgreSQL server (initdb + pg_ctl) from Debian's package.
postgres:  ## install Debian's postgresql when missing (the engine tests start their own server)
	@ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || command -v initdb >/dev/null 2>&1 || { \
		echo "installing postgresql (apt-get)"; \
		SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
		$$SUDO apt-get update -qq && \
		DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq --no-install-recommends postgresql; }

java:  ## install Debian's openjdk-17-jre-headless when java is missing (Spark needs it)
	@command -v java >/dev/null 2>&1 || { \
		echo "installing openjdk-17-jre-headless (apt-get)"; \
		SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
		$$SUDO apt-get update -qq && \
		DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq --no-install-recommends openjdk-17-jre-headless; }

# PostgreSQL and Spark: each builds the project from the same generated files and is compared
# with the DuckDB build row by row (~10 min, Spark's local session is most of it).
test-engines: $(ENGINES_STAMP) postgres java  ## the project on PostgreSQL and Spark: dbt build + tests, row-by-row equality with DuckDB, SQL scoring
	$(BIN)/pytest -q -m "engines or spark"

# The benchmark: ~1M customers / ~20M events over 2 years (data cached in data/bench/), the
# pipeline's stages and the raw DuckDB / pandas / lifetimes baselines in one run. Results go to
# bench/results/. BENCH_CUSTOMERS=20000 is a quick run; it runs under nice, DuckDB capped at 8GB.
BENCH_CUSTOMERS ?= 1000000
bench: $(STAMP)  ## benchmark at ~20M events vs raw DuckDB, pandas, lifetimes (bench/results/)
	nice -n 10 $(PE) bench --customers $(BENCH_CUSTOMERS)

docs: $(STAMP)  ## dbt docs generate (target/index.html)
	$(BIN)/dbt docs generate --target ci --vars '{raw_profiles: false}' --empty-catalog

clean:  ## remove build output and the warehouse (keeps .venv)
	rm -rf target logs data dbt_packages

distclean: clean  ## also remove the virtual environment
	rm -rf $(VENV)
