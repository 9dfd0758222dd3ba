# partnerpost: `make run` serves the demo, `make test` runs every check.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
DEMO := service/demo/kommunalpartnerschaften-ukraine.txt
HOST ?= 127.0.0.1
PORT ?= 8000

.PHONY: run test lint typecheck pytest install install-dev golden bench clean container-test

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(VENV)/.installed: $(BIN)/python pyproject.toml
	$(BIN)/pip install --quiet -e .
	touch $@

$(VENV)/.installed-dev: $(BIN)/python pyproject.toml
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(VENV)/.installed $@

install: $(VENV)/.installed
install-dev: $(VENV)/.installed-dev

run: export PARTNERPOST_HOST = $(HOST)
run: export PARTNERPOST_PORT = $(PORT)
run: install
	$(BIN)/partnerpost db upgrade
	$(BIN)/partnerpost ingest $(DEMO)
	$(BIN)/partnerpost serve --host $(HOST) --port $(PORT)

lint: install-dev
	$(BIN)/ruff check service tests bench
	$(BIN)/ruff format --check service tests bench

typecheck: install-dev
	$(BIN)/mypy

pytest: install-dev
	$(BIN)/pytest -n 3 --cov --cov-report=term:skip-covered $(PYTEST_ARGS)

test: lint typecheck pytest

# Build the image on a base image made from Debian packages and run it (needs dockerd,
# mmdebstrap, docker-compose; see README "Operating"). Not part of `make test`.
container-test: install-dev
	$(BIN)/pytest -m container tests/container -p no:cacheprovider $(PYTEST_ARGS)

# Every benchmark against its floor, medians, table into docs/PERFORMANCE.md (a few minutes).
# The floors need Debian's nginx-light, wrk and postfix (for smtp-sink).
bench: install-dev
	@for tool in nginx wrk smtp-sink; do PATH="$$PATH:/usr/sbin" command -v $$tool >/dev/null || \
	  { echo "bench needs $$tool: apt-get install nginx-light wrk postfix" >&2; exit 1; }; done
	$(BIN)/python bench/run_all.py

# Rewrite the expected files in tests/data/ from the current code; review the diff.
golden: install-dev
	PARTNERPOST_UPDATE_GOLDEN=1 $(BIN)/pytest tests/test_golden.py tests/test_digest_golden.py

clean:
	rm -rf $(VENV) var feeds/*.xml feeds/*.atom feeds/*.json feeds/themen
