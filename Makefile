# Thin wrappers: every target is one or two commands you could type yourself.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
CHECKOV := .tools/checkov

.PHONY: help venv lock test lint typecheck pytest demo bench fuzz docs system-deps clean

help:
	@echo "make demo   - run the chat app, the inference app and a local Firestore, offline"
	@echo "make test   - create .venv and run every check: lint, type check and tests"
	@echo "make bench  - run the benchmarks in bench/ and print their tables"
	@echo "make fuzz   - search for inputs that give 5xx, FUZZ_EXAMPLES per route (default 2000)"
	@echo "make lock   - recompile the hash-pinned requirements from the .in files (docs/development.md)"
	@echo "make docs   - regenerate docs/configuration.md from Pulumi.yaml"

# CPU build for tests; the inference image installs its own CUDA build. No lock holds torch.
TORCH := torch==2.13.0
PIP   := $(BIN)/python -m pip --quiet --quiet --disable-pip-version-check

# One environment for development and tests; `pulumi up` installs only requirements.txt.
# requirements-dev.txt is a complete lock, so --no-deps installs exactly it (older pips
# refuse a hash-pinned package that another requires with extras); pip check proves it whole.
$(VENV)/.installed: requirements-dev.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(PIP) install $(TORCH)
	$(PIP) install --no-deps --require-hashes -r requirements-dev.txt
	$(BIN)/python -m pip check
	touch $@

venv: $(VENV)/.installed

# Each lock is compiled from its .in file; existing pins are kept unless LOCK_ARGS says
# otherwise, e.g. make lock LOCK_ARGS="--upgrade-package gradio". `pulumi up` runs on any
# system; the images and the dev environment are Linux with Python 3.11. The fine-tuning lock
# shares the inference lock's versions; the dev lock comes last because it is constrained by
# all the others.
COMPILE := $(BIN)/uv pip compile --quiet --generate-hashes --no-strip-extras \
	--excludes requirements-excluded.txt --custom-compile-command "make lock" $(LOCK_ARGS)
LINUX   := --python-version 3.11 --python-platform x86_64-manylinux_2_28

lock: venv
	$(COMPILE) --universal --python-version 3.11 -o requirements.txt requirements.in
	$(COMPILE) $(LINUX) -o app/chat/requirements.txt app/chat/requirements.in
	$(COMPILE) $(LINUX) -o app/inference/requirements.txt app/inference/requirements.in
	$(COMPILE) $(LINUX) -c app/inference/requirements.txt -o app/finetune/requirements.txt app/finetune/requirements.in
	$(COMPILE) $(LINUX) -o requirements-dev.txt requirements-dev.in

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

# Strict, with the pydantic plugin, over every folder of Python (mypy-dev.toml). The policy
# pack is checked from its own folder, as `pulumi preview --policy-pack policy` runs it.
# `pulumi up` makes a third run of its own, over the program alone (pyproject.toml).
typecheck: venv
	$(BIN)/mypy --config-file mypy-dev.toml
	cd policy && ../$(BIN)/mypy --config-file ../mypy-dev.toml .

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

# docs/configuration.md is generated from Pulumi.yaml; tests/test_docs.py fails when it is stale.
docs: venv
	$(BIN)/python scripts/config_docs.py > docs/configuration.md

clean:
	rm -rf $(VENV) .tools .demo .pytest_cache .mypy_cache .ruff_cache
