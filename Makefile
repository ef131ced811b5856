# Thin wrappers: every target is one or two commands you could type yourself.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
CHECKOV := .tools/checkov

.PHONY: help venv test lint typecheck pytest demo bench fuzz system-deps clean

help:
	@echo "make demo   - run the chat app, the inference app and a local Firestore, offline"
	@echo "make test   - create .venv and run every check: lint, type check and tests"
	@echo "make bench  - run the benchmarks in bench/ and print their tables"
	@echo "make fuzz   - search for inputs that give 5xx, FUZZ_EXAMPLES per route (default 2000)"

# One environment for development and tests; `pulumi up` installs only requirements.txt.
$(VENV)/.installed: requirements.txt requirements-dev.txt app/chat/requirements.txt app/inference/requirements.txt app/tuning/requirements.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --quiet --disable-pip-version-check -r requirements-dev.txt
	touch $@

venv: $(VENV)/.installed

# checkov pins its own dependencies, so it lives in a tool environment of its own.
$(CHECKOV)/.installed: policy/checkov/requirements.txt
	test -x $(CHECKOV)/bin/python || $(PYTHON) -m venv $(CHECKOV)
	$(CHECKOV)/bin/python -m pip install --quiet --quiet --disable-pip-version-check -r policy/checkov/requirements.txt
	touch $@

# Java, the Firestore emulator and (for tests) Chromium; installs only what is missing.
system-deps:
	scripts/install-system-deps.sh test

test: lint typecheck pytest

lint: venv
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: venv
	$(BIN)/mypy

pytest: venv $(CHECKOV)/.installed system-deps
	$(BIN)/pytest

demo: venv
	scripts/install-system-deps.sh demo
	$(BIN)/python -m devtools.demo $(if $(MODEL_URI),--model-uri $(MODEL_URI))

bench: venv
	$(BIN)/python -m bench

# A fresh random search; failures are stored in tests/inference/fuzz-examples for make test.
fuzz: venv
	HYPOTHESIS_PROFILE=explore $(BIN)/pytest -s --timeout=0 tests/inference/test_fuzz.py tests/tuning/test_tuning_fuzz.py

clean:
	rm -rf $(VENV) .tools .demo .pytest_cache .mypy_cache .ruff_cache
