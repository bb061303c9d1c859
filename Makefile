# `make` runs every check CI and reviewers care about: tests, lint, format, types.
VENV ?= .venv
PY := $(VENV)/bin/python

.PHONY: all check test lint format-check types format bench install

all: check

check: test lint format-check types

install:
	python3 -m venv $(VENV)
	$(VENV)/bin/pip install -q -e '.[dev]'

test:
	$(PY) -m pytest -q

lint:
	$(PY) -m ruff check .

format-check:
	$(PY) -m ruff format --check .

types:
	$(PY) -m mypy

format:
	$(PY) -m ruff format .
	$(PY) -m ruff check --fix .

bench:
	$(PY) bench/local.py
