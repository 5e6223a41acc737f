# The two commands of the README: `make demo` and `make test`. Both set themselves up first.
VENV ?= .venv
PY := $(VENV)/bin/python
export ALIGNREC_HOME ?= $(HOME)/.cache/alignrec
export TORCH_EXTENSIONS_DIR ?= $(ALIGNREC_HOME)/torch_extensions
export HF_HUB_OFFLINE := 1
export TOKENIZERS_PARALLELISM := false
DEMO_CONFIG ?= configs/demo_ml100k.yaml

.PHONY: setup demo test test-slow lint bench

setup:
	@bash scripts/setup.sh

demo: setup
	$(VENV)/bin/alignrec run --config $(DEMO_CONFIG)

test: setup
	$(PY) -m pytest -n 2 --dist loadfile -q

test-slow: setup
	$(PY) -m pytest -m slow -q

lint: setup
	$(VENV)/bin/ruff check .
	$(VENV)/bin/lint-imports
